"""Engine = backend + cache + accounting.

An Engine is what the graph talks to. It takes a list of Requests and returns a list of
Completions, serving what it can from the cache and sending the rest to its backend in batches.
It also keeps textgrad's call shape (`engine(prompt, system_prompt=...) -> str`).
"""
from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence, Union

from localgrad.backends.base import Backend
from localgrad.cache import CompletionCache
from localgrad.engine.base import EngineLM
from localgrad.errors import (
    BackendError,
    BackendOutOfMemoryError,
    BackendResponseError,
    InvalidInputError,
    LocalgradError,
    UnsupportedRequestError,
    check_int,
)
from localgrad.request import Completion, ImageContent, Request, SamplingSettings


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


class Engine(EngineLM):
    """A backend with an optional cache, default sampling settings and usage accounting.

    `backend` is a Backend, or a function that builds one on first use (engines for servers connect
    on their first call, as textgrad's did); such an engine needs `model_string`.
    `max_batch_size` is how many requests the backend computes together in one call, for every backend
    (1 runs them one by one, the reference order for checking that batching changes nothing). None takes
    the backend's `default_batch_size` (the transformers backend's is sized for its device), or all at once.
    `model_string` is the model's name (default: the backend's name).
    """

    def __init__(
        self,
        backend: Union[Backend, Callable[[], Backend]],
        *,
        sampling: SamplingSettings | None = None,
        cache: Any = None,
        max_batch_size: int | None = None,
        model_string: str | None = None,
    ):
        if not isinstance(backend, Backend) and not callable(backend):
            raise InvalidInputError(f"Engine needs a localgrad Backend or a function building one, got {type(backend).__name__}.")
        if not isinstance(backend, Backend) and not model_string:
            raise InvalidInputError("An Engine whose backend is built on first use needs model_string=<the model's name>.")
        if max_batch_size is not None:
            check_int("max_batch_size", max_batch_size, 1)
        if sampling is not None and not isinstance(sampling, SamplingSettings):
            raise InvalidInputError(f"sampling must be SamplingSettings or None, got {type(sampling).__name__}.")
        self._backend = backend if isinstance(backend, Backend) else None
        self._build_backend = None if isinstance(backend, Backend) else backend
        self.model_string = model_string or backend.name  # type: ignore[union-attr]
        self.sampling = sampling or SamplingSettings()
        self.cache = _make_cache(cache)
        self.max_batch_size = max_batch_size
        self.usage = Usage()
        self._lock = threading.Lock()

    @property
    def backend(self) -> Backend:
        """The backend, built on first use when the engine was given a function that builds it."""
        if self._backend is None:
            with self._lock:
                if self._backend is None:
                    backend = self._build_backend()  # type: ignore[misc]
                    if not isinstance(backend, Backend):
                        raise InvalidInputError(f"The backend function returned {type(backend).__name__}, not a Backend.")
                    self._backend = backend
        return self._backend

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_string!r})"

    def generate_batch(self, requests: Sequence[Request]) -> list[Completion]:
        """Answer every request, in order: cached ones from the cache, the rest in backend batches."""
        if not isinstance(requests, (list, tuple)):
            raise InvalidInputError(f"generate_batch takes a list of Requests, got {type(requests).__name__}.")
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
        step = self.max_batch_size or self.backend.default_batch_size or max(len(pending), 1)
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
        elif isinstance(content, (list, tuple)) and content:
            for part in content:
                if not isinstance(part, (str, bytes, bytearray)):
                    raise InvalidInputError(f"A prompt list holds str and image bytes, got {type(part).__name__}.")
            user = [p if isinstance(p, str) else ImageContent(bytes(p), _sniff_mime(bytes(p))) for p in content]
        else:
            raise InvalidInputError(
                f"generate takes the prompt as a str or a non-empty list of str and image bytes, got {content!r:.80}."
            )
        settings = replace(self.sampling, **_sampling_kwargs(sampling)) if sampling else self.sampling
        return self.generate_batch([Request.chat(user, system=system_prompt, sampling=settings)])[0].text

    __call__ = generate

    def reset_usage(self) -> None:
        """Zero the usage totals."""
        with self._lock:
            self.usage = Usage()

    def close(self) -> None:
        """Release the backend and the cache; `get_engine` builds a new engine for this name afterwards."""
        from localgrad.engine.registry import forget_engine

        forget_engine(self)
        if self._backend is not None:
            self._backend.close()
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
        _check_completions(completions, len(requests), self.backend.name)
        elapsed = time.perf_counter() - started
        with self._lock:
            self.usage.batches += 1
            self.usage.batch_sizes.append(len(requests))
            self.usage.backend_seconds += elapsed
            self.usage.prompt_tokens += sum(c.prompt_tokens for c in completions)
            self.usage.completion_tokens += sum(c.completion_tokens for c in completions)
        return completions


def _check_completions(completions: Any, expected: int, backend: str) -> None:
    """Raise BackendResponseError unless a backend returned `expected` well-formed Completions."""
    if not isinstance(completions, (list, tuple)):
        raise BackendResponseError(
            f"generate_batch returned {type(completions).__name__}, not a list of Completions", backend=backend
        )
    if len(completions) != expected:
        raise BackendResponseError(f"returned {len(completions)} completions for {expected} requests", backend=backend)
    for c in completions:
        if not isinstance(c, Completion):
            raise BackendResponseError(f"generate_batch returned a {type(c).__name__}, not a Completion", backend=backend)
        counts_ok = all(not isinstance(n, bool) and isinstance(n, int) and n >= 0 for n in (c.prompt_tokens, c.completion_tokens))
        latency = c.latency_s
        latency_ok = not isinstance(latency, bool) and isinstance(latency, (int, float)) and math.isfinite(latency) and latency >= 0
        if not isinstance(c.text, str) or not counts_ok or not latency_ok or not isinstance(c.finish_reason, str):
            raise BackendResponseError(
                "returned a malformed Completion (text must be str, token counts ints >= 0, latency_s a number >= 0, "
                f"finish_reason a str): {c!r:.200}",
                backend=backend,
            )


def _make_cache(cache: Any) -> CompletionCache | None:
    """A CompletionCache from True (the default directory), a directory, a diskcache.Cache or a CompletionCache."""
    import diskcache

    if cache is None or cache is False:
        return None
    if cache is True:
        return CompletionCache()
    if isinstance(cache, CompletionCache):
        return cache
    if isinstance(cache, (str, os.PathLike, diskcache.Cache)):
        return CompletionCache(cache)
    raise InvalidInputError(
        f"cache must be a bool, a directory path, a diskcache.Cache or a CompletionCache, got {type(cache).__name__}."
    )


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
