"""textgrad's `textgrad.engine.openai`: ChatOpenAI for OpenAI, and for any OpenAI-compatible server with base_url.

Without base_url, ChatOpenAI runs on localgrad's OpenAI backend (needs `localgrad[openai]` and OPENAI_API_KEY);
with base_url (Ollama, `vllm serve`, llama.cpp's server, LM Studio, ...), on the batched openai-compatible
backend. Both connect on their first call.
"""
from __future__ import annotations

import os
from typing import Any

from localgrad.engine.named import NamedEngine, require_key
from localgrad.errors import InvalidInputError
from localgrad.prompts.engines import DEFAULT_SYSTEM_PROMPT

OLLAMA_BASE_URL = os.environ.get("OLLAMA_BASE_URL") or "http://localhost:11434/v1"


class ChatOpenAI(NamedEngine):
    """An OpenAI chat model, or with `base_url` a model on any OpenAI-compatible server (textgrad allowed only Ollama's)."""

    DEFAULT_SYSTEM_PROMPT = DEFAULT_SYSTEM_PROMPT

    def __init__(
        self,
        model_string: str = "gpt-3.5-turbo-0613",
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        is_multimodal: bool = False,
        base_url: str | None = None,
        **options: Any,
    ):
        self.base_url = base_url
        if base_url:
            super().__init__(model_string, system_prompt, is_multimodal, backend_prefix="openai-compatible",
                             backend_spec=f"{base_url}#{model_string}", **options)
        else:
            require_key("OPENAI_API_KEY", options, "OpenAI", model_string)
            super().__init__(model_string, system_prompt, is_multimodal, backend_prefix="openai", **options)

    @classmethod
    def from_spec(cls, prefix: str, spec: str, **options: Any) -> "ChatOpenAI":
        """`openai:<model>`, or `openai-compatible:<base_url>#<model>` (the model may come as model=...)."""
        if prefix == "openai":
            return cls(spec, **options)
        base_url, _, model = spec.partition("#")
        model = options.pop("model", None) or model
        if not model:
            raise InvalidInputError(f"No model name in {spec!r}: use 'openai-compatible:<base_url>#<model>' or pass model=...")
        return cls(model, base_url=base_url, **options)


class AzureChatOpenAI(NamedEngine):
    """An Azure OpenAI deployment, through LiteLLM (`localgrad[litellm]`; AZURE_API_KEY, AZURE_API_BASE, AZURE_API_VERSION)."""

    def __init__(self, model_string: str = "gpt-35-turbo", system_prompt: str = DEFAULT_SYSTEM_PROMPT, **options: Any):
        super().__init__(model_string, system_prompt, backend_prefix="litellm", backend_spec=f"azure/{model_string}", **options)
