"""textgrad's `textgrad.engine.anthropic`: ChatAnthropic on localgrad's Anthropic backend (`localgrad[anthropic]`)."""
from __future__ import annotations

from typing import Any

from localgrad.engine.named import NamedEngine, require_key
from localgrad.prompts.engines import DEFAULT_SYSTEM_PROMPT


class ChatAnthropic(NamedEngine):
    """A Claude model; needs ANTHROPIC_API_KEY (or api_key=...) and connects on its first call."""

    SYSTEM_PROMPT = DEFAULT_SYSTEM_PROMPT

    def __init__(
        self,
        model_string: str = "claude-3-opus-20240229",
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        is_multimodal: bool = False,
        **options: Any,
    ):
        require_key("ANTHROPIC_API_KEY", options, "Anthropic", model_string)
        super().__init__(model_string, system_prompt, is_multimodal, backend_prefix="anthropic", **options)
