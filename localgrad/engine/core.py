"""Engine = backend + cache + accounting.

An Engine is what the graph talks to. It takes a list of Requests and returns a list of
Completions, serving what it can from the cache and sending the rest to its backend in batches.
It also keeps textgrad's call shape (`engine(prompt, system_prompt=...) -> str`).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Sequence, Union

from localgrad.backends.base import Backend
from localgrad.cache import CompletionCache
from localgrad.errors import (
    BackendError,
    BackendOutOfMemoryError,
    InvalidInputError,
    LocalgradError,
    UnsupportedRequestError,
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


class Engine:
    """A backend with an optional cache, default sampling settings and usage accounting.

    `max_batch_size` is how many requests the backend computes together in one call, for every backend
    (1 runs them one by one, the reference order for checking that batching changes nothing). None takes
    the backend's `default_batch_size` (the transformers backend's is sized for its device), or all at once.
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
