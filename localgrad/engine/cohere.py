"""textgrad's `textgrad.engine.cohere`: ChatCohere, a Cohere model through LiteLLM (`localgrad[litellm]`, COHERE_API_KEY)."""
from __future__ import annotations

from typing import Any

from localgrad.engine.litellm import ProviderEngine
from localgrad.prompts.engines import DEFAULT_SYSTEM_PROMPT


class ChatCohere(ProviderEngine):
    """A Cohere model; connects on its first call."""

    provider = "cohere"
    key_env = "COHERE_API_KEY"

    def __init__(self, model_string: str = "command-r-plus", system_prompt: str = DEFAULT_SYSTEM_PROMPT, **options: Any):
        super().__init__(model_string, system_prompt, **options)
