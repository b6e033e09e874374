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


class TextLoss(Module):
    """Evaluate a variable with an instruction (the system prompt); the evaluation is the loss."""

    def __init__(self, eval_system_prompt: Union[Variable, str], engine: Union[Engine, str, None] = None):
        self.eval_system_prompt = as_system_prompt(eval_system_prompt, "system prompt for the evaluation")
        if self.eval_system_prompt is None:
            raise InvalidInputError("TextLoss needs an evaluation instruction (a str or a Variable).")
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
        if not role_descriptions or len(set(role_descriptions)) != len(role_descriptions):
            raise InvalidInputError("MultiFieldEvaluation needs distinct, non-empty role_descriptions, one per field.")
        self.evaluation_instruction = as_system_prompt(evaluation_instruction, "evaluation instruction")
        self.role_descriptions = list(role_descriptions)
        self.engine = resolve_engine(engine, "MultiFieldEvaluation")
        self.system_prompt = as_system_prompt(system_prompt or P.EVALUATION_SYSTEM_PROMPT, "system prompt for the evaluation")
        lines = ["{instruction}"] + [P.MULTI_FIELD_LINE.format(name=r) for r in self.role_descriptions]
        self.formatted_llm_call = FormattedLLMCall(
            self.engine, "\n".join(lines), ["instruction", *self.role_descriptions], self.system_prompt
        )

    def forward(self, inputs: Union[Sequence[Variable], Sequence[Sequence[Variable]]]) -> Union[Variable, list[Variable]]:
        """Evaluate one list of field values (in role_descriptions order), or a batch of such lists."""
        inputs = list(inputs)
        single = bool(inputs) and isinstance(inputs[0], Variable)
        batch = [inputs] if single else [list(x) for x in inputs]
        mappings = []
        for values in batch:
            if len(values) != len(self.role_descriptions):
                raise InvalidInputError(
                    f"MultiFieldEvaluation expects {len(self.role_descriptions)} fields "
                    f"({self.role_descriptions}), got {len(values)}."
                )
            mappings.append({"instruction": self.evaluation_instruction, **dict(zip(self.role_descriptions, values))})
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
        self.engine = resolve_engine(engine, "MultiChoiceTestTime")
        self.tt_system_prompt = as_system_prompt(system_prompt or P.TEST_TIME_SYSTEM_PROMPT, "system prompt for the test-time evaluation")
        template = P.TEST_TIME_TEMPLATE.format(instruction=evaluation_instruction)
        self.formatted_llm_call = FormattedLLMCall(self.engine, template, ["question", "prediction"], self.tt_system_prompt)

    def forward(self, question: str, prediction: Variable) -> Variable:
        """Evaluate `prediction` as an answer to `question`."""
        question_variable = Variable(question, requires_grad=False, role_description="the multiple choice question")
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
        self.evaluation_instruction = as_system_prompt(evaluation_instruction, "evaluation instruction")
        if self.evaluation_instruction is None:
            raise InvalidInputError("ImageQALoss needs an evaluation instruction (a str or a Variable).")
        self.engine = resolve_engine(engine, "ImageQALoss")
        self.system_prompt = as_system_prompt(
            system_prompt or P.IMAGE_QA_SYSTEM_PROMPT, "system prompt for the evaluation"
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
