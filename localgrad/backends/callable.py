"""A textgrad-style engine object (anything with `generate(prompt, system_prompt=None, **kwargs) -> str`)
as a backend, so engines users wrote for textgrad keep working: one call per request, in order."""
from __future__ import annotations

import inspect
import time
from typing import Any

from localgrad.backends.base import Backend
from localgrad.errors import BackendResponseError, InvalidInputError
from localgrad.request import Completion, Request


class CallableBackend(Backend):
    """Calls `engine_like.generate` once per request; images go as bytes in a list prompt, as in textgrad."""

    supports_images = True

    def __init__(self, engine_like: Any):
        generate = getattr(engine_like, "generate", None)
        if not callable(generate):
            raise InvalidInputError(
                f"{type(engine_like).__name__} has no generate(prompt, system_prompt=None, **kwargs) method, "
                "so it cannot serve as an engine."
            )
        self.engine_like = engine_like
        self.name = f"callable:{getattr(engine_like, 'model_string', None) or type(engine_like).__name__}"
        parameters = inspect.signature(generate).parameters.values()
        self._takes_sampling = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)

    def generate_batch(self, requests: list[Request]) -> list[Completion]:
        return [self._one(request) for request in requests]

    def _one(self, request: Request) -> Completion:
        system = next((m.text for m in request.messages if m.role == "system"), None)
        content = request.messages[-1].content
        prompt: Any = content if isinstance(content, str) else [p if isinstance(p, str) else p.data for p in content]
        sampling = request.sampling
        extra = {"temperature": sampling.temperature, "max_tokens": sampling.max_tokens, "top_p": sampling.top_p} if self._takes_sampling else {}
        started = time.perf_counter()
        text = self.engine_like.generate(prompt, system_prompt=system, **extra)
        if not isinstance(text, str):
            raise BackendResponseError(
                f"generate() returned {type(text).__name__}, not str; make it return the model's text.", backend=self.name
            )
        return Completion(text=text, latency_s=time.perf_counter() - started)
