"""textgrad's `textgrad.autograd.llm_backward_prompts` path: the feedback model's system prompt, in localgrad's
words. localgrad's other feedback prompt pieces are in `localgrad.prompts.backward`."""
from localgrad.prompts.backward import BACKWARD_SYSTEM_PROMPT

__all__ = ["BACKWARD_SYSTEM_PROMPT"]
