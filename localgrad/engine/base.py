"""textgrad's engine base class (`textgrad.engine.base.EngineLM`): how users write engines of their own."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


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
