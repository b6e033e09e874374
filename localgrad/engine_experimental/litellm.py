"""textgrad's `textgrad.engine_experimental.litellm`: LiteLLMEngine on localgrad's LiteLLM backend (`localgrad[litellm]`)."""
from __future__ import annotations

from typing import Any

from localgrad.engine.named import NamedEngine
from localgrad.prompts.engines import DEFAULT_SYSTEM_PROMPT


class LiteLLMEngine(NamedEngine):
    """Any model LiteLLM reaches ('<provider>/<model>'); keys come from the provider's own environment variables.

    `cache` is False, True (localgrad's cache directory) or a `diskcache.Cache`; it connects on its first call.
    """

    DEFAULT_SYSTEM_PROMPT = DEFAULT_SYSTEM_PROMPT

    def __init__(
        self,
        model_string: str,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        is_multimodal: bool = True,
        cache: Any = False,
        **options: Any,
    ):
        super().__init__(model_string, system_prompt, is_multimodal, backend_prefix="litellm", cache=cache, **options)

    def lite_llm_generate(self, content: Any, system_prompt: str | None = None, **kwargs: Any) -> str:
        """One call (textgrad's helper); it goes through the engine's batched backend."""
        return self.generate(content, system_prompt, **kwargs)
