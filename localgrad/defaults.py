"""textgrad's `textgrad.defaults`: the default role descriptions of system prompts, queries and responses."""
from localgrad.autograd.llm_ops import DEFAULT_OUTPUT_ROLE

SYSTEM_PROMPT_DEFAULT_ROLE = "system prompt for the language model"
VARIABLE_INPUT_DEFAULT_ROLE = "query to the language model"
VARIABLE_OUTPUT_DEFAULT_ROLE = DEFAULT_OUTPUT_ROLE
