"""Sum and aggregate: join several variables into one; feedback on the total goes to every part."""
from __future__ import annotations

import builtins
from typing import Any, Sequence

from localgrad.autograd.function import BackwardStep, GradientTask
from localgrad.errors import InvalidInputError
from localgrad.variable import Variable


class SumBackward(BackwardStep):
    """Hands each piece of the total's feedback to every summed input, once, in order."""

    transparent = True

    def __init__(self, inputs: list[Variable]):
        self.inputs = inputs

    def tasks(self, output: Variable, objective: bool, engine: Any) -> list[GradientTask]:
        return [
            GradientTask(target=target, text=gradient.value, context=output.gradients_context.get(gradient))
            for target in self.inputs
            if target.requires_grad
            for gradient in output.gradients
        ]


def _checked(variables: Any) -> list[Variable]:
    if isinstance(variables, Variable) or not isinstance(variables, (list, tuple)):
        raise InvalidInputError(
            f"sum/aggregate takes a non-empty list of text Variables, got {type(variables).__name__}."
        )
    if not variables:
        raise InvalidInputError("sum/aggregate needs at least one Variable.")
    for v in variables:
        if not isinstance(v, Variable):
            raise InvalidInputError(f"sum/aggregate takes Variables, got {type(v).__name__}.")
        if v.is_image:
            raise InvalidInputError("sum/aggregate joins text variables; an image variable cannot be summed.")
    return list(variables)


def _join(variables: list[Variable], role: str, separator: str) -> Variable:
    total = Variable(
        separator.join(v.value for v in variables),
        predecessors=variables,
        requires_grad=builtins.any(v.requires_grad for v in variables),
        role_description=role,
    )
    total.set_grad_fn(SumBackward(total.predecessors))
    return total


def sum(variables: Sequence[Variable]) -> Variable:  # noqa: A001 - textgrad's name
    """One variable holding every input's text; its feedback reaches each input (e.g. a minibatch's losses)."""
    variables = _checked(variables)
    roles = ", ".join(dict.fromkeys(v.role_description for v in variables))
    return _join(variables, f"a combination of the following: {roles}", "\n")


def aggregate(variables: Sequence[Variable]) -> Variable:
    """Like `sum`, with a blank line between the parts, for feedback that compares the parts."""
    return _join(_checked(variables), "a collection of evaluations", "\n\n")


def llm_call(input_variable: Variable, engine: Any, response_role_description: str | None = None,
             system_prompt: Variable | None = None) -> Variable:
    """textgrad's functional LLM call: `LLMCall(engine, system_prompt)(input_variable, response_role_description)`."""
    from localgrad.autograd.llm_ops import DEFAULT_OUTPUT_ROLE, LLMCall

    return LLMCall(engine, system_prompt)(input_variable, response_role_description or DEFAULT_OUTPUT_ROLE)


def formatted_llm_call(inputs: dict[str, Variable], response_role_description: str, engine: Any, format_string: str,
                       fields: Any, system_prompt: Variable | None = None) -> Variable:
    """textgrad's functional formatted call: `FormattedLLMCall(engine, format_string, fields, system_prompt)(inputs, ...)`."""
    from localgrad.autograd.llm_ops import FormattedLLMCall

    return FormattedLLMCall(engine, format_string, fields, system_prompt)(inputs, response_role_description)
