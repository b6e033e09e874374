"""textgrad's `textgrad.engine.groq`: ChatGroq, a Groq model through LiteLLM (`localgrad[litellm]`, GROQ_API_KEY)."""
from __future__ import annotations

from typing import Any

from localgrad.engine.litellm import ProviderEngine
from localgrad.prompts.engines import DEFAULT_SYSTEM_PROMPT


class ChatGroq(ProviderEngine):
    """A Groq model; connects on its first call."""

    provider = "groq"
    key_env = "GROQ_API_KEY"

    def __init__(self, model_string: str = "llama3-70b-8192", system_prompt: str = DEFAULT_SYSTEM_PROMPT, **options: Any):
        super().__init__(model_string, system_prompt, **options)
