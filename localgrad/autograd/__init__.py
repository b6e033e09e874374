"""Graph operations: LLM calls, formatted calls, string-based functions, sums."""
from localgrad.autograd.function import (
    BackwardContext,
    BackwardStep,
    Function,
    GradientTask,
    Module,
)
from localgrad.autograd.functional import aggregate, sum
from localgrad.autograd.llm_ops import (
    FormattedLLMCall,
    LLMCall,
    LLMCall_with_in_context_examples,
)
from localgrad.autograd.multimodal_ops import (
    MultimodalLLMCall,
    OrderedFieldsMultimodalLLMCall,
)
from localgrad.autograd.string_based_ops import StringBasedFunction

__all__ = [
    "BackwardContext",
    "BackwardStep",
    "Function",
    "GradientTask",
    "Module",
    "aggregate",
    "sum",
    "LLMCall",
    "FormattedLLMCall",
    "LLMCall_with_in_context_examples",
    "MultimodalLLMCall",
    "OrderedFieldsMultimodalLLMCall",
    "StringBasedFunction",
]
