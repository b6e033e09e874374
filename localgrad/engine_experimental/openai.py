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

    def validate(self) -> None:
        """Raise unless OPENAI_API_KEY is set (checked when the engine is made, too)."""
        require_key("OPENAI_API_KEY", {}, "OpenAI", self.model_string)

    def openai_call(self, user_content: Any, system_prompt: str | None, temperature: float = 0.0,
                    max_tokens: int = 2000, top_p: float = 0.99) -> str:
        """One chat call (textgrad's helper); it goes through the engine's batched backend."""
        return self.generate(user_content, system_prompt, temperature=temperature, max_tokens=max_tokens, top_p=top_p)


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
