"""LLM calls as graph operations: forward sends one batch for all inputs; backward asks for feedback."""
from __future__ import annotations

import string
from dataclasses import replace
from typing import Any, Callable, Optional, Sequence, Union

from localgrad.autograd.function import BackwardStep, Function, GradientTask
from localgrad.engine import Engine, resolve_engine
from localgrad.errors import InvalidInputError
from localgrad.prompts import backward as P
from localgrad.prompts import in_context as PI
from localgrad.protocol import escape
from localgrad.request import ContentPart, ImageContent, Request
from localgrad.variable import Variable

DEFAULT_OUTPUT_ROLE = "response from the language model"


def as_system_prompt(system_prompt: Union[Variable, str, None], role: str) -> Optional[Variable]:
    """A system prompt as a Variable (strings become fixed, non-trainable variables)."""
    if isinstance(system_prompt, Variable) and system_prompt.is_image:
        raise InvalidInputError("A system prompt must be text; an image Variable cannot be one.")
    if system_prompt is None or isinstance(system_prompt, Variable):
        return system_prompt
    if isinstance(system_prompt, str):
        return Variable(system_prompt, requires_grad=False, role_description=role)
    raise InvalidInputError(f"A system prompt must be a str or a Variable, got {type(system_prompt).__name__}.")


def text_of(variable: Variable) -> str:
    """A variable's text, or a placeholder naming the image it holds."""
    return "[image]" if variable.is_image else variable.value


def content_parts(pieces: Sequence[Union[str, Variable]]) -> Union[str, tuple[ContentPart, ...]]:
    """Join text pieces and image variables into message content (plain text when there are no images)."""
    parts: list[ContentPart] = []
    for piece in pieces:
        if isinstance(piece, Variable) and piece.is_image:
            parts.append(ImageContent(piece.value, piece.mime_type))
        else:
            text = piece if isinstance(piece, str) else piece.value
            if parts and isinstance(parts[-1], str):
                parts[-1] += text
            else:
                parts.append(text)
    if all(isinstance(p, str) for p in parts):
        return "".join(parts)  # type: ignore[arg-type]
    return tuple(parts)


def feedback_text(output: Variable, objective: bool) -> str:
    """The objective paragraph: the output is the loss itself, or it carries feedback from later on (escaped)."""
    if objective and not output.gradients:
        return P.OBJECTIVE_IS_OUTPUT
    return P.OBJECTIVE_FROM_FEEDBACK.format(
        output_role=escape(output.role_description), output_feedback=escape(output.get_gradient_text())
    )


def feedback_prompt(source: str, conversation: str, objective: str, target: Variable) -> str:
    """The request for feedback on `target`; its value is shown (escaped) unless the conversation already shows it."""
    value = escape(text_of(target))
    shown = isinstance(target.value, str) and target.value.strip() and value in conversation
    role = escape(target.role_description)
    variable = "" if shown else P.VARIABLE_BLOCK.format(role=role, value=value)
    return P.FEEDBACK_REQUEST.format(source=source, conversation=conversation, variable=variable, objective=objective, role=role)


class LLMBackward(BackwardStep):
    """Feedback from an LLM call's output to each of its inputs that requires grad."""

    def __init__(self, system_prompt: Optional[str], user_content: Union[str, tuple[ContentPart, ...]], inputs: list[Variable]):
        self.system_prompt = system_prompt
        self.user_content = user_content
        self.inputs = inputs

    def tasks(self, output: Variable, objective: bool, engine: Engine) -> list[GradientTask]:
        conversation = P.LLM_CALL_CONVERSATION.format(
            system_prompt=escape(self.system_prompt or "(none)"),
            input=escape(_text(self.user_content)),
            output=escape(output.value),
        )
        objective_text = feedback_text(output, objective)
        images = _images(self.user_content)
        tasks = []
        for target in self.inputs:
            if not target.requires_grad:
                continue
            prompt = feedback_prompt(P.LLM_CALL_SOURCE, conversation, objective_text, target)
            user: Union[str, tuple[ContentPart, ...]] = (*images, prompt) if images else prompt
            request = Request.chat(user, system=P.BACKWARD_SYSTEM_PROMPT, sampling=engine.sampling)
            context = {"conversation": conversation, "output_role": output.role_description}
            tasks.append(GradientTask(target=target, request=request, context=context))
        return tasks


def _text(content: Union[str, tuple[ContentPart, ...]]) -> str:
    if isinstance(content, str):
        return content
    return "".join(p if isinstance(p, str) else "[image]" for p in content)


def _images(content: Union[str, tuple[ContentPart, ...]]) -> tuple[ImageContent, ...]:
    return () if isinstance(content, str) else tuple(p for p in content if isinstance(p, ImageContent))


class LLMCall(Function):
    """One LLM call per input: system prompt + the input's value; the response is a new Variable.

    Given a list of inputs, all calls go to the engine as one batch and a list comes back.
    """

    def __init__(self, engine: Union[Engine, str, None] = None, system_prompt: Union[Variable, str, None] = None):
        self.engine = resolve_engine(engine, "an LLM call")
        self.system_prompt = as_system_prompt(system_prompt, "system prompt for the language model")

    def forward(
        self,
        input_variable: Union[Variable, Sequence[Variable]],
        response_role_description: str = DEFAULT_OUTPUT_ROLE,
    ) -> Union[Variable, list[Variable]]:
        """The response to one input, or a list of responses (one batch) to a list of inputs."""
        return self.map_batch(input_variable, isinstance(input_variable, Variable), self._single_input, response_role_description)

    @staticmethod
    def _single_input(v: Variable) -> tuple[Union[str, tuple[ContentPart, ...]], list[Variable]]:
        if not isinstance(v, Variable):
            raise InvalidInputError(f"LLMCall takes Variables, got {type(v).__name__}.")
        return content_parts([v]), [v]

    def map_batch(
        self,
        inputs: Any,
        single: bool,
        build: Callable[[Any], tuple[Union[str, tuple[ContentPart, ...]], list[Variable]]],
        response_role: str,
    ) -> Union[Variable, list[Variable]]:
        """Build one call per input (all of `inputs`, or `inputs` itself when `single`), run them as one batch."""
        if not single and not isinstance(inputs, (list, tuple)):
            raise InvalidInputError(
                f"{type(self).__name__} takes one input or a list of inputs, got {type(inputs).__name__}."
            )
        if not isinstance(response_role, str) or not response_role.strip():
            raise InvalidInputError(f"response_role_description must be a non-empty str, got {response_role!r}.")
        batch = [inputs] if single else list(inputs)
        outputs = self.call_batch([build(x) for x in batch], response_role)
        return outputs[0] if single else outputs

    def call_batch(
        self, calls: list[tuple[Union[str, tuple[ContentPart, ...]], list[Variable]]], response_role: str
    ) -> list[Variable]:
        """Run (user content, input variables) pairs as one batch; wire each response into the graph."""
        system = self.system_prompt.value if self.system_prompt is not None else None
        requests = [Request.chat(content, system=system, sampling=self.engine.sampling) for content, _ in calls]
        completions = self.engine.generate_batch(requests)
        outputs = []
        for (content, inputs), completion in zip(calls, completions):
            predecessors = ([self.system_prompt] if self.system_prompt is not None else []) + inputs
            output = Variable(
                completion.text,
                predecessors=predecessors,
                requires_grad=True,
                role_description=response_role,
            )
            output.set_grad_fn(LLMBackward(system, content, predecessors))
            outputs.append(output)
        return outputs


class FormattedLLMCall(LLMCall):
    """An LLM call whose user message fills a template with several named input Variables."""

    def __init__(
        self,
        engine: Union[Engine, str, None],
        format_string: str,
        fields: Union[dict[str, Any], Sequence[str]],
        system_prompt: Union[Variable, str, None] = None,
    ):
        super().__init__(engine, system_prompt)
        if not isinstance(fields, (list, tuple, dict)) or not all(isinstance(f, str) and f for f in fields):
            raise InvalidInputError(f"fields must be a list of field names (non-empty strings), got {fields!r:.80}.")
        self.fields = list(fields)
        if len(set(self.fields)) != len(self.fields):
            raise InvalidInputError(f"fields must be distinct, got {self.fields}.")
        self.format_string = format_string
        self.template = parse_template(format_string, self.fields)

    def forward(
        self,
        inputs: Union[dict[str, Variable], Sequence[dict[str, Variable]]],
        response_role_description: str = DEFAULT_OUTPUT_ROLE,
    ) -> Union[Variable, list[Variable]]:
        """The response for one mapping of field names to Variables, or a batch for a list of mappings."""
        return self.map_batch(inputs, isinstance(inputs, dict), self._fill, response_role_description)

    def _fill(self, mapping: dict[str, Variable]) -> tuple[Union[str, tuple[ContentPart, ...]], list[Variable]]:
        if not isinstance(mapping, dict) or set(mapping) != set(self.fields):
            got = sorted(mapping) if isinstance(mapping, dict) else type(mapping).__name__
            raise InvalidInputError(f"FormattedLLMCall expects exactly the fields {self.fields}, got {got}.")
        for name, v in mapping.items():
            if not isinstance(v, Variable):
                raise InvalidInputError(f"Field {name!r} must be a Variable, got {type(v).__name__}.")
        pieces = [mapping[piece] if is_field else piece for piece, is_field in self.template]
        return content_parts(pieces), [mapping[f] for f in self.fields]



class InContextLLMBackward(LLMBackward):
    """LLMBackward whose feedback requests also show examples of good outputs."""

    def __init__(self, system_prompt: Optional[str], user_content: Union[str, tuple[ContentPart, ...]],
                 inputs: list[Variable], examples: Sequence[str]):
        super().__init__(system_prompt, user_content, inputs)
        self.examples = list(examples)

    def tasks(self, output: Variable, objective: bool, engine: Engine) -> list[GradientTask]:
        tasks = super().tasks(output, objective, engine)
        if not self.examples:
            return tasks
        block = PI.EXAMPLES_BLOCK.format(examples="\n".join(PI.EXAMPLE_LINE.format(example=e) for e in self.examples))
        for task in tasks:
            last = task.request.messages[-1]
            content = last.content + block if isinstance(last.content, str) else (*last.content, block)
            task.request = replace(task.request, messages=(*task.request.messages[:-1], replace(last, content=content)))
        return tasks


class LLMCall_with_in_context_examples(LLMCall):  # noqa: N801 - textgrad's name
    """textgrad's planning call: the response is the text inside <FINAL>...</FINAL> (all of it when the tags are
    missing), its feedback requests show `in_context_examples`, and it returns None when the answer says the
    plan needs no improvement (textgrad's stopping signal)."""

    def forward(
        self,
        input_variable: Variable,
        response_role_description: str = DEFAULT_OUTPUT_ROLE,
        in_context_examples: Optional[Sequence[str]] = None,
    ) -> Optional[Variable]:
        """The final part of the response to one input, or None when no improvement is needed."""
        output = super().forward(input_variable, response_role_description)
        start, end = PI.FINAL_TAGS
        text = output.value
        if start in text:
            text = text.split(start, 1)[1].split(end, 1)[0].strip()
        if PI.NO_IMPROVEMENT_NEEDED in text:
            return None
        output.value = text
        step = output.grad_fn
        output.set_grad_fn(InContextLLMBackward(step.system_prompt, step.user_content, step.inputs, in_context_examples or []))
        return output
def parse_template(format_string: str, fields: Sequence[str]) -> list[tuple[str, bool]]:
    """A format string as (text, False) and (field name, True) pieces, checking every placeholder names a field.

    Only plain `{name}` placeholders are filled (`{{` and `}}` are literal braces); the values are never
    parsed as templates, so braces in a variable's text are kept as they are.
    """
    if not isinstance(format_string, str):
        raise InvalidInputError(f"format_string must be a str, got {type(format_string).__name__}.")
    pieces: list[tuple[str, bool]] = []
    try:
        parsed = list(string.Formatter().parse(format_string))
    except ValueError as exc:
        raise InvalidInputError(
            f"format_string is not a valid template ({exc}); write literal braces as {{{{ and }}}}."
        ) from exc
    for text, name, spec, conversion in parsed:
        if text:
            pieces.append((text, False))
        if name is None:
            continue
        if name not in fields or spec or conversion:
            placeholder = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise InvalidInputError(
                f"format_string refers to {placeholder}, which is not among the fields {list(fields)}. "
                "Write each placeholder as {name} with a field's name, and literal braces as {{ and }}."
            )
        pieces.append((name, True))
    return pieces

