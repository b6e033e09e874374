"""BlackboxLLM: a language model as a module, with its system prompt as the trainable parameter."""
from __future__ import annotations

from typing import Sequence, Union

from localgrad.autograd.function import Module
from localgrad.autograd.llm_ops import LLMCall, as_system_prompt
from localgrad.engine import Engine, resolve_engine
from localgrad.variable import Variable


class BlackboxLLM(Module):
    """Call an engine with a system prompt; pass a list of inputs to run them as one batch."""

    def __init__(self, engine: Union[Engine, str, None] = None, system_prompt: Union[Variable, str, None] = None):
        self.engine = resolve_engine(engine, "BlackboxLLM")
        self.system_prompt = as_system_prompt(system_prompt, "system prompt for the language model")
        self.llm_call = LLMCall(self.engine, self.system_prompt)

    def parameters(self) -> list[Variable]:
        """The system prompt, when there is one."""
        return [self.system_prompt] if self.system_prompt is not None else []

    def forward(self, x: Union[Variable, Sequence[Variable]]) -> Union[Variable, list[Variable]]:
        """The model's response to one input, or a list of responses to a list of inputs."""
        return self.llm_call(x)
