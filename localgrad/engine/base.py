"""textgrad's engine base classes (`textgrad.engine.base`): how users write engines of their own.

`EngineLM` is the interface every engine has (localgrad's `Engine` included); `CachedEngine` is
textgrad's mixin that stores answers on disk by prompt.
"""
from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from typing import Any


class EngineLM(ABC):
    """textgrad's engine base class: implement `generate(prompt, system_prompt=None, **kwargs) -> str`.

    Pass an instance wherever localgrad takes an engine; a user's own engine runs one request at a time.
    """

    model_string: str = "custom"
    system_prompt: str | None = None

    @abstractmethod
    def generate(self, prompt: Any, system_prompt: str | None = None, **kwargs: Any) -> str:
        """The model's text for one prompt (a str, or a list of str and image bytes)."""

    def __call__(self, *args: Any, **kwargs: Any) -> str:
        return self.generate(*args, **kwargs)


class CachedEngine:
    """textgrad's disk cache mixin: `_check_cache(prompt)` and `_save_cache(prompt, response)` on a diskcache
    at `cache_path`. The cache is reopened after unpickling, so engines can cross process boundaries."""

    def __init__(self, cache_path: str | os.PathLike, *args: Any, **kwargs: Any):
        import diskcache

        super().__init__(*args, **kwargs)
        self.cache_path = os.fspath(cache_path)
        self.cache = diskcache.Cache(self.cache_path)

    def _hash_prompt(self, prompt: str) -> str:
        return hashlib.sha256(str(prompt).encode("utf-8")).hexdigest()

    def _check_cache(self, prompt: str) -> Any:
        return self.cache.get(prompt)

    def _save_cache(self, prompt: str, response: Any) -> None:
        self.cache[prompt] = response

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("cache", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        import diskcache

        self.__dict__.update(state)
        self.cache = diskcache.Cache(self.cache_path)
