"""Hypothesis strategies over localgrad's public API, each drawing one call as a `Case`.

A case is either valid (every argument is one the API documents as accepted; the call must
succeed and its result is checked) or bad (exactly one argument is wrong; the call must raise a
LocalgradError). `Case.outcome()` runs the call and says which of six things happened. The fuzz
tests assert the right outcome; `scripts/fuzz_report.py` counts outcomes over many draws.
"""
from __future__ import annotations

import atexit
import contextlib
import io
import json
import math
import shutil
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import ScriptedBackend  # noqa: E402

import localgrad as tg  # noqa: E402
from localgrad.backends.base import Backend  # noqa: E402
from localgrad.cache import CompletionCache  # noqa: E402
from localgrad.engine import Engine, register_backend, resolve_engine_name  # noqa: E402
from localgrad.errors import EngineConfigError, LocalgradError  # noqa: E402
from localgrad.images import load_image  # noqa: E402
from localgrad.request import (  # noqa: E402
    Completion,
    Constraint,
    ImageContent,
    Message,
    Request,
    SamplingSettings,
)
from localgrad.train.tasks import load_qa_file  # noqa: E402
from localgrad.train.trainer import TrainerConfig  # noqa: E402

OUTCOMES = ("localgrad error", "builtin error", "silent acceptance", "ok", "valid refused", "valid crashed", "valid wrong result")
OMIT = object()  # an argument left out (its default applies)


@dataclass
class Case:
    """One drawn call: `valid` says whether every argument is acceptable; `call` runs it and checks its result."""

    target: str
    valid: bool
    call: Callable[[], Any]
    check: Callable[[Any], None] | None
    shown: str

    def outcome(self) -> tuple[str, str]:
        """(outcome, detail): run the call once and classify what happened; check a valid call's result."""
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                result = self.call()
        except LocalgradError as exc:
            return ("valid refused" if self.valid else "localgrad error"), f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # noqa: BLE001 - classifying every exception is the point
            return ("valid crashed" if self.valid else "builtin error"), _describe(exc)
        if not self.valid:
            return "silent acceptance", ""
        try:
            if self.check is not None:
                self.check(result)
        except Exception as exc:  # noqa: BLE001
            return "valid wrong result", _describe(exc)
        return "ok", ""

    def __repr__(self) -> str:
        return f"<{self.target}, {'valid' if self.valid else 'bad'}: {self.shown}>"


def _describe(exc: BaseException) -> str:
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" (at {Path(where.filename).name}:{where.lineno})" if where else ""
    return "".join(traceback.format_exception_only(type(exc), exc)).strip() + at


TARGETS: dict[str, st.SearchStrategy[Case]] = {}


def target(name: str):
    """Register a composite strategy `fn(draw) -> (valid, call, check, shown)` as the cases of `name`."""
    def register(fn):
        @st.composite
        def cases(draw):
            valid, call, check, shown = fn(draw)
            return Case(name, valid, call, check, shown)

        TARGETS[name] = cases()
        return fn
    return register


# ---------------------------------------------------------------- value strategies

TEXT = st.text(max_size=30)
NONBLANK = st.text(min_size=1, max_size=30).filter(lambda s: s.strip() != "")
BLANK = st.sampled_from(["", " ", "\n\t "])
BRACED = st.sampled_from(['Reply as JSON: {"score": 1}', "use {x} and }{", "{", "}", "{0}", "{}", "{{ok}}", "a {b.c} d"])
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.binary(max_size=6),
    st.lists(st.integers(0, 3), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(0, 3), max_size=2),
    st.builds(object),
)


def junk_except(*types: type) -> st.SearchStrategy:
    """Junk whose type is none of `types` (a bool counts as an int only when bool is listed)."""
    def wrong(v: Any) -> bool:
        if isinstance(v, bool):
            return bool not in types
        return not isinstance(v, types)
    return JUNK.filter(wrong)


def arguments(draw, spec: dict[str, tuple[st.SearchStrategy, st.SearchStrategy | None]]) -> tuple[dict[str, Any], str | None]:
    """Draw every argument from its valid strategy, except at most one (in 2 of 3 draws) from its bad one."""
    names = [n for n, (_, bad) in spec.items() if bad is not None]
    bad_name = None if not names or draw(st.integers(0, 2)) == 0 else draw(st.sampled_from(names))
    values = {}
    for name, (good, bad) in spec.items():
        value = draw(bad if name == bad_name else good)
        if value is not OMIT:
            values[name] = value
    return values, bad_name


def shown(values: dict[str, Any], bad: str | None) -> str:
    text = ", ".join(f"{k}={v!r}"[:80] for k, v in values.items())
    return f"{text} [bad: {bad}]" if bad else text


# ---------------------------------------------------------------- fixtures shared by all cases

FILES = Path(tempfile.mkdtemp(prefix="localgrad-fuzz-"))
atexit.register(shutil.rmtree, FILES, True)


def _png(width: int, height: int, mode: str = "RGB") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, (width, height), 0).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png(4, 3)
(FILES / "image.png").write_bytes(PNG)
(FILES / "notes.txt").write_text("not an image")
(FILES / "empty.png").write_bytes(b"")
(FILES / "folder").mkdir()
(FILES / "data.jsonl").write_text('{"question": "q", "answer": "1"}\n')
(FILES / "a_file").write_text("x")
PNGS = st.builds(_png, st.integers(1, 12), st.integers(1, 12), st.sampled_from(["RGB", "L", "RGBA", "P", "1"]))
IMAGE_PATHS = st.sampled_from([str(FILES / "image.png"), FILES / "image.png"])
BAD_IMAGE_PATHS = st.sampled_from([
    str(FILES / "notes.txt"), str(FILES / "empty.png"), str(FILES / "folder"), str(FILES / "missing.png"),
    "http://example.com/a.png", "https://x/y.jpg",
])


class ImageScriptedBackend(ScriptedBackend):
    """The scripted model, accepting images."""

    name = "scripted-vlm"
    supports_images = True


def fuzz_reply(request: Request) -> str:
    """The scripted model's answer: the tagged value 'improved' for tagged requests, else 'reply'."""
    constraint = request.constraint
    if constraint is not None and getattr(constraint, "tags", None):
        start, end = constraint.tags
        return f"{start}improved{end}"
    return "reply"


def engine(images: bool = False) -> Engine:
    """A fresh Engine over the scripted model."""
    return Engine((ImageScriptedBackend if images else ScriptedBackend)(fuzz_reply))


def fuzz_backend(spec: str, **options: Any) -> Backend:
    from localgrad.backends.options import build_options

    @dataclass(frozen=True)
    class FuzzOptions:
        images: bool = False

        def __post_init__(self):
            if not isinstance(self.images, bool):
                raise EngineConfigError(f"images must be True or False, got {self.images!r}.")

    opts = build_options(FuzzOptions, options, "fuzz")
    return (ImageScriptedBackend if opts.images else ScriptedBackend)(fuzz_reply)


register_backend("fuzz", fuzz_backend)


class TextgradStyleEngine(tg.EngineLM):
    """A user engine written for textgrad: generate() returns whatever `answer` gives."""

    model_string = "fuzz-user-engine"

    def __init__(self, answer: Callable[[Any, Any], Any]):
        self.answer = answer

    def generate(self, prompt, system_prompt=None, **kwargs):
        return self.answer(prompt, system_prompt)


def text_var(requires_grad: bool = True) -> st.SearchStrategy[tg.Variable]:
    return st.builds(lambda v, r: tg.Variable(v, requires_grad=requires_grad, role_description=r), TEXT, NONBLANK)


def image_var() -> st.SearchStrategy[tg.Variable]:
    return st.builds(lambda data: tg.Variable(data, requires_grad=False, role_description="an image"), PNGS)


ENGINES = st.builds(engine)
BAD_ENGINES = st.one_of(
    junk_except(str, type(None)),
    st.sampled_from(["", "  ", "no-such-engine-name", "transformers:", "zz:unknown"]),
)
SYSTEM_PROMPTS = st.one_of(st.none(), TEXT, BRACED, text_var(requires_grad=False), text_var(requires_grad=True))
BAD_SYSTEM_PROMPTS = junk_except(str, type(None))
ROLES = st.one_of(NONBLANK, BRACED)
BAD_ROLES = st.one_of(BLANK, junk_except(str))


def request_of(e: Engine, index: int = -1) -> Request:
    return e.backend.batches[-1][index]


# ---------------------------------------------------------------- Variable

@target("Variable")
def _variable(draw):
    values, bad = arguments(draw, {
        "value": (st.one_of(TEXT, BRACED, st.integers(), st.floats(), st.just(OMIT)),
                  st.one_of(st.none(), st.lists(TEXT, max_size=2), st.builds(object), st.booleans(), st.binary(min_size=1, max_size=8))),
        "role_description": (ROLES, BAD_ROLES),
        "requires_grad": (st.booleans(), junk_except(bool)),
        "predecessors": (st.one_of(st.just(OMIT), st.none(), st.lists(text_var(False), max_size=3)),
                         st.one_of(junk_except(list, dict, bytes, type(None)), st.lists(JUNK, min_size=1, max_size=2),
                                   text_var(False), st.lists(text_var(True), min_size=1, max_size=2))),
    })
    if bad == "predecessors" and isinstance(values["predecessors"], list) and values.get("requires_grad") is True:
        values["requires_grad"] = False  # predecessors that require grad are bad only under requires_grad=False

    def check(v):
        expected = values.get("value", "")
        assert v.value == (expected if isinstance(expected, str) else str(expected))
        assert v.predecessors == list(dict.fromkeys(values.get("predecessors") or []))
    return bad is None, lambda: tg.Variable(**values), check, shown(values, bad)


@target("Variable image")
def _variable_image(draw):
    values, bad = arguments(draw, {
        "source": (st.one_of(PNGS.map(lambda b: ("value", b)), IMAGE_PATHS.map(lambda p: ("image_path", p))),
                   st.one_of(st.binary(max_size=16).filter(bool).map(lambda b: ("value", b)), BAD_IMAGE_PATHS.map(lambda p: ("image_path", p)),
                             junk_except(str, bytes, type(None)).map(lambda j: ("image_path", j)))),
        "requires_grad": (st.just(False), st.just(True)),
    })
    kind, data = values["source"]

    def check(v):
        assert v.is_image and isinstance(v.value, bytes) and v.mime_type.startswith("image/")
    return bad is None, lambda: tg.Variable(**{kind: data}, requires_grad=values["requires_grad"], role_description="a picture"), check, shown(values, bad)


@target("Variable methods")
def _variable_methods(draw):
    method = draw(st.sampled_from(["set_value", "set_role_description", "get_short_value", "add_gradient", "__add__", "backward"]))
    good, bad_s = {
        "set_value": (TEXT, junk_except(str)),
        "set_role_description": (ROLES, BAD_ROLES),
        "get_short_value": (st.integers(0, 20), junk_except(int)),
        "add_gradient": (text_var(False), junk_except()),
        "__add__": (text_var(True), junk_except()),
        "backward": (ENGINES, BAD_ENGINES),
    }[method]
    values, bad = arguments(draw, {"argument": (good, bad_s)})
    x = draw(text_var(True))
    argument = values["argument"]
    loss = tg.TextLoss("judge", engine=engine())(x) if method == "backward" else None

    def call():
        if method == "backward":
            return loss.backward(argument)
        return getattr(x, method)(argument)

    def check(result):
        if method == "backward":
            assert len(x.gradients) == 1
        if method == "set_value":
            assert x.value == argument
        if method == "add_gradient":
            assert x.gradients == [argument]
        if method == "__add__":
            assert result.predecessors == list(dict.fromkeys([x, argument]))
        if method == "get_short_value":
            assert isinstance(result, str)
    return bad is None, call, check, f"{method}: " + shown(values, bad)


# ---------------------------------------------------------------- LLM calls

INPUTS = st.one_of(text_var(True), st.lists(text_var(True), max_size=3))
BAD_INPUTS = st.one_of(junk_except(list, dict), TEXT.filter(bool), st.lists(JUNK, min_size=1, max_size=2))


def _replies(n_inputs: Any):
    def check(out):
        outs = out if isinstance(n_inputs, list) else [out]
        assert len(outs) == (len(n_inputs) if isinstance(n_inputs, list) else 1)
        assert all(isinstance(o, tg.Variable) and o.value == "reply" for o in outs)
    return check


@target("BlackboxLLM")
def _blackbox(draw):
    values, bad = arguments(draw, {
        "engine": (ENGINES, BAD_ENGINES),
        "system_prompt": (SYSTEM_PROMPTS, BAD_SYSTEM_PROMPTS),
        "x": (INPUTS, BAD_INPUTS),
    })

    def call():
        return tg.BlackboxLLM(values["engine"], values["system_prompt"])(values["x"])
    return bad is None, call, _replies(values["x"]), shown(values, bad)


@target("LLMCall")
def _llm_call(draw):
    values, bad = arguments(draw, {
        "engine": (ENGINES, BAD_ENGINES),
        "system_prompt": (SYSTEM_PROMPTS, BAD_SYSTEM_PROMPTS),
        "input_variable": (INPUTS, BAD_INPUTS),
        "response_role_description": (st.one_of(st.just(OMIT), ROLES), BAD_ROLES),
    })

    def call():
        kwargs = {k: values[k] for k in ("response_role_description",) if k in values}
        return tg.LLMCall(values["engine"], values["system_prompt"])(values["input_variable"], **kwargs)
    return bad is None, call, _replies(values["input_variable"]), shown(values, bad)


FIELD_NAMES = st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True), min_size=1, max_size=3, unique=True)


@st.composite
def format_strings(draw, fields: list[str]) -> str:
    literal = st.text(max_size=8).map(lambda s: s.replace("{", "{{").replace("}", "}}"))
    used = draw(st.lists(st.sampled_from(fields), min_size=1, max_size=4))
    return "".join(draw(literal) + "{" + f + "}" for f in used) + draw(literal)


@target("FormattedLLMCall")
def _formatted(draw):
    fields = draw(FIELD_NAMES)
    values, bad = arguments(draw, {
        "engine": (ENGINES, BAD_ENGINES),
        "format_string": (format_strings(fields),
                          st.one_of(junk_except(str), st.sampled_from(["{", "}", "{}", "{0}", "{unknown_field}", "x {a.b}", "}{"]),
                                    st.just("{" + fields[0] + "!r}"), st.just("{" + fields[0] + ":>3}"), st.just("{" + fields[0] + "[0]}"))),
        "fields": (st.one_of(st.just(fields), st.just(tuple(fields)), st.just({f: None for f in fields})),
                   st.one_of(junk_except(list, tuple, dict, str), st.just(fields + fields[:1]), st.just(fields + [3]),
                             st.just("".join(fields)))),
        "system_prompt": (SYSTEM_PROMPTS, BAD_SYSTEM_PROMPTS),
    })
    mapping = {f: draw(text_var(draw(st.booleans()))) for f in fields}
    batch = draw(st.booleans())
    if bad is None or draw(st.booleans()):
        inputs: Any = [mapping, dict(mapping)] if batch else mapping
    else:
        inputs_bad = draw(st.sampled_from(["missing", "extra", "junk value", "junk"]))
        inputs = {
            "missing": {k: v for k, v in list(mapping.items())[1:]},
            "extra": {**mapping, "zz_extra": draw(text_var())},
            "junk value": {**mapping, fields[0]: draw(JUNK)},
            "junk": draw(junk_except(dict, list)),
        }[inputs_bad]
        bad = bad or f"inputs ({inputs_bad})"
    e = values["engine"]

    def call():
        return tg.FormattedLLMCall(e, values["format_string"], values["fields"], values["system_prompt"])(inputs)

    def check(out):
        assert len(out) == 2 if batch else out.value == "reply"
        sent = request_of(e).messages[-1].text
        assert sent == values["format_string"].format(**{f: v.value for f, v in mapping.items()})
    return bad is None, call, check, shown({**values, "inputs": inputs}, bad)


@target("StringBasedFunction")
def _string_function(draw):
    values, bad = arguments(draw, {
        "fn": (st.sampled_from([lambda **kw: "1", lambda **kw: 0, lambda a, b: f"{a.value}|{b.value}"]),
               st.one_of(junk_except(), st.just(lambda **kw: None), st.just(lambda **kw: [1]), st.just(lambda a: "x"))),
        "function_purpose": (ROLES, BAD_ROLES),
        "inputs": (st.one_of(st.fixed_dictionaries({"a": text_var(), "b": text_var(False)}),
                             st.lists(st.fixed_dictionaries({"a": text_var(), "b": text_var()}), max_size=2)),
                   st.one_of(junk_except(dict, list), st.fixed_dictionaries({"a": text_var(), "b": JUNK}),
                             st.fixed_dictionaries({"a": text_var()}), st.lists(JUNK, min_size=1, max_size=2))),
        "response_role_description": (st.one_of(st.just(OMIT), st.none(), ROLES), st.one_of(BLANK, junk_except(str, type(None)))),
    })
    if bad == "fn" and callable(values["fn"]) and getattr(values["fn"], "__code__", None) and values["fn"].__code__.co_argcount == 1:
        values["inputs"] = {"a": draw(text_var()), "b": draw(text_var())}  # the function takes one argument, two are given
    if bad == "inputs" and isinstance(values["inputs"], dict) and set(values["inputs"]) == {"a"}:
        values["fn"] = lambda a, b: "x"  # the function needs b, which is missing

    def call():
        kwargs = {k: values[k] for k in ("response_role_description",) if k in values}
        return tg.StringBasedFunction(values["fn"], values["function_purpose"])(values["inputs"], **kwargs)

    def check(out):
        outs = out if isinstance(values["inputs"], list) else [out]
        assert all(isinstance(o, tg.Variable) and o.value for o in outs)
    return bad is None, call, check, shown(values, bad)


@target("sum and aggregate")
def _sum(draw):
    fn = draw(st.sampled_from([tg.sum, tg.aggregate]))
    values, bad = arguments(draw, {
        "variables": (st.lists(text_var(draw(st.booleans())), min_size=1, max_size=4),
                      st.one_of(junk_except(list, dict, str), st.just([]), text_var(), st.lists(JUNK, min_size=1, max_size=2),
                                st.lists(image_var(), min_size=1, max_size=1))),
    })

    def check(total):
        separator = "\n" if fn is tg.sum else "\n\n"
        assert total.value == separator.join(v.value for v in values["variables"])
    return bad is None, lambda: fn(values["variables"]), check, f"{fn.__name__}: " + shown(values, bad)


@target("backward")
def _backward(draw):
    e = engine()
    x = draw(text_var(True))
    losses = [tg.TextLoss("judge", engine=e)(x) for _ in range(draw(st.integers(1, 2)))]
    values, bad = arguments(draw, {
        "roots": (st.sampled_from([losses[0], losses]),
                  st.one_of(junk_except(list, dict, str), st.just([]), st.lists(JUNK, min_size=1, max_size=2),
                            text_var(False))),
        "engine": (st.just(e), BAD_ENGINES),
    })

    def check(_):
        assert len(x.gradients) == (len(values["roots"]) if isinstance(values["roots"], list) else 1)
    return bad is None, lambda: tg.backward(values["roots"], engine=values["engine"]), check, shown(values, bad)


# ---------------------------------------------------------------- losses

INSTRUCTIONS = st.one_of(NONBLANK, BRACED, text_var(False).filter(lambda v: v.value.strip()))
BAD_INSTRUCTIONS = st.one_of(BLANK, junk_except(str), st.builds(lambda: tg.Variable("", requires_grad=False, role_description="r")))


def _text(value: Any) -> str:
    return value.value if isinstance(value, tg.Variable) else value


@target("TextLoss")
def _text_loss(draw):
    values, bad = arguments(draw, {
        "eval_system_prompt": (INSTRUCTIONS, BAD_INSTRUCTIONS),
        "engine": (ENGINES, BAD_ENGINES),
        "instance": (INPUTS, BAD_INPUTS),
    })

    def check(loss):
        _replies(values["instance"])(loss)
        if loss != []:
            assert request_of(values["engine"]).messages[0].text == _text(values["eval_system_prompt"])
    return bad is None, lambda: tg.TextLoss(values["eval_system_prompt"], values["engine"])(values["instance"]), check, shown(values, bad)


@target("MultiFieldEvaluation")
def _multi_field(draw):
    n = draw(st.integers(1, 3))
    values, bad = arguments(draw, {
        "evaluation_instruction": (INSTRUCTIONS, BAD_INSTRUCTIONS),
        "role_descriptions": (st.lists(st.one_of(ROLES, st.just("instruction")), min_size=n, max_size=n, unique=True),
                              st.one_of(NONBLANK.filter(lambda s: len(s) == n and len(set(s)) == n), st.just([]), junk_except(list, str, dict),
                                        st.lists(st.one_of(BLANK, junk_except(str)), min_size=n, max_size=n),
                                        st.just(["same"] * max(n, 2)))),
        "engine": (ENGINES, BAD_ENGINES),
        "system_prompt": (SYSTEM_PROMPTS, BAD_SYSTEM_PROMPTS),
    })
    fields = draw(st.lists(text_var(), min_size=n, max_size=n))
    batch = draw(st.booleans())
    if bad is None or draw(st.booleans()):
        inputs: Any = [fields, fields] if batch else fields
    else:
        inputs = draw(st.one_of(st.just(fields + fields[:1]), st.just(fields[1:]), junk_except(list, dict, str, bytes),
                                st.lists(JUNK, min_size=n, max_size=n)))
        bad = bad or "inputs"

    def call():
        return tg.MultiFieldEvaluation(values["evaluation_instruction"], values["role_descriptions"],
                                       values["engine"], values["system_prompt"])(inputs)

    def check(out):
        assert len(out) == 2 if batch else out.value == "reply"
        sent = request_of(values["engine"]).messages[-1].text
        assert _text(values["evaluation_instruction"]) in sent
        assert all(role in sent for role in values["role_descriptions"]) and all(f.value in sent for f in fields)
    return bad is None, call, check, shown({**values, "inputs": inputs}, bad)


@target("MultiChoiceTestTime")
def _multi_choice(draw):
    values, bad = arguments(draw, {
        "evaluation_instruction": (st.one_of(NONBLANK, BRACED), st.one_of(BLANK, junk_except(str))),
        "engine": (ENGINES, BAD_ENGINES),
        "system_prompt": (SYSTEM_PROMPTS, BAD_SYSTEM_PROMPTS),
        "question": (st.one_of(NONBLANK, BRACED, text_var(False)), st.one_of(st.none(), st.lists(TEXT, max_size=2), st.builds(object))),
        "prediction": (text_var(True), st.one_of(st.just("A"), junk_except())),
    })

    def call():
        loss = tg.MultiChoiceTestTime(values["evaluation_instruction"], values["engine"], values["system_prompt"])
        return loss.forward(values["question"], values["prediction"])

    def check(out):
        assert out.value == "reply"
        sent = request_of(values["engine"]).messages[-1].text
        assert values["evaluation_instruction"] in sent and _text(values["question"]) in sent
    return bad is None, call, check, shown(values, bad)


@target("ImageQALoss")
def _image_qa(draw):
    values, bad = arguments(draw, {
        "evaluation_instruction": (INSTRUCTIONS, BAD_INSTRUCTIONS),
        "engine": (st.builds(engine, st.just(True)), st.one_of(BAD_ENGINES, ENGINES)),
        "system_prompt": (SYSTEM_PROMPTS, BAD_SYSTEM_PROMPTS),
        "image": (image_var(), st.one_of(text_var(False), junk_except(), st.just(PNG))),
        "question": (st.one_of(NONBLANK, text_var(False)), junk_except(str)),
        "response": (text_var(True), st.one_of(st.just("the answer"), junk_except())),
    })

    def call():
        loss = tg.ImageQALoss(values["evaluation_instruction"], values["engine"], values["system_prompt"])
        return loss(values["image"], values["question"], values["response"])

    def check(out):
        assert out.value == "reply" and request_of(values["engine"]).has_images
    return bad is None, call, check, shown(values, bad)


@target("multimodal calls")
def _multimodal(draw):
    ordered = draw(st.booleans())
    fields = draw(st.lists(NONBLANK, min_size=1, max_size=3, unique=True)) if ordered else []
    if ordered:
        items = {f: draw(st.one_of(image_var(), text_var(False))) for f in fields}
        good_inputs = st.one_of(st.just(items), st.just([items, items]))
        bad_inputs = st.one_of(junk_except(dict, list), st.just({**items, "zz-extra": items[fields[0]]}),
                               st.just({f: "text" for f in fields}))
    else:
        good_inputs = st.one_of(st.lists(st.one_of(image_var(), text_var(True)), min_size=1, max_size=3),
                                st.lists(st.lists(st.one_of(image_var(), text_var(True)), min_size=1, max_size=2), min_size=1, max_size=2))
        bad_inputs = st.one_of(junk_except(list), st.just([]), st.lists(JUNK, min_size=1, max_size=2), text_var())
    spec = {
        "engine": (st.builds(engine, st.just(True)), st.one_of(BAD_ENGINES, ENGINES)),
        "system_prompt": (SYSTEM_PROMPTS, BAD_SYSTEM_PROMPTS),
        "inputs": (good_inputs, bad_inputs),
    }
    if ordered:
        spec["fields"] = (st.just(fields), st.one_of(st.just([]), junk_except(list, str, dict), st.just(fields + fields[:1])))
    values, bad = arguments(draw, spec)

    def call():
        if ordered:
            fn = tg.OrderedFieldsMultimodalLLMCall(values["engine"], values["fields"], values["system_prompt"])
        else:
            fn = tg.MultimodalLLMCall(values["engine"], values["system_prompt"])
        return fn(values["inputs"])

    def check(out):
        assert all(o.value == "reply" for o in (out if isinstance(out, list) else [out]))
    return bad is None, call, check, ("ordered fields: " if ordered else "") + shown(values, bad)


# ---------------------------------------------------------------- the optimizer

# Rules and examples on one line, without markup, so the prompt can be checked for exactly one line per rule.
RULES = st.text(st.characters(categories=["L", "N", "Zs"], include_characters="{}\"':.,!?"), min_size=1, max_size=30).filter(
    lambda s: s.strip()
)
TAG_PAIRS = st.sampled_from([("<IMPROVED_VARIABLE>", "</IMPROVED_VARIABLE>"), ["<A>", "</A>"], ("<NEW_2>", "</NEW_2>")])
BAD_TAGS = st.one_of(junk_except(list, tuple, str, dict, type(None)), st.just(("<A>",)), st.just(("<A>", "</A>", "<B>")), st.just(("", "</A>")),
                     st.just(("<A>", "</A</")), st.just((1, 2)), st.just("<A></A>"), st.just(("[NEW]", "[/NEW]")),
                     st.just(("<new>", "</new>")), st.just(("</A>", "<A>")))


@target("TGD")
def _tgd(draw):
    e = engine()
    params = draw(st.lists(text_var(True), min_size=1, max_size=3, unique_by=id))
    losses = [tg.TextLoss("judge", engine=e)(p) for p in params]
    frozen = draw(text_var(False))
    values, bad = arguments(draw, {
        "parameters": (st.sampled_from([params, tuple(params), params + [frozen]] + ([params[0]] if len(params) == 1 else [])),
                       st.one_of(st.just([]), st.none(), junk_except(list, dict, str), st.just(params + params[:1]),
                                 st.lists(JUNK, min_size=1, max_size=2), st.lists(image_var(), min_size=1, max_size=1))),
        "engine": (st.just(e), BAD_ENGINES),
        "constraints": (st.one_of(st.just(OMIT), st.none(), st.lists(st.one_of(RULES, BRACED), max_size=3), RULES),
                        st.one_of(junk_except(list, tuple, str, type(None)), st.lists(junk_except(str), min_size=1, max_size=2))),
        "new_variable_tags": (st.one_of(st.just(OMIT), TAG_PAIRS), BAD_TAGS),
        "optimizer_system_prompt": (st.one_of(st.just(OMIT), NONBLANK, BRACED, st.just("Write between {start_tag} and {end_tag}.")),
                                    junk_except(str)),
        "in_context_examples": (st.one_of(st.just(OMIT), st.none(), st.lists(st.one_of(RULES, BRACED), max_size=2), RULES),
                                st.one_of(junk_except(list, tuple, str, type(None)), st.lists(junk_except(str), min_size=1, max_size=2))),
        "gradient_memory": (st.one_of(st.just(OMIT), st.integers(0, 3)), st.one_of(st.integers(-3, -1), junk_except(int))),
        "max_tokens": (st.one_of(st.just(OMIT), st.none(), st.integers(1, 4096)), st.one_of(st.integers(-3, 0), junk_except(int, type(None)))),
        "include_context": (st.one_of(st.just(OMIT), st.booleans()), junk_except(bool)),
        "verbose": (st.one_of(st.just(OMIT), st.just(False), st.just(0)), st.one_of(st.just("yes"), st.none(), st.just(-1), st.floats())),
    })

    def call():
        optimizer = tg.TGD(**values)
        tg.backward(losses, engine=e)
        optimizer.step()
        return optimizer

    def check(optimizer):
        assert all(p.value == "improved" for p in params)
        constraints = values.get("constraints") or []
        rules = [constraints] if isinstance(constraints, str) else list(constraints)
        sent = request_of(e).messages[-1].text
        assert all(f"- {rule}" in sent for rule in rules)
        assert sum(line.startswith("- ") for line in sent.splitlines()) == len(rules)
        assert optimizer.state_dict()["steps"] == 1
    return bad is None, call, check, shown(values, bad)


@target("TGD.load_state_dict")
def _tgd_state(draw):
    params = draw(st.lists(text_var(True), min_size=1, max_size=2, unique_by=id))
    optimizer = tg.TGD(params, engine=engine(), gradient_memory=2)
    good_state = optimizer.state_dict()
    entry = st.fixed_dictionaries({"value": TEXT, "feedback": TEXT})
    values, bad = arguments(draw, {
        "state": (st.one_of(st.just(good_state), st.builds(lambda s, m: {"steps": s, "memory": m}, st.integers(0, 5),
                                                           st.lists(st.lists(entry, max_size=2), min_size=len(params), max_size=len(params)))),
                  st.one_of(junk_except(dict), st.just({"steps": 0}), st.just({"steps": -1, "memory": good_state["memory"]}),
                            st.just({"steps": "1", "memory": good_state["memory"]}),
                            st.just({"steps": 0, "memory": good_state["memory"] + [[]]}),
                            st.just({"steps": 0, "memory": 5}),
                            st.builds(lambda j: {"steps": 0, "memory": [[j]] * len(params)}, JUNK),
                            st.just({"steps": 0, "memory": [[{"value": 1}]] * len(params)}))),
    })
    for p in params:
        p.add_gradient(tg.Variable("fix it", requires_grad=False, role_description="feedback"))

    def call():
        optimizer.load_state_dict(values["state"])
        optimizer.step()

    def check(_):
        assert optimizer.state_dict()["steps"] == values["state"]["steps"] + 1
    return bad is None, call, check, shown(values, bad)


# ---------------------------------------------------------------- engines

TEMPERATURES = st.floats(0, 5)
BAD_TEMPERATURES = st.one_of(st.just("0.5"), st.floats(5.0001, 1e9), st.floats(-1e9, -0.0001), st.just(math.nan), st.booleans(), junk_except(int, float))
SEEDS = st.one_of(st.none(), st.integers(0, 2**63 - 1))
BAD_SEEDS = st.one_of(st.integers(max_value=-1), st.integers(min_value=2**64), st.just("7"), st.booleans(), st.floats(), st.just([1]))
MAX_TOKENS = st.integers(1, 100000)
BAD_MAX_TOKENS = st.one_of(st.integers(max_value=0), st.just("64"), st.booleans(), st.floats(), st.none())
TOP_PS = st.floats(0, 1, exclude_min=True)
BAD_TOP_PS = st.one_of(st.floats(max_value=0), st.floats(min_value=1.0001), st.just(math.nan), st.just("1"), st.booleans(), st.none())
CACHE_DIR = FILES / "cache"


@target("get_engine")
def _get_engine(draw):
    values, bad = arguments(draw, {
        "name": (st.one_of(st.from_regex(r"fuzz:[a-z0-9/._-]{1,12}", fullmatch=True), ENGINES,
                           st.builds(TextgradStyleEngine, st.just(lambda p, s: "answer"))),
                 st.one_of(junk_except(str), BLANK, st.sampled_from(["transformers:", "transformers:/no/such/model", "llamacpp:/no/such.gguf",
                                                                     "zz-unknown", "fuzz:", "vllm-", "transformers-vlm:/no/dir"]))),
        "temperature": (st.one_of(st.just(OMIT), TEMPERATURES), BAD_TEMPERATURES),
        "max_tokens": (st.one_of(st.just(OMIT), MAX_TOKENS), BAD_MAX_TOKENS),
        "top_p": (st.one_of(st.just(OMIT), TOP_PS), BAD_TOP_PS),
        "seed": (st.one_of(st.just(OMIT), SEEDS), BAD_SEEDS),
        "max_batch_size": (st.one_of(st.just(OMIT), st.none(), st.integers(1, 64)), st.one_of(st.integers(-2, 0), st.just("4"), st.booleans(), st.floats())),
        "cache": (st.one_of(st.just(OMIT), st.none(), st.just(False), st.just(str(CACHE_DIR)), st.just(CACHE_DIR)),
                  st.one_of(junk_except(str, type(None), bool), st.just(str(FILES / "a_file")))),
        "images": (st.one_of(st.just(OMIT), st.booleans()), st.one_of(st.just("yes"), st.none())),
        "no_such_option": (st.just(OMIT), st.integers()),
    })
    name = values.pop("name")
    if not (isinstance(name, str) and name.startswith("fuzz:")):
        values.pop("images", None)
        if bad == "images":
            bad = None
    if isinstance(name, (Engine, tg.EngineLM)) and bad not in (None, "name"):
        name = "fuzz:engine"  # options are not taken with an engine object
    if isinstance(name, (Engine, tg.EngineLM)):
        values.clear()

    def check(e):
        assert isinstance(e, Engine)
        assert e.generate("hi") in ("reply", "answer")
    return bad is None, lambda: tg.get_engine(name, **values), check, shown({"name": name, **values}, bad)


@target("engine names")
def _engine_names(draw):
    values, bad = arguments(draw, {
        "name": (st.one_of(st.sampled_from(["gpt-4o", "claude-3-5-sonnet-20240620", "vllm-org/m", "ollama-llama3.2", "experimental:gpt-4o",
                                            "openai-compatible:http://127.0.0.1:1/v1#m", "transformers:/m#f.gguf", "llamacpp:/m.gguf"]),
                           st.from_regex(r"(vllm|transformers|llamacpp|openai):[^\s]{1,10}", fullmatch=True)),
                 st.one_of(junk_except(str), BLANK, st.from_regex(r"zz[a-z0-9 :#/-]{0,10}", fullmatch=True))),
    })

    def check(resolved):
        prefix, spec = resolved
        assert prefix and spec
    return bad is None, lambda: resolve_engine_name(values["name"]), check, shown(values, bad)


@target("set_backward_engine")
def _set_backward(draw):
    values, bad = arguments(draw, {
        "engine": (st.one_of(ENGINES, st.just("fuzz:backward")), BAD_ENGINES),
        "override": (st.just(True), st.one_of(st.just(False), st.just("yes"), st.none())),
    })

    def call():
        from localgrad.engine.backward import SingletonBackwardEngine

        holder = SingletonBackwardEngine()
        saved = holder.engine
        holder.engine = engine()  # one is set already: override decides
        try:
            tg.set_backward_engine(values["engine"], override=values["override"])
            return tg.get_backward_engine()
        finally:
            holder.engine = saved

    def check(chosen):
        assert isinstance(chosen, Engine)
    return bad is None, call, check, shown(values, bad)


class _Stub(Backend):
    name = "stub"

    def generate_batch(self, requests):
        return [Completion("reply") for _ in requests]


@target("Engine")
def _engine(draw):
    values, bad = arguments(draw, {
        "backend": (st.builds(_Stub), st.one_of(junk_except(), st.just(_Stub), st.builds(TextgradStyleEngine, st.just(lambda p, s: "x")))),
        "sampling": (st.one_of(st.just(OMIT), st.none(), st.builds(SamplingSettings)), st.one_of(junk_except(type(None)), st.just({"temperature": 0.0}))),
        "cache": (st.one_of(st.just(OMIT), st.none(), st.just(False), st.just(str(CACHE_DIR)), st.just(CACHE_DIR), st.builds(CompletionCache, st.just(CACHE_DIR))),
                  st.one_of(junk_except(str, type(None), bool), st.just(str(FILES / "a_file")), st.just(str(FILES / "a_file" / "sub")))),
        "max_batch_size": (st.one_of(st.just(OMIT), st.none(), st.integers(1, 64)), st.one_of(st.integers(-2, 0), st.just("4"), st.booleans(), st.floats())),
    })

    def call():
        return Engine(**values).generate("hello")

    def check(text):
        assert text == "reply"
    return bad is None, call, check, shown(values, bad)


@target("Engine.generate")
def _engine_generate(draw):
    e = engine(images=True)
    values, bad = arguments(draw, {
        "content": (st.one_of(TEXT, BRACED, st.lists(st.one_of(TEXT, PNGS), min_size=1, max_size=3)),
                    st.one_of(st.none(), junk_except(str, list, dict, bytes), st.lists(junk_except(str, bytes), min_size=1, max_size=2),
                              st.lists(st.binary(max_size=8), min_size=1, max_size=1), st.just([]))),
        "system_prompt": (st.one_of(st.just(OMIT), st.none(), NONBLANK), junk_except(str, type(None))),
        "temperature": (st.one_of(st.just(OMIT), TEMPERATURES), BAD_TEMPERATURES),
        "max_tokens": (st.one_of(st.just(OMIT), MAX_TOKENS), BAD_MAX_TOKENS),
        "top_p": (st.one_of(st.just(OMIT), TOP_PS), BAD_TOP_PS),
        "seed": (st.one_of(st.just(OMIT), SEEDS), BAD_SEEDS),
        "unknown": (st.just(OMIT), st.integers()),
    })
    if "unknown" in values:
        values["frequency_penalty"] = values.pop("unknown")
    content = values.pop("content")

    def check(text):
        assert text == "reply"
        if isinstance(content, list):
            assert len(request_of(e).messages[-1].images) == sum(isinstance(p, bytes) for p in content)
    return bad is None, lambda: e.generate(content, **values), check, shown({"content": content, **values}, bad)


@target("Engine.generate_batch")
def _engine_batch(draw):
    e = engine()
    good = st.builds(Request.chat, NONBLANK)
    values, bad = arguments(draw, {
        "requests": (st.one_of(st.lists(good, max_size=3), st.lists(good, max_size=3).map(tuple)),
                     st.one_of(junk_except(list, tuple, dict, str, bytes), good, st.lists(junk_except(), min_size=1, max_size=2),
                               st.just(["hello"]))),
    })

    def check(out):
        assert [c.text for c in out] == ["reply"] * len(values["requests"])
    return bad is None, lambda: e.generate_batch(values["requests"]), check, shown(values, bad)


class _UserBackend(Backend):
    """A backend a user wrote, answering with whatever `answer(requests)` returns."""

    name = "user-backend"

    def __init__(self, answer):
        self.answer = answer

    def generate_batch(self, requests):
        return self.answer(requests)


def _raise(exc: Exception):
    raise exc


@target("user backends")
def _user_backends(draw):
    kind = draw(st.sampled_from(["Backend", "EngineLM"]))
    if kind == "Backend":
        values, bad = arguments(draw, {
            "answer": (st.sampled_from([lambda rs: [Completion("ok") for _ in rs], lambda rs: tuple(Completion("ok", 3, 2) for _ in rs)]),
                       st.sampled_from([lambda rs: None, lambda rs: "ok", lambda rs: ["ok" for _ in rs], lambda rs: [None for _ in rs],
                                        lambda rs: [Completion("ok") for _ in rs][1:], lambda rs: [Completion("ok") for _ in rs] * 2,
                                        lambda rs: 5, lambda rs: [Completion(None) for _ in rs], lambda rs: [Completion("ok", "3") for _ in rs],
                                        lambda rs: [Completion(b"ok") for _ in rs], lambda rs: _raise(ValueError("boom")),
                                        lambda rs: _raise(KeyError("k")), lambda rs: iter([Completion("ok") for _ in rs]),
                                        lambda rs: {i: Completion("ok") for i in range(len(rs))}])),
        })
        backend: Any = _UserBackend(values["answer"])
    else:
        values, bad = arguments(draw, {
            "answer": (st.sampled_from([lambda p, s: "ok", lambda p, s: ""]),
                       st.sampled_from([lambda p, s: None, lambda p, s: 5, lambda p, s: b"ok", lambda p, s: ["ok"],
                                        lambda p, s: _raise(RuntimeError("boom"))])),
        })
        backend = TextgradStyleEngine(values["answer"])
    n = draw(st.integers(1, 3))
    x = tg.Variable("text", role_description="answer")

    def call():
        e = Engine(backend) if kind == "Backend" else tg.get_engine(backend)
        out = e.generate_batch([Request.chat(f"q{i}") for i in range(n)])
        tg.TextLoss("judge", engine=e)(x).backward(e)
        return out

    def check(out):
        assert len(out) == n and all(isinstance(c, Completion) and isinstance(c.text, str) for c in out)
        assert len(x.gradients) == 1 and isinstance(x.gradients[0].value, str)
    return bad is None, call, check, f"{kind}: " + shown(values, bad)


# ---------------------------------------------------------------- shared request types

@target("SamplingSettings")
def _sampling(draw):
    values, bad = arguments(draw, {
        "temperature": (st.one_of(st.just(OMIT), TEMPERATURES, st.integers(0, 5)), BAD_TEMPERATURES),
        "max_tokens": (st.one_of(st.just(OMIT), MAX_TOKENS), BAD_MAX_TOKENS),
        "top_p": (st.one_of(st.just(OMIT), TOP_PS, st.just(1)), BAD_TOP_PS),
        "seed": (st.one_of(st.just(OMIT), SEEDS), BAD_SEEDS),
    })

    def call():
        settings = SamplingSettings(**values)
        Engine(_Stub(), sampling=settings).generate("x")
        return settings

    def check(settings):
        assert settings.temperature == values.get("temperature", 0.0) and settings.top_p == values.get("top_p", 1.0)
    return bad is None, call, check, shown(values, bad)


REGEXES = st.sampled_from(["a+", "[0-9]{1,3}", "(yes|no)", r"\d+\.\d*"])
SCHEMAS = st.sampled_from(['{"type": "object"}', {"type": "string"}, '{"type": "array", "items": {"type": "integer"}}'])


@target("Constraint")
def _constraint(draw):
    kind = draw(st.sampled_from(["regex", "json_schema"]))
    values, bad = arguments(draw, {
        kind: (REGEXES if kind == "regex" else SCHEMAS,
               st.one_of(junk_except(str, dict, type(None)), st.sampled_from(["(", "[a-", "*"]) if kind == "regex" else st.sampled_from(["{", "[1,", "5", '"x"']))),
        "grammar": (st.one_of(st.just(OMIT), st.none(), st.just('root ::= "a"+')), junk_except(str, type(None))),
        "tags": (st.one_of(st.just(OMIT), st.none(), TAG_PAIRS.map(tuple)), st.one_of(junk_except(tuple, list, type(None)), st.just(("a",)), st.just((1, 2)))),
        "both": (st.just(OMIT), st.just(True)),
    })
    if values.pop("both", None):
        values["json_schema" if kind == "regex" else "regex"] = "a+" if kind == "json_schema" else "{}"

    def call():
        c = Constraint(**values)
        Engine(ScriptedBackend(fuzz_reply)).generate_batch([Request.chat("x", constraint=c)])
        return c

    def check(c):
        assert c.kind == kind
        assert c.regex is None or isinstance(c.regex, str)
        assert c.json_schema is None or isinstance(c.json_schema, str)
    return bad is None, call, check, shown(values, bad)


@target("Request and Message")
def _request(draw):
    part = st.one_of(TEXT, PNGS.map(lambda b: ImageContent(b)))
    values, bad = arguments(draw, {
        "role": (st.sampled_from(["system", "user", "assistant"]), st.one_of(st.sampled_from(["User", "tool", ""]), junk_except(str))),
        "content": (st.one_of(TEXT, st.lists(part, max_size=3), st.lists(part, max_size=3).map(tuple)),
                    st.one_of(junk_except(str, list, tuple), st.lists(junk_except(str), min_size=1, max_size=2))),
        "sampling": (st.one_of(st.just(OMIT), st.builds(SamplingSettings)), junk_except(type(None))),
        "constraint": (st.one_of(st.just(OMIT), st.none(), st.builds(Constraint, regex=REGEXES)), junk_except(type(None))),
        "messages": (st.just(OMIT), st.one_of(st.just([]), junk_except(list, tuple, dict, str, bytes), st.lists(junk_except(), min_size=1, max_size=2))),
        "image_mime": (st.just(OMIT), st.one_of(st.just("text/plain"), junk_except(str))),
    })
    role = values.pop("role")

    def call():
        if "image_mime" in values:
            ImageContent(PNG, values["image_mime"])
        message = Message(role, values["content"])
        messages = values.get("messages", [message] if role == "user" else [message, Message("user", "q")])
        kwargs = {k: values[k] for k in ("sampling", "constraint") if k in values}
        request = Request(messages, **kwargs)
        Engine(ImageScriptedBackend(fuzz_reply)).generate_batch([request])
        return request

    def check(request):
        assert isinstance(request.messages, tuple) and request.messages[-1].role == "user"
    return bad is None, call, check, shown({"role": role, **values}, bad)


@target("Request.chat")
def _request_chat(draw):
    values, bad = arguments(draw, {
        "user": (st.one_of(TEXT, st.lists(st.one_of(TEXT, PNGS.map(ImageContent)), min_size=1, max_size=3)),
                 st.one_of(junk_except(str, list, tuple, dict, bytes), st.lists(junk_except(str), min_size=1, max_size=2))),
        "system": (st.one_of(st.just(OMIT), st.none(), NONBLANK), junk_except(str, type(None))),
        "sampling": (st.one_of(st.just(OMIT), st.none(), st.builds(SamplingSettings)), junk_except(type(None))),
        "constraint": (st.one_of(st.just(OMIT), st.none(), st.builds(Constraint, regex=REGEXES)), junk_except(type(None))),
    })

    def check(request):
        assert request.messages[-1].role == "user"
        assert (request.messages[0].role == "system") == bool(values.get("system"))
    return bad is None, lambda: Request.chat(**values), check, shown(values, bad)


@target("Completion")
def _completion(draw):
    values, bad = arguments(draw, {
        "text": (TEXT, junk_except(str)),
        "prompt_tokens": (st.one_of(st.just(OMIT), st.integers(0, 10**6)), st.one_of(st.integers(max_value=-1), junk_except(int))),
        "completion_tokens": (st.one_of(st.just(OMIT), st.integers(0, 10**6)), st.one_of(st.integers(max_value=-1), junk_except(int))),
        "latency_s": (st.one_of(st.just(OMIT), st.floats(0, 1e6)), st.one_of(st.floats(max_value=-0.001), st.just(math.nan), junk_except(int, float))),
        "finish_reason": (st.one_of(st.just(OMIT), st.sampled_from(["stop", "length"])), junk_except(str)),
    })

    def call():
        c = Completion(**values)
        return Engine(_UserBackend(lambda rs: [c for _ in rs])).generate("x")

    def check(text):
        assert text == values["text"]
    return bad is None, call, check, shown(values, bad)


# ---------------------------------------------------------------- images, cache, trainer config, data files

@target("load_image")
def _load_image(draw):
    from PIL import Image

    values, bad = arguments(draw, {
        "value": (st.one_of(PNGS, PNGS.map(bytearray), IMAGE_PATHS, PNGS.map(lambda b: Image.open(io.BytesIO(b)))),
                  st.one_of(st.binary(max_size=32), BAD_IMAGE_PATHS, junk_except(str, bytes, dict),
                            st.just(PNG[:20]), st.just(PNG[:40]), st.just(b"GIF89a" + b"\x00" * 8),
                            st.builds(lambda head, rest: head + rest, st.sampled_from([PNG[:16], b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"RIFF\x00\x00\x00\x00WEBPVP8 "]),
                                      st.binary(max_size=64)))),
    })

    def check(result):
        data, mime = result
        assert isinstance(data, bytes) and mime.startswith("image/")
    return bad is None, lambda: load_image(values["value"]), check, shown(values, bad)


@target("CompletionCache")
def _cache(draw):
    values, bad = arguments(draw, {
        "directory": (st.one_of(st.just(CACHE_DIR), st.just(str(CACHE_DIR)), st.just(FILES / "other-cache")),
                      st.one_of(junk_except(str, type(None)), st.just(str(FILES / "a_file")), st.just(FILES / "a_file" / "below"))),
    })
    request = Request.chat(draw(TEXT))

    def call():
        cache = CompletionCache(**values)
        cache.put("m", request, Completion("stored", 1, 2))
        hit = cache.get("m", request)
        cache.close()
        return hit

    def check(hit):
        assert hit is not None and hit.text == "stored" and hit.cached
    return bad is None, call, check, shown(values, bad)


@target("TrainerConfig")
def _trainer_config(draw):
    positive = st.integers(1, 50)
    bad_positive = st.one_of(st.integers(-3, 0), junk_except(int), st.just("4"))
    values, bad = arguments(draw, {
        "batch_size": (st.one_of(st.just(OMIT), positive), bad_positive),
        "steps": (st.one_of(st.just(OMIT), positive), st.one_of(st.integers(-3, 0), junk_except(int, type(None)))),
        "epochs": (st.one_of(st.just(OMIT), st.none(), positive), st.one_of(st.integers(-3, 0), junk_except(int, type(None)))),
        "seed": (st.one_of(st.just(OMIT), st.integers(0, 2**31)), st.one_of(junk_except(int), st.booleans())),
        "eval_batch_size": (st.one_of(st.just(OMIT), st.none(), positive), st.one_of(st.integers(-3, 0), junk_except(int, type(None)))),
        "initial_prompt": (st.one_of(st.just(OMIT), st.none(), NONBLANK, BRACED), st.one_of(BLANK, junk_except(str, type(None)))),
        "prompt_role": (st.one_of(st.just(OMIT), ROLES), BAD_ROLES),
        "adopt_every_update": (st.one_of(st.just(OMIT), st.booleans()), junk_except(bool)),
        "constraints": (st.one_of(st.just(OMIT), st.lists(NONBLANK, max_size=2).map(tuple), st.lists(NONBLANK, max_size=2), NONBLANK),
                        st.one_of(junk_except(list, tuple, str, dict), st.lists(junk_except(str), min_size=1, max_size=2))),
    })

    def check(config):
        rules = values.get("constraints", ())
        assert config.constraints == ((rules,) if isinstance(rules, str) else tuple(rules))
        assert config.total_steps(10) >= 1
    return bad is None, lambda: TrainerConfig(**values), check, shown(values, bad)


@target("load_qa_file")
def _qa_file(draw):
    good_lines = st.lists(st.fixed_dictionaries({"question": NONBLANK, "answer": st.one_of(NONBLANK, st.integers())}), min_size=1, max_size=3)
    values, bad = arguments(draw, {
        "content": (st.one_of(good_lines.map(lambda rs: "\n".join(json.dumps(r) for r in rs)), good_lines.map(lambda rs: ("json", json.dumps(rs)))),
                    st.one_of(st.binary(max_size=40), st.just(b"\xff\xfe garbage"), st.just(b"[1, 2]"), st.just(b"{\"question\": 1}"),
                              st.just(b'[{"question": "q"}]'), st.just(b"[{"), st.just(b""), st.just(b'{"question": "q", "answer": null}'),
                              st.just(b'[{"question": "q", "answer": "a"}'), st.just(b"null"), st.just(b'{"a": 1}\n[1]'))),
        "suffix": (st.sampled_from([".json", ".jsonl"]), None),
    })
    content = values["content"]
    if isinstance(content, tuple):  # a JSON array: a .json file
        values["suffix"], content = ".json", content[1]
    path = FILES / f"data-{draw(st.integers(0, 10**9))}{values['suffix']}"

    def call():
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        try:
            return load_qa_file(path)
        finally:
            path.unlink()

    def check(examples):
        assert examples and all(e.question.strip() and e.answer for e in examples)
    return bad is None, call, check, shown(values, bad)
