"""textgrad's `textgrad.engine_experimental.openai`: OpenAIEngine and OpenAICompatibleEngine."""
from __future__ import annotations

from typing import Any

from localgrad.engine.local_model_openai_api import client_settings
from localgrad.engine.named import NamedEngine, require_key
from localgrad.prompts.engines import DEFAULT_SYSTEM_PROMPT


class OpenAIEngine(NamedEngine):
    """An OpenAI chat model (`localgrad[openai]`, OPENAI_API_KEY); `cache` as for LiteLLMEngine."""

    DEFAULT_SYSTEM_PROMPT = DEFAULT_SYSTEM_PROMPT

    def __init__(
        self,
        model_string: str,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        is_multimodal: bool = False,
        cache: Any = False,
        **options: Any,
    ):
        require_key("OPENAI_API_KEY", options, "OpenAI", model_string)
        super().__init__(model_string, system_prompt, is_multimodal, backend_prefix="openai", cache=cache, **options)


class OpenAICompatibleEngine(NamedEngine):
    """A model on the server an OpenAI client points at, on the batched openai-compatible backend."""

    DEFAULT_SYSTEM_PROMPT = DEFAULT_SYSTEM_PROMPT

    def __init__(
        self,
        client: Any,
        model_string: str,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        is_multimodal: bool = False,
        cache: Any = False,
        **options: Any,
    ):
        settings = client_settings(client)
        options.setdefault("api_key", settings["api_key"])
        super().__init__(model_string, system_prompt, is_multimodal, backend_prefix="openai-compatible",
                         backend_spec=f"{settings['base_url']}#{model_string}", cache=cache, **options)
        self.client = client
