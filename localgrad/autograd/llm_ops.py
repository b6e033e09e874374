"""LLM calls as graph operations: forward sends one batch for all inputs; backward asks for feedback."""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

from localgrad.autograd.function import BackwardStep, Function, GradientTask
from localgrad.engine import Engine, resolve_engine
from localgrad.errors import InvalidInputError
from localgrad.prompts import backward as P
from localgrad.protocol import escape
from localgrad.request import ContentPart, ImageContent, Request
from localgrad.variable import Variable

DEFAULT_OUTPUT_ROLE = "response from the language model"


def as_system_prompt(system_prompt: Union[Variable, str, None], role: str) -> Optional[Variable]:
    """A system prompt as a Variable (strings become fixed, non-trainable variables)."""
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
        self.format_string = format_string
        self.fields = list(fields)
        try:
            format_string.format(**{f: "" for f in self.fields})
        except (KeyError, IndexError) as exc:
            raise InvalidInputError(
                f"format_string refers to {exc} which is not among the fields {self.fields}."
            ) from exc

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
        marker = "\x00{}\x00"
        filled = self.format_string.format(**{f: marker.format(f) for f in self.fields})
        pieces: list[Union[str, Variable]] = []
        for i, chunk in enumerate(filled.split("\x00")):
            pieces.append(mapping[chunk] if i % 2 == 1 else chunk)
        return content_parts(pieces), [mapping[f] for f in self.fields]

