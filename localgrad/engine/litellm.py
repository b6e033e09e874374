"""LiteLLM-backed engines: textgrad's LiteLLMEngine, and ProviderEngine, the base of textgrad's provider classes
(ChatGemini, ChatTogether, ChatCohere, ChatGroq, ChatBedrockEngine), which reach their provider through LiteLLM
(`pip install 'localgrad[litellm]'`) and connect on their first call."""
from __future__ import annotations

import os
from typing import Any, ClassVar

from localgrad.engine.named import NamedEngine, require_key
from localgrad.engine_experimental.litellm import LiteLLMEngine
from localgrad.prompts.engines import DEFAULT_SYSTEM_PROMPT

__all__ = ["LiteLLMEngine", "ProviderEngine"]


class ProviderEngine(NamedEngine):
    """A model of one provider through LiteLLM (`<provider>/<model_string>`); the key comes from `key_env`."""

    provider: ClassVar[str]
    key_env: ClassVar[str | None] = None
    DEFAULT_SYSTEM_PROMPT = DEFAULT_SYSTEM_PROMPT

    def __init__(self, model_string: str, system_prompt: str = DEFAULT_SYSTEM_PROMPT, is_multimodal: bool = False,
                 **options: Any):
        if self.key_env:
            require_key(self.key_env, options, type(self).__name__, model_string)
            options.setdefault("api_key", os.environ.get(self.key_env))
        super().__init__(model_string, system_prompt, is_multimodal, backend_prefix="litellm",
                         backend_spec=f"{self.provider}/{model_string}", **options)
