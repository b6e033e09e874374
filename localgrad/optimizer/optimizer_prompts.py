"""textgrad's `textgrad.optimizer.optimizer_prompts` path: the optimizer's system prompt, in localgrad's words.

Pass your own `optimizer_system_prompt` to TGD with `{new_variable_start_tag}` and `{new_variable_end_tag}`
(or `{start_tag}`/`{end_tag}`) where the tags go. textgrad's other prompt fragments have no counterpart: localgrad
builds its update prompt from `localgrad.prompts.optimizer`.
"""
from localgrad.prompts.optimizer import OPTIMIZER_SYSTEM_PROMPT

__all__ = ["OPTIMIZER_SYSTEM_PROMPT"]
