"""Offline vLLM: the whole batch goes to one `LLM.chat` call, where continuous batching and paged
attention turn it into GPU throughput.

The translation (Request -> chat messages, sampling keyword arguments, structured outputs) is plain
functions that need no vLLM, so it is tested everywhere; only `VLLMBackend` imports vllm.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from localgrad.backends.base import Backend
from localgrad.backends.constraints import within_budget
from localgrad.backends.openai_format import openai_chat_messages
from localgrad.backends.options import build_options
from localgrad.errors import (
    BackendError,
    BackendOutOfMemoryError,
    EngineConfigError,
    InvalidInputError,
    MissingDependencyError,
    check_int,
)
from localgrad.request import Completion, Request

_DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
_OWN_KEYS = frozenset({
    "model", "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size",
    "gpu_memory_utilization", "max_model_len", "dtype", "quantization", "trust_remote_code",
})


@dataclass(frozen=True)
class VLLMOptions:
    """How to build `vllm.LLM`; every field is checked here, before any GPU is touched.

    `llm_kwargs` passes anything else to `vllm.LLM` (enforce_eager, seed, limit_mm_per_prompt, ...).
    Data parallelism (`data_parallel_size` > 1) is refused: offline `LLM` is one process; run
    `vllm serve --data-parallel-size N` and use the openai-compatible backend instead.
    """

    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    data_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    dtype: str = "auto"
    quantization: str | None = None
    trust_remote_code: bool = False
    llm_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        for name in ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidInputError(f"vllm option {name} must be a positive int, got {value!r}.")
        if self.data_parallel_size > 1:
            raise EngineConfigError(
                f"data_parallel_size={self.data_parallel_size}: offline vllm.LLM runs in one process and does not "
                "support data parallelism. Start `vllm serve <model> --data-parallel-size N` and use "
                "'openai-compatible:http://host:8000/v1#<model>', or start N servers and pass base_urls=[...]."
            )
        value = self.gpu_memory_utilization
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 < value <= 1.0:
            raise InvalidInputError(f"vllm option gpu_memory_utilization must be in (0, 1], got {value!r}.")
        if self.max_model_len is not None:
            check_int("vllm option max_model_len", self.max_model_len, 1)
        if self.dtype not in _DTYPES:
            raise InvalidInputError(f"vllm option dtype must be one of {_DTYPES}, got {self.dtype!r}.")
        if self.quantization is not None and (not isinstance(self.quantization, str) or not self.quantization):
            raise InvalidInputError(f"vllm option quantization must be a method name or None, got {self.quantization!r}.")
        if not isinstance(self.trust_remote_code, bool):
            raise InvalidInputError(f"vllm option trust_remote_code must be a bool, got {self.trust_remote_code!r}.")
        if not isinstance(self.llm_kwargs, Mapping):
            raise InvalidInputError(f"vllm option llm_kwargs must be a dict, got {type(self.llm_kwargs).__name__}.")
        clash = sorted(_OWN_KEYS & set(self.llm_kwargs))
        if clash:
            raise InvalidInputError(f"llm_kwargs repeats {clash}; pass them as options of their own.")

    def llm_args(self, model: str) -> dict[str, Any]:
        """Keyword arguments for `vllm.LLM(...)`."""
        args = {k: v for k, v in asdict(self).items() if k not in ("llm_kwargs", "data_parallel_size")}
        if args["max_model_len"] is None:
            del args["max_model_len"]
        return {"model": model, **args, **dict(self.llm_kwargs)}


def to_chat_messages(request: Request) -> list[dict[str, Any]]:
    """A request as the OpenAI-style conversation `LLM.chat` takes; images as `image_url` data URLs."""
    return openai_chat_messages(request)


def structured_outputs_kwargs(request: Request) -> dict[str, Any] | None:
    """The request's constraint as `StructuredOutputsParams` keyword arguments, or None without one.

    A regex goes as `regex` (vLLM's grammar backends take regexes natively, so the GBNF form is unused);
    a tag constraint is first capped to fit the request's max_tokens (`constraints.within_budget`).
    """
    constraint = within_budget(request.constraint, request.sampling.max_tokens)
    if constraint is None:
        return None
    if constraint.json_schema is not None:
        return {"json": json.loads(constraint.json_schema)}
    return {"regex": constraint.regex}


def sampling_params_kwargs(request: Request) -> dict[str, Any]:
    """`SamplingParams` keyword arguments for a request, with `structured_outputs` as a plain dict (or absent)."""
    s = request.sampling
    kwargs: dict[str, Any] = {"temperature": s.temperature, "max_tokens": s.max_tokens, "top_p": s.top_p}
    if s.seed is not None:
        kwargs["seed"] = s.seed
    structured = structured_outputs_kwargs(request)
    if structured is not None:
        kwargs["structured_outputs"] = structured
    return kwargs


def _import_vllm():
    try:
        import vllm
        from vllm.sampling_params import SamplingParams, StructuredOutputsParams
    except ImportError as exc:
        raise MissingDependencyError("vllm", "vllm", "The vllm backend") from exc
    return vllm, SamplingParams, StructuredOutputsParams


def _to_sampling_params(request: Request):
    """A `vllm.SamplingParams` for the request (imports vllm)."""
    _, sampling_params, structured_outputs_params = _import_vllm()
    kwargs = sampling_params_kwargs(request)
    structured = kwargs.pop("structured_outputs", None)
    if structured is not None:
        kwargs["structured_outputs"] = structured_outputs_params(**structured)
    return sampling_params(**kwargs)


_LLMS: dict[tuple, Any] = {}
_LLMS_LOCK = threading.Lock()


def _is_out_of_memory(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()


def _shared_llm(model: str, options: VLLMOptions):
    """One `vllm.LLM` per process and set of arguments: building a second one would claim the GPU twice."""
    key = (model, repr(sorted(options.llm_args(model).items(), key=lambda kv: kv[0])))
    with _LLMS_LOCK:
        if key not in _LLMS:
            vllm, _, _ = _import_vllm()
            try:
                _LLMS[key] = vllm.LLM(**options.llm_args(model))
            except Exception as exc:
                if _is_out_of_memory(exc):
                    raise BackendOutOfMemoryError(
                        f"loading {model!r} ran out of GPU memory ({exc}). Lower gpu_memory_utilization or "
                        "max_model_len, use a quantized model, or raise tensor_parallel_size.",
                        backend=f"vllm:{model}",
                    ) from exc
                raise EngineConfigError(f"vLLM could not load {model!r}: {type(exc).__name__}: {exc}") from exc
        return _LLMS[key]


class VLLMBackend(Backend):
    """A model loaded in-process with `vllm.LLM`; a batch of requests is one `LLM.chat` call."""

    supports_images = True
    constraint_kinds = ("regex", "json_schema")

    def __init__(self, model: str, options: VLLMOptions | None = None):
        if not isinstance(model, str) or not model.strip():
            raise InvalidInputError("The vllm backend needs a model name or path: 'vllm:<model>'.")
        self.model = model
        self.options = options or VLLMOptions()
        self.name = f"vllm:{model}"
        self._llm = _shared_llm(model, self.options)

    def generate_batch(self, requests: list[Request]) -> list[Completion]:
        """Run the batch as one `LLM.chat` call and return completions in order, with token counts."""
        if not requests:
            return []
        conversations = [to_chat_messages(r) for r in requests]
        params = [_to_sampling_params(r) for r in requests]
        try:
            started = time.perf_counter()
            outputs = self._llm.chat(conversations, sampling_params=params, use_tqdm=False)
            elapsed = time.perf_counter() - started
        except Exception as exc:
            if _is_out_of_memory(exc):
                raise BackendOutOfMemoryError(
                    f"out of GPU memory on a batch of {len(requests)} ({exc}); lower max_batch_size or max_tokens",
                    backend=self.name,
                ) from exc
            raise BackendError(f"LLM.chat failed: {type(exc).__name__}: {exc}", backend=self.name) from exc
        if len(outputs) != len(requests):
            raise BackendError(f"LLM.chat returned {len(outputs)} outputs for {len(requests)} requests", backend=self.name)
        return [self._completion(output, elapsed) for output in outputs]

    @staticmethod
    def _completion(output: Any, elapsed: float) -> Completion:
        best = output.outputs[0]
        return Completion(
            text=best.text,
            prompt_tokens=len(output.prompt_token_ids or ()),
            completion_tokens=len(best.token_ids or ()),
            latency_s=elapsed,
            finish_reason=str(best.finish_reason or "stop"),
        )


def from_spec(spec: str, **options: Any) -> VLLMBackend:
    """Build the backend for `vllm:<model name or path>` with `VLLMOptions` fields as options."""
    return VLLMBackend(spec, build_options(VLLMOptions, options, "vllm", "Pass other vllm.LLM arguments in llm_kwargs={...}."))
