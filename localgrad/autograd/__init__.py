"""Graph operations: LLM calls, formatted calls, string-based functions, sums."""
from localgrad.autograd.function import BackwardStep, Function, GradientTask, Module
from localgrad.autograd.functional import aggregate, sum
from localgrad.autograd.llm_ops import FormattedLLMCall, LLMCall
from localgrad.autograd.multimodal_ops import (
    MultimodalLLMCall,
    OrderedFieldsMultimodalLLMCall,
)
from localgrad.autograd.string_based_ops import StringBasedFunction

__all__ = [
    "BackwardStep",
    "Function",
    "GradientTask",
    "Module",
    "aggregate",
    "sum",
    "LLMCall",
    "FormattedLLMCall",
    "MultimodalLLMCall",
    "OrderedFieldsMultimodalLLMCall",
    "StringBasedFunction",
]
