"""textgrad's `textgrad.engine.bedrock`: ChatBedrockEngine, an AWS Bedrock model through LiteLLM (`localgrad[litellm]`).

LiteLLM reads the AWS credentials from the environment; the boto client passed in is kept as `bedrock_client`.
"""
from __future__ import annotations

from typing import Any

from localgrad.engine.litellm import ProviderEngine
from localgrad.prompts.engines import DEFAULT_SYSTEM_PROMPT


class ChatBedrockEngine(ProviderEngine):
    """A Bedrock model; connects on its first call."""

    provider = "bedrock"

    def __init__(
        self,
        bedrock_client: Any = None,
        model_string: str = "anthropic.claude-3-sonnet-20240229-v1:0",
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        is_multimodal: bool = False,
        **options: Any,
    ):
        super().__init__(model_string, system_prompt, is_multimodal, **options)
        self.bedrock_client = bedrock_client
