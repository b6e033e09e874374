"""textgrad's `textgrad.engine.gemini`: ChatGemini, a Gemini model through LiteLLM (`localgrad[litellm]`, GOOGLE_API_KEY)."""
from __future__ import annotations

from typing import Any

from localgrad.engine.litellm import ProviderEngine
from localgrad.prompts.engines import DEFAULT_SYSTEM_PROMPT


class ChatGemini(ProviderEngine):
    """A Gemini model; connects on its first call."""

    provider = "gemini"
    key_env = "GOOGLE_API_KEY"

    def __init__(self, model_string: str = "gemini-pro", system_prompt: str = DEFAULT_SYSTEM_PROMPT, **options: Any):
        super().__init__(model_string, system_prompt, **options)
