"""localgrad: textual gradients (TextGrad) on your own hardware.

`import localgrad as tg` gives textgrad's API: Variable, BlackboxLLM, TextLoss, TGD,
set_backward_engine, get_engine, sum; engines run local models in batches.
textgrad's module paths resolve too (`localgrad.engine.openai`, `localgrad.tasks`, ...).
"""
import logging

from localgrad import config
from localgrad.autograd import (
    FormattedLLMCall,
    LLMCall,
    MultimodalLLMCall,
    OrderedFieldsMultimodalLLMCall,
    StringBasedFunction,
    aggregate,
    sum,
)
from localgrad.engine import (
    Engine,
    EngineLM,
    SingletonBackwardEngine,
    get_backward_engine,
    get_engine,
    set_backward_engine,
)
from localgrad.errors import LocalgradError
from localgrad.execution import backward
from localgrad.loss import (
    ImageQALoss,
    MultiChoiceTestTime,
    MultiFieldEvaluation,
    TextLoss,
)
from localgrad.model import BlackboxLLM
from localgrad.optimizer import TGD, TextualGradientDescent
from localgrad.variable import Variable

__version__ = "0.1.0"

logger = logging.getLogger("localgrad")
"""textgrad's `tg.logger`: localgrad's logger. Nothing is written to disk unless you add a handler."""

singleton_backward_engine = SingletonBackwardEngine()

__all__ = [
    "Variable",
    "BlackboxLLM",
    "LLMCall",
    "FormattedLLMCall",
    "MultimodalLLMCall",
    "OrderedFieldsMultimodalLLMCall",
    "StringBasedFunction",
    "TextLoss",
    "MultiFieldEvaluation",
    "MultiChoiceTestTime",
    "ImageQALoss",
    "TGD",
    "TextualGradientDescent",
    "Engine",
    "EngineLM",
    "get_engine",
    "set_backward_engine",
    "get_backward_engine",
    "SingletonBackwardEngine",
    "singleton_backward_engine",
    "logger",
    "backward",
    "sum",
    "aggregate",
    "LocalgradError",
    "config",
]
