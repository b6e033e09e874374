"""NamedEngine: an Engine for one model behind a named backend, built textgrad's way, `Cls(model_string, ...)`.

textgrad's engine classes (ChatOpenAI, ChatAnthropic, ChatVLLM, LiteLLMEngine, ...) are NamedEngines: they
take textgrad's constructor arguments, run on localgrad's batched backends, and connect on their first call.
"""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Sequence

from localgrad.engine.core import Engine
from localgrad.engine.registry import engine_arguments
from localgrad.errors import EngineConfigError
from localgrad.request import Completion, Message, Request


class NamedEngine(Engine):
    """A model behind the backend `backend_prefix` (spec `backend_spec`, default `model_string`).

    `system_prompt` is used for every request that has none (textgrad's engines did this);
    other keyword options are localgrad's engine and backend options (cache, max_tokens, timeouts, ...).
    """

    def __init__(
        self,
        model_string: str,
        system_prompt: str | None = None,
        is_multimodal: bool = False,
        *,
        backend_prefix: str,
        backend_spec: str | None = None,
        **options: Any,
    ):
        super().__init__(**engine_arguments(backend_prefix, backend_spec or model_string, options))
        self.model_string = model_string
        self.system_prompt = system_prompt
        self.is_multimodal = is_multimodal

    @classmethod
    def from_spec(cls, prefix: str, spec: str, **options: Any) -> "NamedEngine":
        """The engine `get_engine('<prefix>:<spec>', **options)` returns."""
        return cls(spec, **options)

    def generate_batch(self, requests: Sequence[Request]) -> list[Completion]:
        """Answer every request in order, giving the default system prompt to those without one."""
        if self.system_prompt:
            requests = [_with_system(r, self.system_prompt) for r in requests]
        return super().generate_batch(requests)


def _with_system(request: Request, system_prompt: str) -> Request:
    if not isinstance(request, Request) or any(m.role == "system" for m in request.messages):
        return request
    return replace(request, messages=(Message("system", system_prompt), *request.messages))


def require_key(env_var: str, options: dict[str, Any], provider: str, model: str) -> None:
    """Raise (a ValueError, as textgrad did) unless an API key is passed as api_key= or set in `env_var`."""
    if not (options.get("api_key") or os.environ.get(env_var)):
        raise EngineConfigError(
            f"The {provider} engine for {model!r} needs an API key: set {env_var} or pass api_key=... "
            "For a local model use 'embedded', 'vllm:<model>' or 'openai-compatible:<url>#<model>'."
        )
