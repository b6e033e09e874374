"""Engine = backend + cache + accounting; `get_engine(name)` resolves engine names through one registry.

An Engine is what the graph talks to. It takes a list of Requests and returns a list of
Completions, serving what it can from the cache and sending the rest to its backend in batches.
It also keeps textgrad's call shape (`engine(prompt, system_prompt=...) -> str`).
"""
from __future__ import annotations

import importlib
import importlib.util
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence, Union

from localgrad.backends.base import (
    Backend,
    Completion,
    ImageContent,
    Request,
    SamplingSettings,
)
from localgrad.cache import CompletionCache
from localgrad.errors import (
    BackendError,
    BackendOutOfMemoryError,
    EngineConfigError,
    GraphError,
    InvalidInputError,
    LocalgradError,
    UnsupportedRequestError,
)


@dataclass
class Usage:
    """Running totals of what an engine sent to its backend: batches, requests, tokens and time."""

    batches: int = 0
    requests: int = 0
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    backend_seconds: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)

    def snapshot(self) -> "Usage":
        """A copy of the totals now, to subtract from later totals."""
        return replace(self, batch_sizes=list(self.batch_sizes))

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(
            batches=self.batches + other.batches,
            requests=self.requests + other.requests,
            cached=self.cached + other.cached,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            backend_seconds=self.backend_seconds + other.backend_seconds,
            batch_sizes=self.batch_sizes + other.batch_sizes,
        )

    def __sub__(self, earlier: "Usage") -> "Usage":
        return Usage(
            batches=self.batches - earlier.batches,
            requests=self.requests - earlier.requests,
            cached=self.cached - earlier.cached,
            prompt_tokens=self.prompt_tokens - earlier.prompt_tokens,
            completion_tokens=self.completion_tokens - earlier.completion_tokens,
            backend_seconds=self.backend_seconds - earlier.backend_seconds,
            batch_sizes=self.batch_sizes[len(earlier.batch_sizes):],
        )

    def to_dict(self) -> dict[str, Any]:
        """The totals as plain values (batch sizes left out), for records and checkpoints."""
        return {
            "batches": self.batches,
            "requests": self.requests,
            "cached": self.cached,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "backend_seconds": round(self.backend_seconds, 4),
        }

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens per second of backend time."""
        return self.completion_tokens / self.backend_seconds if self.backend_seconds else 0.0


class Engine:
    """A backend with an optional cache, default sampling settings and usage accounting.

    `max_batch_size` caps how many requests go to the backend in one call (1 runs them one by one,
    the reference order for checking that batching changes nothing).
    """

    def __init__(
        self,
        backend: Backend,
        *,
        sampling: SamplingSettings | None = None,
        cache: Union[bool, str, CompletionCache, None] = None,
        max_batch_size: int | None = None,
    ):
        if not isinstance(backend, Backend):
            raise InvalidInputError(f"Engine needs a localgrad Backend, got {type(backend).__name__}.")
        if max_batch_size is not None and max_batch_size < 1:
            raise InvalidInputError(f"max_batch_size must be a positive int or None, got {max_batch_size}.")
        self.backend = backend
        self.sampling = sampling or SamplingSettings()
        self.cache = _make_cache(cache)
        self.max_batch_size = max_batch_size
        self.usage = Usage()
        self._lock = threading.Lock()

    @property
    def model_string(self) -> str:
        """The backend's name (textgrad calls this `model_string`)."""
        return self.backend.name

    def __repr__(self) -> str:
        return f"Engine({self.backend.name!r})"

    def generate_batch(self, requests: Sequence[Request]) -> list[Completion]:
        """Answer every request, in order: cached ones from the cache, the rest in backend batches."""
        requests = list(requests)
        for request in requests:
            if not isinstance(request, Request):
                raise InvalidInputError(f"generate_batch takes Requests, got {type(request).__name__}.")
            if request.has_images and not self.backend.supports_images:
                raise UnsupportedRequestError(
                    f"The engine {self.backend.name!r} is text-only and cannot take images. "
                    "Use a multimodal engine, e.g. 'transformers-vlm:<local VLM directory>', "
                    "'vllm:<VLM model>' or 'openai-compatible:<url>#<VLM model>'."
                )
        results: list[Completion | None] = [None] * len(requests)
        pending: list[int] = []
        for i, request in enumerate(requests):
            hit = self.cache.get(self.backend.name, request) if self.cache else None
            if hit is not None:
                results[i] = hit
            else:
                pending.append(i)
        with self._lock:
            self.usage.requests += len(requests)
            self.usage.cached += len(requests) - len(pending)
        step = self.max_batch_size or max(len(pending), 1)
        for start in range(0, len(pending), step):
            chunk = pending[start:start + step]
            sent = [self._for_backend(requests[i]) for i in chunk]
            completions = self._call_backend(sent)
            for i, completion in zip(chunk, completions):
                results[i] = completion
                if self.cache:
                    self.cache.put(self.backend.name, requests[i], completion)
        return results  # type: ignore[return-value]

    def generate(
        self,
        content: Union[str, Sequence[Union[str, bytes]]],
        system_prompt: str | None = None,
        **sampling: Any,
    ) -> str:
        """One prompt in, text out (textgrad's call shape). `content` may mix text and image bytes."""
        if isinstance(content, str):
            user: Union[str, list] = content
        else:
            user = [p if isinstance(p, str) else ImageContent(bytes(p), _sniff_mime(bytes(p))) for p in content]
        settings = replace(self.sampling, **_sampling_kwargs(sampling)) if sampling else self.sampling
        return self.generate_batch([Request.chat(user, system=system_prompt, sampling=settings)])[0].text

    __call__ = generate

    def reset_usage(self) -> None:
        """Zero the usage totals."""
        with self._lock:
            self.usage = Usage()

    def close(self) -> None:
        """Release the backend and the cache."""
        self.backend.close()
        if self.cache:
            self.cache.close()

    def _for_backend(self, request: Request) -> Request:
        if request.constraint is not None and request.constraint.kind not in self.backend.constraint_kinds:
            return replace(request, constraint=None)
        return request

    def _call_backend(self, requests: list[Request]) -> list[Completion]:
        started = time.perf_counter()
        try:
            completions = self.backend.generate_batch(requests)
        except LocalgradError:
            raise
        except MemoryError as exc:
            raise BackendOutOfMemoryError(
                f"out of memory on a batch of {len(requests)}; lower max_batch_size or max_tokens",
                backend=self.backend.name,
            ) from exc
        except Exception as exc:  # the backend edge: nothing but localgrad errors leaves an engine
            if "out of memory" in str(exc).lower():
                raise BackendOutOfMemoryError(
                    f"out of memory on a batch of {len(requests)}; lower max_batch_size or max_tokens ({exc})",
                    backend=self.backend.name,
                ) from exc
            raise BackendError(f"{type(exc).__name__}: {exc}", backend=self.backend.name) from exc
        if len(completions) != len(requests):
            raise BackendError(
                f"returned {len(completions)} completions for {len(requests)} requests",
                backend=self.backend.name,
            )
        elapsed = time.perf_counter() - started
        with self._lock:
            self.usage.batches += 1
            self.usage.batch_sizes.append(len(requests))
            self.usage.backend_seconds += elapsed
            self.usage.prompt_tokens += sum(c.prompt_tokens for c in completions)
            self.usage.completion_tokens += sum(c.completion_tokens for c in completions)
        return completions


def _make_cache(cache: Union[bool, str, CompletionCache, None]) -> CompletionCache | None:
    if cache is None or cache is False:
        return None
    if cache is True:
        return CompletionCache()
    if isinstance(cache, CompletionCache):
        return cache
    if isinstance(cache, str):
        return CompletionCache(cache)
    raise InvalidInputError(f"cache must be a bool, a directory path or a CompletionCache, got {type(cache).__name__}.")


def _sampling_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    aliases = {"max_new_tokens": "max_tokens"}
    allowed = {"temperature", "max_tokens", "top_p", "seed"}
    out = {}
    for key, value in kwargs.items():
        key = aliases.get(key, key)
        if key not in allowed:
            raise InvalidInputError(f"Unknown sampling option {key!r}; allowed: {sorted(allowed)}.")
        out[key] = value
    return out


def _sniff_mime(data: bytes) -> str:
    from localgrad.images import image_mime_type

    return image_mime_type(data)


# ---------------------------------------------------------------------------------------------
# The registry: engine-name prefixes to backend factories, imported only when asked for.

_BACKENDS: dict[str, str] = {
    "transformers": "localgrad.backends.transformers:from_spec",
    "transformers-vlm": "localgrad.backends.transformers_vlm:from_spec",
    "llamacpp": "localgrad.backends.llamacpp:from_spec",
    "vllm": "localgrad.backends.vllm:from_spec",
    "openai-compatible": "localgrad.backends.openai_compatible:from_spec",
    "openai": "localgrad.backends.hosted:openai_from_spec",
    "anthropic": "localgrad.backends.hosted:anthropic_from_spec",
    "litellm": "localgrad.backends.hosted:litellm_from_spec",
}

ENGINE_OPTIONS = ("cache", "max_batch_size", "temperature", "max_tokens", "top_p", "seed")

_ENGINES: dict[tuple, Engine] = {}
_ENGINES_LOCK = threading.Lock()

ENGINE_NAME_HELP = (
    "Known engine names: 'embedded' (the bundled SmolLM2-135M), 'transformers:<model dir or .gguf>[#<gguf file>]', "
    "'transformers-vlm:<model dir>', 'llamacpp:<file.gguf>', 'vllm:<model>', "
    "'openai-compatible:<base_url>#<model>', 'openai:<model>', 'anthropic:<model>', 'litellm:<model>', "
    "and textgrad's names: 'gpt-4o', 'claude-...', 'vllm-<model>', 'ollama-<model>', 'experimental:<litellm model>'."
)


def register_backend(prefix: str, factory: Union[str, Callable[..., Backend]]) -> None:
    """Make `get_engine('<prefix>:<spec>')` build a backend with `factory(spec, **options)`."""
    if not prefix or ":" in prefix:
        raise InvalidInputError(f"A backend prefix must be a non-empty name without ':', got {prefix!r}.")
    _BACKENDS[prefix] = factory  # type: ignore[assignment]


def embedded_backend_name() -> str:
    """Which backend `embedded` uses here: llama.cpp when llama-cpp-python is installed, else transformers."""
    return "llamacpp" if importlib.util.find_spec("llama_cpp") is not None else "transformers"


def resolve_engine_name(name: str) -> tuple[str, str]:
    """Turn an engine name (localgrad's or textgrad's) into (backend prefix, backend spec)."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError(f"An engine name must be a non-empty string. {ENGINE_NAME_HELP}")
    name = name.strip()
    if name in ("embedded", "embedded:transformers", "embedded:llamacpp"):
        from localgrad.models import embedded_gguf_path

        prefix = name.split(":", 1)[1] if ":" in name else embedded_backend_name()
        return prefix, str(embedded_gguf_path())
    if name.startswith("experimental:"):
        return "litellm", name.split(":", 1)[1]
    prefix, sep, spec = name.partition(":")
    if sep and prefix in _BACKENDS:
        if not spec:
            raise InvalidInputError(f"The engine name {name!r} has nothing after '{prefix}:'. {ENGINE_NAME_HELP}")
        return prefix, spec
    if name.startswith("vllm-"):
        return "vllm", name[len("vllm-"):]
    if name.startswith("ollama-"):
        return "openai-compatible", f"http://localhost:11434/v1#{name[len('ollama-'):]}"
    if name.startswith(("gpt-", "o1", "o3", "o4", "chatgpt-")):
        return "openai", name
    if name.startswith("claude-"):
        return "anthropic", name
    raise EngineConfigError(f"Unknown engine name {name!r}. {ENGINE_NAME_HELP}")


def _load_factory(prefix: str) -> Callable[..., Backend]:
    factory = _BACKENDS[prefix]
    if callable(factory):
        return factory
    module_name, _, attr = factory.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def get_engine(name: Union[str, Engine, Any], **options: Any) -> Engine:
    """The engine for a name, built once per process and shared (so a model loads once).

    A textgrad-style engine object (with a `generate` method) is wrapped as it is.

    Engine options: cache (bool or directory), max_batch_size, temperature, max_tokens, top_p, seed.
    Everything else goes to the backend (device, dtype, n_ctx, base_url, tensor_parallel_size, ...).
    """
    if isinstance(name, Engine):
        return name
    if not isinstance(name, str) and callable(getattr(name, "generate", None)):
        return _adapted_engine(name)
    prefix, spec = resolve_engine_name(name)
    engine_opts = {k: options.pop(k) for k in ENGINE_OPTIONS if k in options}
    key = (prefix, spec, tuple(sorted((k, repr(v)) for k, v in {**options, **engine_opts}.items())))
    with _ENGINES_LOCK:
        if key in _ENGINES:
            return _ENGINES[key]
        backend = _shared_backend(prefix, spec, options)
        sampling_opts = {k: engine_opts.pop(k) for k in ("temperature", "max_tokens", "top_p", "seed") if k in engine_opts}
        engine = Engine(backend, sampling=SamplingSettings(**sampling_opts), **engine_opts)
        _ENGINES[key] = engine
        return engine


_BACKEND_INSTANCES: dict[tuple, Backend] = {}
_ADAPTED: dict[int, Engine] = {}


def _adapted_engine(engine_like: Any) -> Engine:
    """An Engine over a textgrad-style engine object, built once per object."""
    from localgrad.backends.callable import CallableBackend

    with _ENGINES_LOCK:
        engine = _ADAPTED.get(id(engine_like))
        if engine is None or engine.backend.engine_like is not engine_like:  # type: ignore[attr-defined]
            engine = Engine(CallableBackend(engine_like))
            _ADAPTED[id(engine_like)] = engine
        return engine


class EngineLM(ABC):
    """textgrad's engine base class: implement `generate(prompt, system_prompt=None, **kwargs) -> str`.

    Pass an instance wherever localgrad takes an engine; it runs one request at a time.
    """

    model_string: str = "custom"
    system_prompt: str | None = None

    @abstractmethod
    def generate(self, prompt: Any, system_prompt: str | None = None, **kwargs: Any) -> str:
        """The model's text for one prompt (a str, or a list of str and image bytes)."""

    def __call__(self, *args: Any, **kwargs: Any) -> str:
        return self.generate(*args, **kwargs)


def _shared_backend(prefix: str, spec: str, options: dict[str, Any]) -> Backend:
    key = (prefix, spec, tuple(sorted((k, repr(v)) for k, v in options.items())))
    if key not in _BACKEND_INSTANCES:
        _BACKEND_INSTANCES[key] = _load_factory(prefix)(spec, **options)
    return _BACKEND_INSTANCES[key]


# ---------------------------------------------------------------------------------------------
# The backward engine: textgrad's `set_backward_engine`, resolved once at the top of a call.

_backward_engine: Engine | None = None


def set_backward_engine(engine: Union[str, Engine], override: bool = False, **options: Any) -> None:
    """Set the engine that backward passes, losses and optimizers use when none is passed."""
    global _backward_engine
    if _backward_engine is not None and not override:
        raise EngineConfigError(
            "A backward engine is already set. Pass override=True to replace it."
        )
    _backward_engine = get_engine(engine, **options)


def get_backward_engine() -> Engine | None:
    """The engine set by `set_backward_engine`, or None."""
    return _backward_engine


def resolve_engine(engine: Union[str, Engine, None], purpose: str = "this call") -> Engine:
    """An Engine from an engine, a name, or the backward engine when None; a clear error when none is set."""
    if engine is None:
        if _backward_engine is None:
            raise GraphError(
                f"No engine for {purpose}. Pass engine=..., or set one with "
                "localgrad.set_backward_engine('embedded')."
            )
        return _backward_engine
    if isinstance(engine, (str, Engine)) or callable(getattr(engine, "generate", None)):
        return get_engine(engine)
    raise InvalidInputError(
        f"An engine must be an Engine, an engine name, or an object with a generate() method; got {type(engine).__name__}."
    )
