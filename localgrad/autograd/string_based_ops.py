"""A Python function as a graph node: the forward runs the function; the backward asks an LLM
how each input affected the output and how it should change."""
from __future__ import annotations

import inspect
import numbers
from typing import Any, Callable, Sequence, Union

from localgrad.autograd.function import BackwardStep, Function, GradientTask
from localgrad.autograd.llm_ops import feedback_prompt, feedback_text, text_of
from localgrad.engine import Engine
from localgrad.errors import InvalidInputError
from localgrad.prompts import backward as P
from localgrad.protocol import escape
from localgrad.request import Request
from localgrad.variable import Variable


class StringFunctionBackward(BackwardStep):
    """Feedback from a string-based function's output to each input that requires grad."""

    def __init__(self, purpose: str, inputs: dict[str, Variable]):
        self.purpose = purpose
        self.inputs = inputs

    def tasks(self, output: Variable, objective: bool, engine: Engine) -> list[GradientTask]:
        listing = "\n".join(
            P.FUNCTION_INPUT_LINE.format(name=escape(name), role=escape(v.role_description), value=escape(text_of(v)))
            for name, v in self.inputs.items()
        )
        conversation = P.FUNCTION_CONVERSATION.format(purpose=escape(self.purpose), inputs=listing, output=escape(output.value))
        objective_text = feedback_text(output, objective)
        tasks = []
        for target in dict.fromkeys(self.inputs.values()):
            if not target.requires_grad:
                continue
            prompt = feedback_prompt(P.FUNCTION_SOURCE, conversation, objective_text, target)
            request = Request.chat(prompt, system=P.BACKWARD_SYSTEM_PROMPT, sampling=engine.sampling)
            tasks.append(GradientTask(target, request, context={"conversation": conversation, "output_role": output.role_description}))
        return tasks


class StringBasedFunction(Function):
    """Wrap `fn(**inputs) -> str` (e.g. an exact-match metric) so feedback flows through it."""

    def __init__(self, fn: Callable[..., Any], function_purpose: str):
        if not callable(fn):
            raise InvalidInputError(f"StringBasedFunction needs a callable, got {type(fn).__name__}.")
        if not isinstance(function_purpose, str) or not function_purpose.strip():
            raise InvalidInputError("StringBasedFunction needs a non-empty function_purpose.")
        self.fn = fn
        self.function_purpose = function_purpose

    def forward(
        self,
        inputs: Union[dict[str, Variable], Sequence[dict[str, Variable]]],
        response_role_description: str | None = None,
    ) -> Union[Variable, list[Variable]]:
        """Apply the function to one mapping of argument names to Variables, or to each of a list."""
        single = isinstance(inputs, dict)
        if not single and not isinstance(inputs, (list, tuple)):
            raise InvalidInputError(
                f"StringBasedFunction takes a dict of argument names to Variables, or a list of them; got {type(inputs).__name__}."
            )
        if response_role_description is not None and (
            not isinstance(response_role_description, str) or not response_role_description.strip()
        ):
            raise InvalidInputError(f"response_role_description must be a non-empty str or None, got {response_role_description!r}.")
        batch = [inputs] if single else list(inputs)
        role = response_role_description or f"output of the function: {self.function_purpose}"
        outputs = [self._apply(mapping, role) for mapping in batch]
        return outputs[0] if single else outputs

    def _apply(self, mapping: dict[str, Variable], role: str) -> Variable:
        if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, Variable) for k, v in mapping.items()):
            raise InvalidInputError("StringBasedFunction inputs must map argument names to Variables.")
        try:
            inspect.signature(self.fn).bind(**mapping)
        except TypeError as exc:
            raise InvalidInputError(
                f"The function cannot take the arguments {sorted(mapping)}: {exc}. Pass a dict whose keys are its parameter names."
            ) from exc
        except ValueError:  # no signature to check (some builtins): the call itself will tell
            pass
        result = self.fn(**mapping)
        if not isinstance(result, (str, numbers.Number, Variable)) or (isinstance(result, Variable) and result.is_image):
            raise InvalidInputError(
                f"The function returned {type(result).__name__}; a string-based function must return text (a str), "
                "a number or a text Variable."
            )
        output = Variable(
            result.value if isinstance(result, Variable) else str(result),
            predecessors=list(mapping.values()),
            role_description=role,
        )
        output.set_grad_fn(StringFunctionBackward(self.function_purpose, dict(mapping)))
        return output
