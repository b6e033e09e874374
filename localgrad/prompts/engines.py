"""Default system prompts of textgrad's engine classes (ChatOpenAI, LiteLLMEngine, ...), in localgrad's words."""

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant. Answer carefully and concisely."
