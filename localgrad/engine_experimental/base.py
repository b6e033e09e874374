"""textgrad's `textgrad.engine_experimental.base`: the experimental EngineLM that user engines subclass, and `cached`.

Subclasses implement `_generate_from_single_prompt` and `_generate_from_multiple_input`; `generate` picks one.
`cached` keys answers on a stable hash of the method, the model and the arguments (textgrad used Python's
per-process `hash()`, so its cache never hit across runs).
"""
from __future__ import annotations

import functools
import hashlib
from abc import abstractmethod
from typing import Any, Callable, Union

from localgrad.cache import DEFAULT_CACHE_DIR
from localgrad.engine.base import EngineLM as BaseEngineLM
from localgrad.errors import InvalidInputError, UnsupportedRequestError
from localgrad.prompts.engines import DEFAULT_SYSTEM_PROMPT


def cached(func: Callable[..., Any]) -> Callable[..., Any]:
    """Serve a method's answer from `self.cache` (a diskcache.Cache, or False for none) when it was seen before."""

    @functools.wraps(func)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.cache is False:
            return func(self, *args, **kwargs)
        text = repr((func.__qualname__, self.model_string, args, sorted(kwargs.items())))
        key = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if key in self.cache:
            return self.cache[key]
        result = func(self, *args, **kwargs)
        self.cache[key] = result
        return result

    return wrapper


class EngineLM(BaseEngineLM):
    """An engine with a model name, default system prompt, multimodal flag and optional disk cache."""

    def __init__(
        self,
        model_string: str,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        is_multimodal: bool = False,
        cache: Any = False,
    ):
        import diskcache

        self.model_string = model_string
        self.system_prompt = system_prompt
        self.is_multimodal = is_multimodal
        if isinstance(cache, diskcache.Cache) or cache is False:
            self.cache: Union[diskcache.Cache, bool] = cache
        elif cache is True:
            self.cache = diskcache.Cache(str(DEFAULT_CACHE_DIR / f"model_{model_string.replace('/', '_')}"))
        else:
            raise InvalidInputError(f"cache must be a diskcache.Cache, True or False, got {type(cache).__name__}.")

    @abstractmethod
    def _generate_from_single_prompt(self, content: str, system_prompt: str | None = None, **kwargs: Any) -> str:
        """The answer to a text prompt."""

    @abstractmethod
    def _generate_from_multiple_input(self, content: list, system_prompt: str | None = None, **kwargs: Any) -> str:
        """The answer to a list of text and image bytes."""

    def generate(self, content: Any, system_prompt: str | None = None, **kwargs: Any) -> str:
        """Dispatch a str or a list of str/bytes to the matching method, with the default system prompt if none."""
        system = system_prompt or self.system_prompt
        if isinstance(content, str):
            return self._generate_from_single_prompt(content, system_prompt=system, **kwargs)
        if any(isinstance(part, (bytes, bytearray)) for part in content) and not self.is_multimodal:
            raise UnsupportedRequestError(
                f"{type(self).__name__} got image input but is_multimodal is False; pass is_multimodal=True "
                "if the model takes images."
            )
        return self._generate_from_multiple_input(list(content), system_prompt=system, **kwargs)
