"""The vLLM backend: translation everywhere, real SamplingParams where vllm imports, a GPU run where one exists."""
from __future__ import annotations

import importlib.util
import json
import os

import pytest

from localgrad.backends.constraints import parse_tagged, tagged, within_budget
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
    Constraint,
    ImageContent,
    Message,
    Request,
    SamplingSettings,
)

HAS_VLLM = importlib.util.find_spec("vllm") is not None
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


def test_sampling_kwargs():
    request = Request.chat("x", sampling=SamplingSettings(temperature=0.3, max_tokens=77, top_p=0.8, seed=11))
    assert sampling_params_kwargs(request) == {"temperature": 0.3, "max_tokens": 77, "top_p": 0.8, "seed": 11}
    greedy = sampling_params_kwargs(Request.chat("x"))
    assert greedy == {"temperature": 0.0, "max_tokens": 256, "top_p": 1.0}


def test_structured_outputs_dicts():
    constraint = tagged(START, END)
    sent = structured_outputs_kwargs(Request.chat("x", constraint=constraint, sampling=SamplingSettings(max_tokens=256)))
    assert sent == {"regex": within_budget(constraint, 256).regex}
    assert sent["regex"].endswith("{0,711}" + END), "the value is capped to fit 256 tokens: 3 * (256 - 19) characters"
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    kw = sampling_params_kwargs(Request.chat("x", constraint=Constraint(json_schema=schema)))
    assert kw["structured_outputs"] == {"json": schema}
    assert structured_outputs_kwargs(Request.chat("x")) is None
    assert "structured_outputs" not in sampling_params_kwargs(Request.chat("x"))


def test_options_validation():
    assert VLLMOptions().llm_args("m") == {
        "model": "m", "tensor_parallel_size": 1, "pipeline_parallel_size": 1, "gpu_memory_utilization": 0.9,
        "dtype": "auto", "quantization": None, "trust_remote_code": False,
    }
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
    with pytest.raises(EngineConfigError, match="vllm serve"):
        VLLMOptions(data_parallel_size=2)
    with pytest.raises(EngineConfigError, match="Unknown vllm option"):
        from_spec("m", tensor_parallel=2)


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed here")
def test_missing_vllm_names_the_extra():
    with pytest.raises(MissingDependencyError, match=r"localgrad\[vllm\]"):
        from_spec("Qwen/Qwen2.5-0.5B-Instruct")


def test_real_sampling_params():
    pytest.importorskip("vllm")
    from vllm.sampling_params import SamplingParams, StructuredOutputsParams

    from localgrad.backends.vllm import _to_sampling_params

    params = _to_sampling_params(Request.chat("x", sampling=SamplingSettings(max_tokens=9, seed=3),
                                              constraint=tagged(START, END)))
    assert isinstance(params, SamplingParams)
    assert params.max_tokens == 9 and params.seed == 3 and params.temperature == 0.0
    assert isinstance(params.structured_outputs, StructuredOutputsParams)
    assert params.structured_outputs.regex == tagged(START, END).regex
    plain = _to_sampling_params(Request.chat("x"))
    assert plain.structured_outputs is None


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
