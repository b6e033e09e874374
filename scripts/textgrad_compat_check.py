"""Run textgrad 0.1.8's own unit tests against localgrad, and check that textgrad's public surface resolves.

No copy of textgrad lives in this repository: the source distribution is downloaded from the package index
at check time (`pip download --no-deps --no-binary :all: textgrad==0.1.8`), or taken from --sdist.

1. Surface: every public module and name of textgrad must import from the same path under localgrad, and
   every function and class must take textgrad's parameters (by name, in order), except the names listed
   in DELIBERATELY_ABSENT with the reason.
2. Tests: textgrad's tests/ with `textgrad` renamed to `localgrad` run under pytest; the tests that need
   the network or a hosted API key are skipped by name (NEEDS), and the reasons are printed.

    python scripts/textgrad_compat_check.py [--sdist textgrad-0.1.8.tar.gz] [--keep DIR]
"""
from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "0.1.8"

# Tests that cannot run offline without keys, and why. Everything else must pass.
NEEDS = {
    "test_basics.py::test_multimodal": "downloads an image over the network (httpx.get of a Wikimedia URL)",
    "test_basics.py::test_multimodal_from_url": "downloads an image over the network; localgrad also refuses "
                                                "image URLs on purpose (it never downloads)",
    "test_api.py::test_api": "calls a hosted model (experimental:gpt-4o-mini): needs a real OPENAI_API_KEY and the network",
    "test_api.py::test_bugged": "calls a hosted model (experimental:gpt-4o-mini): needs a real OPENAI_API_KEY and the network",
}

# textgrad names localgrad does not provide, on purpose. Prompt texts are localgrad's own (written for
# small local models); the modules that hold them resolve, with localgrad's counterparts where there are any.
_PROMPT_TEXT = "prompt text: localgrad's prompts are its own (localgrad.prompts), not textgrad's"
DELIBERATELY_ABSENT = {
    **{f"textgrad.autograd.llm_backward_prompts.{n}": _PROMPT_TEXT for n in (
        "GLOSSARY_TEXT_BACKWARD", "CONVERSATION_TEMPLATE", "CONVERSATION_START_INSTRUCTION_CHAIN",
        "OBJECTIVE_INSTRUCTION_CHAIN", "CONVERSATION_START_INSTRUCTION_BASE", "OBJECTIVE_INSTRUCTION_BASE",
        "EVALUATE_VARIABLE_INSTRUCTION", "SEARCH_QUERY_BACKWARD_INSTRUCTION", "GRADIENT_OF_RESULTS_INSTRUCTION",
        "IN_CONTEXT_EXAMPLE_PROMPT_ADDITION")},
    "textgrad.autograd.multimodal_backward_prompts.MULTIMODAL_CONVERSATION_TEMPLATE": _PROMPT_TEXT,
    "textgrad.autograd.reduce_prompts.REDUCE_MEAN_SYSTEM_PROMPT": _PROMPT_TEXT,
    "textgrad.autograd.reduce_prompts.construct_reduce_prompt": _PROMPT_TEXT,
    **{f"textgrad.autograd.string_based_ops.{n}": _PROMPT_TEXT for n in (
        "CONVERSATION_TEMPLATE_STRING", "CONVERSATION_START_INSTRUCTION_STRING_FN_CHAIN",
        "CONVERSATION_START_INSTRUCTION_STRING_FN_BASE", "OBJECTIVE_INSTRUCTION_CHAIN", "OBJECTIVE_INSTRUCTION_BASE")},
    **{f"textgrad.optimizer.optimizer_prompts.{n}": _PROMPT_TEXT for n in (
        "GLOSSARY_TEXT", "TGD_PROMPT_PREFIX", "TGD_MULTIPART_PROMPT_INIT", "TGD_MULTIPART_PROMPT_PREFIX",
        "TGD_PROMPT_SUFFIX", "MOMENTUM_PROMPT_ADDITION", "CONSTRAINT_PROMPT_ADDITION",
        "IN_CONTEXT_EXAMPLE_PROMPT_ADDITION", "construct_tgd_prompt", "GRADIENT_TEMPLATE", "GRADIENT_MULTIPART_TEMPLATE")},
    "textgrad.prompts.GRADIENT_TEMPLATE": _PROMPT_TEXT,
    "textgrad.loss.DEFAULT_TEST_TIME": _PROMPT_TEXT,
    **{f"textgrad.{n}": "textgrad's log-file setup: localgrad writes no log files on import (tg.logger is a plain logger)"
       for n in ("LOG_DIR", "CustomJsonFormatter", "cf", "log_file", "sh")},
    "textgrad.engine.local_model_openai_api.logger": "a module-level logger, not API",
    **{f"textgrad.autograd.{n}.backward": "localgrad's operations return their feedback requests (BackwardStep.tasks) "
       "so that each level of the graph is one batch; there is no per-call backward method to call "
       "(a user Function's own backward still runs, through BackwardContext)" for n in (
        "algebra.Sum", "algebra.Aggregate", "function.Function", "llm_ops.LLMCall",
        "llm_ops.LLMCall_with_in_context_examples", "multimodal_ops.MultimodalLLMCall", "string_based_ops.StringBasedFunction")},
    **{f"textgrad.optimizer.optimizer.{n}": "a helper of textgrad's prompt building; localgrad builds the update "
       "prompt in optimizer.tgd.update_prompt and keeps momentum in TGD.state" for n in (
        "TextualGradientDescent.constraint_text", "TextualGradientDescent.get_gradient_memory_text",
        "TextualGradientDescent.update_gradient_memory", "TextualGradientDescentwithMomentum.constraint_text")},
    "textgrad.engine.guidance.GuidanceEngine.generate_structured": "guidance-library programs; localgrad constrains "
                                                                   "decoding with its own Constraint objects",
    "textgrad.tasks.gpqa": "GPQA is gated and was read from the Hugging Face hub; not provided (use a JSON/JSONL file)",
    "textgrad.tasks.leetcode": "LeetCodeHardEval was downloaded at run time; not provided",
    "textgrad.tasks.LeetCodeHardEval": "LeetCodeHardEval was downloaded at run time; not provided",
    "textgrad.tasks.multimodal": "MathVista and ScienceQA were read from the Hugging Face hub; not provided",
    "textgrad.tasks.multimodal.mathvista": "MathVista was read from the Hugging Face hub; not provided",
    "textgrad.tasks.multimodal.scienceqa": "ScienceQA was read from the Hugging Face hub; not provided",
}

# Signature differences on purpose: (textgrad qualified name) -> why.
SIGNATURE_DIFFERENCES = {
    "textgrad.tasks.load_task": "returns localgrad datasets read from local files (root=, data folder setting)",
}

_TYPING = {"List", "Set", "Dict", "Union", "Tuple", "Callable", "Optional", "Any", "defaultdict", "partial", "datetime"}


def download_sdist(dest: Path) -> Path:
    """textgrad's source distribution from the package index, into `dest`."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", f"textgrad=={VERSION}", "-d", str(dest)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"Could not download textgrad {VERSION}'s sdist (pip exit {result.returncode}):\n{result.stderr[-2000:]}\n"
                         "Pass --sdist PATH to use a local copy.")
    return next(dest.glob(f"textgrad-{VERSION}.tar.gz"))


def unpack(sdist: Path, dest: Path) -> Path:
    """Unpack the sdist's textgrad/ and tests/ folders; the folder holding them."""
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if re.match(rf"textgrad-{VERSION}/(textgrad|tests)/", m.name) and m.isfile()]
        tar.extractall(dest, members=members, filter="data")
    return dest / f"textgrad-{VERSION}"


def rename_imports(text: str) -> str:
    """textgrad code with the package renamed: `textgrad` becomes `localgrad` wherever it is a whole word."""
    return re.sub(r"\btextgrad\b", "localgrad", text)


def public_surface(package: Path) -> dict[str, dict[str, ast.AST]]:
    """{module: {public name: its definition (or import) node}} of a source package, read without importing it."""
    surface: dict[str, dict[str, ast.AST]] = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        names: dict[str, ast.AST] = {}
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names[node.name] = node
            elif isinstance(node, ast.Assign):
                names.update({t.id: node for t in node.targets if isinstance(t, ast.Name)})
            elif isinstance(node, ast.ImportFrom) and path.name == "__init__.py" and (node.level or module == "textgrad"):
                names.update({(a.asname or a.name): node for a in node.names})
        surface[module] = {n: d for n, d in names.items() if not n.startswith("_") and n not in _TYPING}
    return surface


def _params(node: ast.AST) -> list[str] | None:
    if isinstance(node, ast.ClassDef):
        init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
        node = init if init is not None else None
    if not isinstance(node, ast.FunctionDef):
        return None
    names = [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs]
    return [n for n in names if n not in ("self", "cls")]


def _members(qualified: str, node: ast.AST) -> list[tuple[str, ast.FunctionDef]]:
    """(qualified name, node) of a class's public methods (textgrad's `Variable.backward`, ...)."""
    if not isinstance(node, ast.ClassDef):
        return []
    return [(f"{qualified}.{n.name}", n) for n in node.body
            if isinstance(n, ast.FunctionDef) and not n.name.startswith("_") and f"{qualified}.{n.name}" not in DELIBERATELY_ABSENT]


def signature_problem(node: ast.AST, obj: object) -> str | None:
    """Why `obj` does not take textgrad's parameters of `node` (by name, in order), or None when it does."""
    wanted = _params(node)
    if not wanted or not callable(obj):
        return None
    try:
        target = obj.__init__ if inspect.isclass(obj) else obj  # type: ignore[misc]
        params = [p for p in inspect.signature(target).parameters.values() if p.name not in ("self", "cls")]
    except (TypeError, ValueError):
        return None
    named = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
    missing = [w for w in wanted if w not in named and not takes_any]
    order = [w for w in wanted if w in named]
    if missing:
        return f"lacks parameter(s) {missing}"
    if order != [n for n in named if n in order]:
        return f"takes {order} in another order: {named}"
    return None


def check_surface(package: Path) -> bool:
    """Print how much of textgrad's surface resolves under localgrad; False when something resolves unexpectedly badly."""
    surface = public_surface(package)
    missing, wrong, modules_ok, names_ok, methods_ok = [], [], 0, 0, 0
    modules = [m for m in surface if m not in DELIBERATELY_ABSENT]
    n_names = sum(1 for m in modules for n in surface[m] if f"{m}.{n}" not in DELIBERATELY_ABSENT)
    for module in modules:
        names = surface[module]
        try:
            mod = importlib.import_module(rename_imports(module))
        except ImportError as exc:
            missing.append(f"module {module} ({exc})")
            continue
        modules_ok += 1
        for name, node in names.items():
            qualified = f"{module}.{name}"
            if qualified in DELIBERATELY_ABSENT:
                continue
            if not hasattr(mod, name):
                missing.append(qualified)
            else:
                names_ok += 1
                obj = getattr(mod, name)
                for member, member_node in _members(qualified, node):
                    methods_ok += hasattr(obj, member_node.name)
                    if not hasattr(obj, member_node.name):
                        missing.append(member)
                    elif member not in SIGNATURE_DIFFERENCES and signature_problem(member_node, getattr(obj, member_node.name)):
                        wrong.append(f"{member}: {signature_problem(member_node, getattr(obj, member_node.name))}")
                problem = None if qualified in SIGNATURE_DIFFERENCES else signature_problem(node, obj)
                if problem:
                    wrong.append(f"{qualified}: {problem}")
    print(f"textgrad {VERSION} surface: {modules_ok}/{len(modules)} modules, {names_ok}/{n_names} public names and "
          f"{methods_ok} public methods resolve under localgrad with textgrad's parameters; "
          f"{len(DELIBERATELY_ABSENT)} names are deliberately absent (listed in this script with the reason).")
    for line in missing:
        print(f"  MISSING {line}")
    for line in wrong:
        print(f"  SIGNATURE {line}")
    return not missing and not wrong


CONFTEST = '''"""Written by localgrad's textgrad_compat_check.py: skip by name the tests that need the network or a key."""
import pytest

NEEDS = {needs!r}


def pytest_collection_modifyitems(config, items):
    for item in items:
        name = item.nodeid.split("/")[-1]
        if name in NEEDS:
            item.add_marker(pytest.mark.skip(reason=f"{{name}}: needs what this check does not have: {{NEEDS[name]}}"))
'''


def run_tests(source: Path, workdir: Path) -> int:
    """Run textgrad's tests, imports renamed, in `workdir`; pytest's exit code."""
    tests = workdir / "tests"
    tests.mkdir(parents=True)
    for path in sorted((source / "tests").glob("*.py")):
        (tests / path.name).write_text(rename_imports(path.read_text(encoding="utf-8")), encoding="utf-8")
    (tests / "conftest.py").write_text(CONFTEST.format(needs=NEEDS), encoding="utf-8")
    env_unset = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")
    env = {k: v for k, v in __import__("os").environ.items() if k not in env_unset}
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests"]
    print(f"running textgrad {VERSION}'s unit tests against localgrad: {' '.join(cmd[2:])} (in {workdir})", flush=True)
    return subprocess.run(cmd, cwd=workdir, env=env).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdist", type=Path, help="a local textgrad-0.1.8.tar.gz instead of downloading it")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="textgrad-compat-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        sdist = args.sdist or download_sdist(work)
        source = unpack(sdist, work / "src")
        surface_ok = check_surface(source / "textgrad")
        code = run_tests(source, work / "run")
    if not surface_ok:
        print("textgrad's surface check failed (see MISSING/SIGNATURE above).")
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
