"""textgrad's `textgrad.engine_experimental`: LiteLLMEngine and OpenAIEngine, backed by localgrad's batched engines."""
from localgrad.engine_experimental.litellm import LiteLLMEngine
from localgrad.engine_experimental.openai import OpenAIEngine

__all__ = ["LiteLLMEngine", "OpenAIEngine"]
