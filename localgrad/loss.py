"""Natural-language losses: an LLM evaluates a variable, and its evaluation is the loss to backpropagate."""
from __future__ import annotations

from typing import Sequence, Union

from localgrad.autograd.function import Module
from localgrad.autograd.llm_ops import FormattedLLMCall, LLMCall, as_system_prompt
from localgrad.autograd.multimodal_ops import OrderedFieldsMultimodalLLMCall
from localgrad.engine import Engine, resolve_engine
from localgrad.errors import InvalidInputError, OutputParseError
from localgrad.prompts import losses as P
from localgrad.variable import Variable


def instruction_variable(instruction: Union[Variable, str], loss: str, role: str) -> Variable:
    """An evaluation instruction as a Variable, refusing a missing or blank one (the loss would judge nothing)."""
    variable = as_system_prompt(instruction, role) if isinstance(instruction, (str, Variable)) else None
    if variable is None or variable.is_image or not variable.value.strip():
        raise InvalidInputError(
            f"{loss} needs an evaluation instruction: a non-empty str or text Variable saying how to judge, got {instruction!r:.80}."
        )
    return variable


def default_if_none(system_prompt: Union[Variable, str, None], default: str) -> Union[Variable, str]:
    """The given system prompt, or the loss's default when it is None or ''."""
    return default if system_prompt is None or (isinstance(system_prompt, str) and not system_prompt) else system_prompt


def _literal(text: str) -> str:
    """Text put into a template as it is: its braces are not placeholders."""
    return text.replace("{", "{{").replace("}", "}}")


class TextLoss(Module):
    """Evaluate a variable with an instruction (the system prompt); the evaluation is the loss."""

    def __init__(self, eval_system_prompt: Union[Variable, str], engine: Union[Engine, str, None] = None):
        self.eval_system_prompt = instruction_variable(eval_system_prompt, "TextLoss", "system prompt for the evaluation")
        self.engine = resolve_engine(engine, "TextLoss")
        self.llm_call = LLMCall(self.engine, self.eval_system_prompt)

    def forward(self, instance: Union[Variable, Sequence[Variable]]) -> Union[Variable, list[Variable]]:
        """The evaluation of one variable, or of each of a list (one batch)."""
        return self.llm_call(instance, response_role_description="evaluation of the response")


class MultiFieldEvaluation(Module):
    """Evaluate several named fields together (e.g. a prediction against the ground truth)."""

    def __init__(
        self,
        evaluation_instruction: Union[Variable, str],
        role_descriptions: Sequence[str],
        engine: Union[Engine, str, None] = None,
        system_prompt: Union[Variable, str, None] = None,
    ):
        roles = role_descriptions
        if not isinstance(roles, (list, tuple)) or not roles or not all(isinstance(r, str) and r.strip() for r in roles):
            raise InvalidInputError(
                f"MultiFieldEvaluation needs role_descriptions as a non-empty list of strings, one per field; got {roles!r:.80}."
            )
        if len(set(roles)) != len(roles):
            raise InvalidInputError(f"MultiFieldEvaluation needs distinct role_descriptions, got {list(roles)}.")
        self.evaluation_instruction = instruction_variable(evaluation_instruction, "MultiFieldEvaluation", "evaluation instruction")
        self.role_descriptions = list(roles)
        self.engine = resolve_engine(engine, "MultiFieldEvaluation")
        self.system_prompt = as_system_prompt(default_if_none(system_prompt, P.EVALUATION_SYSTEM_PROMPT), "system prompt for the evaluation")
        # Fields get generated names, so a role description is shown as it is written (braces and all).
        lines = ["{instruction}"] + [
            P.MULTI_FIELD_LINE.format(name=_literal(role), field=f"field{i}") for i, role in enumerate(self.role_descriptions)
        ]
        self.fields = [f"field{i}" for i in range(len(self.role_descriptions))]
        self.formatted_llm_call = FormattedLLMCall(
            self.engine, "\n".join(lines), ["instruction", *self.fields], self.system_prompt
        )

    def forward(self, inputs: Union[Sequence[Variable], Sequence[Sequence[Variable]]]) -> Union[Variable, list[Variable]]:
        """Evaluate one list of field values (in role_descriptions order), or a batch of such lists."""
        if not isinstance(inputs, (list, tuple)):
            raise InvalidInputError(
                f"MultiFieldEvaluation takes a list of Variables (one per role description), or a list of such lists; "
                f"got {type(inputs).__name__}."
            )
        single = bool(inputs) and isinstance(inputs[0], Variable)
        batch = [inputs] if single else list(inputs)
        mappings = []
        for values in batch:
            if not isinstance(values, (list, tuple)) or len(values) != len(self.role_descriptions):
                got = len(values) if isinstance(values, (list, tuple)) else type(values).__name__
                raise InvalidInputError(
                    f"MultiFieldEvaluation expects {len(self.role_descriptions)} fields "
                    f"({self.role_descriptions}), got {got}."
                )
            mappings.append({"instruction": self.evaluation_instruction, **dict(zip(self.fields, values))})
        outputs = self.formatted_llm_call(mappings, response_role_description="evaluation of a prediction")
        return outputs[0] if single else outputs


class MultiChoiceTestTime(Module):
    """Test-time loss for a multiple-choice answer: critique the reasoning without solving the question."""

    def __init__(
        self,
        evaluation_instruction: str,
        engine: Union[Engine, str, None] = None,
        system_prompt: Union[Variable, str, None] = None,
    ):
        if not isinstance(evaluation_instruction, str) or not evaluation_instruction.strip():
            raise InvalidInputError(
                f"MultiChoiceTestTime needs a non-empty evaluation_instruction (a str), got {evaluation_instruction!r:.80}."
            )
        self.engine = resolve_engine(engine, "MultiChoiceTestTime")
        self.tt_system_prompt = as_system_prompt(
            default_if_none(system_prompt, P.TEST_TIME_SYSTEM_PROMPT), "system prompt for the test-time evaluation"
        )
        template = P.TEST_TIME_TEMPLATE.format(instruction=_literal(evaluation_instruction))
        self.formatted_llm_call = FormattedLLMCall(self.engine, template, ["question", "prediction"], self.tt_system_prompt)

    def forward(self, question: Union[str, Variable], prediction: Variable) -> Variable:
        """Evaluate `prediction` (a Variable) as an answer to `question` (a str or a text Variable)."""
        if not isinstance(prediction, Variable) or prediction.is_image:
            raise InvalidInputError(
                f"MultiChoiceTestTime needs the prediction as a text Variable, got {prediction!r:.80}. "
                "Wrap a plain answer: Variable(answer, role_description=...)."
            )
        if isinstance(question, Variable):
            question_variable = question
        elif isinstance(question, str):
            question_variable = Variable(question, requires_grad=False, role_description="the multiple choice question")
        else:
            raise InvalidInputError(f"MultiChoiceTestTime needs the question as a str or a Variable, got {type(question).__name__}.")
        return self.formatted_llm_call(
            {"question": question_variable, "prediction": prediction},
            response_role_description=f"evaluation of the {prediction.get_role_description()}",
        )


class ImageQALoss(Module):
    """Evaluate an answer to a question about an image; the (multimodal) engine sees the image itself."""

    FIELDS = ["Evaluation Instruction", "Question", "Image", "Answer"]

    def __init__(
        self,
        evaluation_instruction: Union[Variable, str],
        engine: Union[Engine, str, None] = None,
        system_prompt: Union[Variable, str, None] = None,
    ):
        self.evaluation_instruction = instruction_variable(evaluation_instruction, "ImageQALoss", "evaluation instruction")
        self.engine = resolve_engine(engine, "ImageQALoss")
        self.system_prompt = as_system_prompt(
            default_if_none(system_prompt, P.IMAGE_QA_SYSTEM_PROMPT), "system prompt for the evaluation"
        )
        self.multimodal_llm_call = OrderedFieldsMultimodalLLMCall(self.engine, self.FIELDS, self.system_prompt)

    def forward(self, image: Variable, question: Union[Variable, str], response: Variable) -> Variable:
        """The evaluation of `response` as the answer to `question` about `image`."""
        if not isinstance(image, Variable) or not image.is_image:
            raise InvalidInputError(
                "ImageQALoss needs the image as an image Variable, "
                "e.g. Variable(image_path=..., requires_grad=False, role_description=...)."
            )
        if isinstance(question, str):
            question = Variable(question, requires_grad=False, role_description="question about the image")
        if not isinstance(question, Variable) or not isinstance(response, Variable):
            raise InvalidInputError("ImageQALoss needs the question (a str or Variable) and the response as Variables.")
        values = [self.evaluation_instruction, question, image, response]
        role = f"evaluation of the {response.get_role_description()}"
        return self.multimodal_llm_call(dict(zip(self.FIELDS, values)), response_role_description=role)


class MultiFieldTokenParsedEvaluation(MultiFieldEvaluation):
    """MultiFieldEvaluation whose verdict sits between `parse_tags` (e.g. <ACCURACY> 1 </ACCURACY>); read it with `parse_output`."""

    def __init__(
        self,
        evaluation_instruction: Union[Variable, str],
        role_descriptions: Sequence[str],
        engine: Union[Engine, str, None] = None,
        system_prompt: Union[Variable, str, None] = None,
        parse_tags: Sequence[str] = ("<ACCURACY>", "</ACCURACY>"),
    ):
        super().__init__(evaluation_instruction, role_descriptions, engine, system_prompt)
        if len(parse_tags) != 2 or not all(isinstance(t, str) and t for t in parse_tags):
            raise InvalidInputError("parse_tags must be two non-empty strings: [start_tag, end_tag].")
        self.parse_tags = list(parse_tags)

    def parse_output(self, response: Variable) -> str:
        """The text between the parse tags of an evaluation; an OutputParseError (an IndexError) when they are missing."""
        start, end = self.parse_tags
        text = str(response.value)
        if start not in text:
            raise OutputParseError(f"The evaluation has no {start}...{end} verdict.", raw_output=text)
        return text.split(start, 1)[1].split(end, 1)[0].strip()
