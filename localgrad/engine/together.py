"""textgrad's `textgrad.engine.together`: ChatTogether, a Together AI model through LiteLLM (`localgrad[litellm]`, TOGETHER_API_KEY)."""
from __future__ import annotations

from typing import Any

from localgrad.engine.litellm import ProviderEngine
from localgrad.prompts.engines import DEFAULT_SYSTEM_PROMPT


class ChatTogether(ProviderEngine):
    """A Together AI model; connects on its first call."""

    provider = "together_ai"
    key_env = "TOGETHER_API_KEY"

    def __init__(self, model_string: str = "meta-llama/Llama-3-70b-chat-hf", system_prompt: str = DEFAULT_SYSTEM_PROMPT, **options: Any):
        super().__init__(model_string, system_prompt, **options)
