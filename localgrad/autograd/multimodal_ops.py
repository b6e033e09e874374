"""LLM calls on images and text: an ordered list of image and text Variables in, a response Variable out.

These are `LLMCall`s whose user message mixes image and text parts, so a batch of them is one
engine call and their backward (`LLMBackward`) sends the same images along with each feedback request.
"""
from __future__ import annotations

from typing import Sequence, Union

from localgrad.autograd.llm_ops import DEFAULT_OUTPUT_ROLE, LLMCall, content_parts
from localgrad.engine import Engine
from localgrad.errors import InvalidInputError, UnsupportedRequestError
from localgrad.prompts import multimodal as PM
from localgrad.request import ContentPart
from localgrad.variable import Variable

Content = Union[str, tuple[ContentPart, ...]]


def _pieces(items: Sequence[Union[str, Variable]]) -> list[Union[str, Variable]]:
    """Items in order, with a line break between two neighbouring text items so they do not run together."""
    pieces: list[Union[str, Variable]] = []
    for item in items:
        if pieces and not _is_image(pieces[-1]) and not _is_image(item):
            pieces.append("\n")
        pieces.append(item)
    return pieces


def _is_image(item: Union[str, Variable]) -> bool:
    return isinstance(item, Variable) and item.is_image


class MultimodalLLMCall(LLMCall):
    """An LLM call on an ordered list of image and text Variables (a list of such lists runs as one batch)."""

    def __init__(self, engine: Union[Engine, str, None] = None, system_prompt: Union[Variable, str, None] = None):
        super().__init__(engine, system_prompt)
        if not self.engine.backend.supports_images:
            raise UnsupportedRequestError(
                f"The engine {self.engine.backend.name!r} is text-only, so it cannot run a multimodal call. "
                "Use a multimodal engine, e.g. 'transformers-vlm:<local VLM directory>', 'vllm:<VLM model>' "
                "or 'openai-compatible:<url>#<VLM model>'."
            )

    def forward(
        self,
        inputs: Union[Sequence[Variable], Sequence[Sequence[Variable]]],
        response_role_description: str = DEFAULT_OUTPUT_ROLE,
    ) -> Union[Variable, list[Variable]]:
        """The response to one list of image/text Variables, or a list of responses (one batch) to a list of lists."""
        if isinstance(inputs, Variable) or not isinstance(inputs, (list, tuple)) or not inputs:
            raise InvalidInputError(
                "MultimodalLLMCall takes a non-empty list of Variables (images and text, in order), "
                "or a list of such lists."
            )
        single = isinstance(inputs[0], Variable)
        return self.map_batch(inputs, single, self._call, response_role_description)

    def _call(self, variables: Sequence[Variable]) -> tuple[Content, list[Variable]]:
        if not isinstance(variables, (list, tuple)) or not variables:
            raise InvalidInputError("Each multimodal input must be a non-empty list of Variables.")
        for v in variables:
            if not isinstance(v, Variable):
                raise InvalidInputError(f"MultimodalLLMCall takes Variables, got {type(v).__name__}.")
        return content_parts(_pieces(variables)), list(variables)


class OrderedFieldsMultimodalLLMCall(MultimodalLLMCall):
    """A multimodal call over named fields, in field order: text renders as '<field>: value', images sit in place."""

    def __init__(
        self,
        engine: Union[Engine, str, None],
        fields: Sequence[str],
        system_prompt: Union[Variable, str, None] = None,
    ):
        super().__init__(engine, system_prompt)
        valid = isinstance(fields, (list, tuple)) and fields and all(isinstance(f, str) and f for f in fields)
        if not valid or len(set(fields)) != len(fields):
            raise InvalidInputError(f"fields must be a list of distinct, non-empty strings, got {fields!r:.80}.")
        self.fields = list(fields)

    def forward(
        self,
        inputs: Union[dict[str, Variable], Sequence[dict[str, Variable]]],
        response_role_description: str = DEFAULT_OUTPUT_ROLE,
    ) -> Union[Variable, list[Variable]]:
        """The response for one mapping of field names to Variables, or a batch for a list of mappings."""
        return self.map_batch(inputs, isinstance(inputs, dict), self._fields, response_role_description)

    def _fields(self, mapping: dict[str, Variable]) -> tuple[Content, list[Variable]]:
        if not isinstance(mapping, dict) or set(mapping) != set(self.fields):
            got = sorted(mapping) if isinstance(mapping, dict) else type(mapping).__name__
            raise InvalidInputError(
                f"OrderedFieldsMultimodalLLMCall expects exactly the fields {self.fields}, got {got}."
            )
        items: list[Union[str, Variable]] = []
        for name in self.fields:
            variable = mapping[name]
            if not isinstance(variable, Variable):
                raise InvalidInputError(f"Field {name!r} must be a Variable, got {type(variable).__name__}.")
            if variable.is_image:
                items.append(variable)
            else:
                items.append(PM.FIELD_LABEL.format(field=name) + variable.value)
        variables = [mapping[name] for name in self.fields]
        return content_parts(_pieces(items)), variables
