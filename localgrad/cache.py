"""An opt-in on-disk cache of completions, keyed on the whole request and the model that answers it."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from localgrad.request import Completion, Request

DEFAULT_CACHE_DIR = Path(os.environ.get("LOCALGRAD_CACHE_DIR", Path.home() / ".cache" / "localgrad"))


def request_key(model_id: str, request: Request) -> str:
    """A stable hash of the model and every field of the request (messages, settings, constraint)."""
    payload = json.dumps({"model": model_id, **request.to_key_data()}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def cacheable(request: Request) -> bool:
    """Only deterministic requests are cached: greedy decoding, or sampling with a fixed seed."""
    return request.sampling.greedy or request.sampling.seed is not None


class CompletionCache:
    """A diskcache-backed store of completions; safe to share between processes."""

    def __init__(self, directory: str | os.PathLike | Any | None = None):
        """`directory`: where to store (default ~/.cache/localgrad), or an open diskcache.Cache to use as is."""
        import diskcache

        if isinstance(directory, diskcache.Cache):  # textgrad's cache=diskcache.Cache(...)
            self.directory, self._cache = Path(directory.directory), directory
            return
        self.directory = Path(directory) if directory is not None else DEFAULT_CACHE_DIR
        self._cache = diskcache.Cache(str(self.directory))

    def get(self, model_id: str, request: Request) -> Completion | None:
        """The stored completion for this request, or None."""
        if not cacheable(request):
            return None
        data = self._cache.get(request_key(model_id, request))
        if data is None:
            return None
        return Completion(**{**data, "cached": True, "latency_s": 0.0})

    def put(self, model_id: str, request: Request, completion: Completion) -> None:
        """Store a completion for a deterministic request."""
        if cacheable(request):
            self._cache.set(request_key(model_id, request), {
                "text": completion.text,
                "prompt_tokens": completion.prompt_tokens,
                "completion_tokens": completion.completion_tokens,
                "finish_reason": completion.finish_reason,
            })

    def clear(self) -> None:
        """Remove every stored completion."""
        self._cache.clear()

    def close(self) -> None:
        """Close the underlying database."""
        self._cache.close()
