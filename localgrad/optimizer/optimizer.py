"""textgrad's `textgrad.optimizer.optimizer`: Optimizer, TextualGradientDescent, the momentum variant and
`get_gradient_and_context_text`, on localgrad's batched TGD."""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

from localgrad.optimizer.tgd import Optimizer, TextualGradientDescent
from localgrad.prompts import optimizer as P
from localgrad.variable import Variable

__all__ = ["Optimizer", "TextualGradientDescent", "TextualGradientDescentwithMomentum", "get_gradient_and_context_text"]


def get_gradient_and_context_text(variable: Variable) -> str:
    """A variable's feedback, each piece with the conversation it came from when that is known, in order."""
    pieces = []
    for gradient in variable.gradients:
        context = variable.gradients_context.get(gradient) or {}
        conversation = context.get("conversation") or context.get("context")  # localgrad's key, or textgrad's
        if conversation:
            pieces.append(P.FEEDBACK_WITH_CONTEXT.format(feedback=gradient.value, context=conversation))
        else:
            pieces.append(gradient.value)
    return "\n".join(pieces)


class TextualGradientDescentwithMomentum(TextualGradientDescent):
    """TGD that also shows each parameter's last `momentum_window` values and their feedback (its momentum)."""

    def __init__(
        self,
        engine: Union[str, Any, None],
        parameters: Sequence[Variable],
        momentum_window: int = 0,
        constraints: Optional[Sequence[str]] = None,
        new_variable_tags: Optional[Sequence[str]] = None,
        in_context_examples: Optional[Sequence[str]] = None,
        optimizer_system_prompt: str = P.OPTIMIZER_SYSTEM_PROMPT,
        **options: Any,
    ):
        super().__init__(
            parameters,
            engine=engine,
            constraints=constraints,
            new_variable_tags=new_variable_tags,
            optimizer_system_prompt=optimizer_system_prompt,
            in_context_examples=in_context_examples,
            gradient_memory=momentum_window,
            **options,
        )
        self.momentum_window = momentum_window
