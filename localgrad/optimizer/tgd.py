"""Textual Gradient Descent: rewrite every parameter from its feedback, all in one batch.

Each update request carries a tag constraint, so backends that constrain decoding (outlines,
llama.cpp grammars, vLLM structured outputs) always return a readable value; for the others the
same rule is applied after the fact (`localgrad.optimizer.update`), and a refused answer is an error
that names the parameter, the reason and shows the raw output. A step applies all updates or none.
"""
from __future__ import annotations

import copy
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import replace
from typing import Any, Optional, Sequence, Union

from localgrad.engine import Engine, resolve_engine
from localgrad.errors import GraphError, InvalidInputError, OutputParseError, check_int
from localgrad.optimizer.candidates import Candidate, candidate_settings
from localgrad.optimizer.update import (
    check_tags,
    read_update,
    update_constraint,
    update_prompt,
)
from localgrad.prompts import optimizer as P
from localgrad.request import Request
from localgrad.variable import Variable

DEFAULT_TAGS = ("<IMPROVED_VARIABLE>", "</IMPROVED_VARIABLE>")
DEFAULT_CANDIDATE_TEMPERATURE = 0.9


class Optimizer(ABC):
    """Holds the parameters; `zero_grad` clears their feedback and `step` updates them."""

    def __init__(self, parameters: Union[Variable, Iterable[Variable]]):
        if isinstance(parameters, Variable):
            parameters = [parameters]
        if isinstance(parameters, (str, bytes, dict)) or not isinstance(parameters, Iterable):
            raise InvalidInputError(
                f"The optimizer takes the Variables to optimize as a list, e.g. TGD([answer]); got {type(parameters).__name__}."
            )
        params = list(parameters)
        if not params:
            raise InvalidInputError("The optimizer got no parameters; pass the Variables to optimize, e.g. TGD([answer]).")
        for i, p in enumerate(params):
            if not isinstance(p, Variable):
                raise InvalidInputError(f"Parameter {i} is a {type(p).__name__}, not a Variable.")
            if p.is_image:
                raise InvalidInputError(f"Parameter {i} is an image; only text variables can be optimized.")
            if any(q is p for q in params[:i]):
                raise InvalidInputError(
                    f"Parameter {i} ({p.role_description!r}) is listed twice; each Variable can be a parameter once."
                )
        self.parameters = params

    def zero_grad(self) -> None:
        """Forget the feedback on every parameter."""
        for p in self.parameters:
            p.reset_gradients()

    @abstractmethod
    def step(self) -> None:
        """Update the parameters from their feedback."""


def text_list(name: str, items: Union[str, Sequence[str], None]) -> list[str]:
    """A list of texts from None, one str (one item, not one per character) or a list of str."""
    if items is None:
        return []
    if isinstance(items, str):
        return [items]
    if not isinstance(items, (list, tuple)) or not all(isinstance(item, str) for item in items):
        raise InvalidInputError(f"{name} must be a str or a list of str, got {items!r:.80}.")
    return list(items)


def fill_tags(prompt: str, tags: Sequence[str]) -> str:
    """The prompt with its tag placeholders ({start_tag}, {end_tag} and textgrad's names) filled.

    A textgrad-style template ({{ for a literal brace) is formatted; a prompt whose other braces are
    not placeholders (JSON, code) keeps them as written and gets only the tag names filled.
    """
    names = {"start_tag": tags[0], "end_tag": tags[1], "new_variable_start_tag": tags[0], "new_variable_end_tag": tags[1]}
    try:
        return prompt.format(**names)
    except (KeyError, IndexError, ValueError, AttributeError):
        return re.sub(r"\{(" + "|".join(names) + r")\}", lambda m: names[m.group(1)], prompt)


def _with_max_tokens(request: Request, max_tokens: int) -> Request:
    return replace(request, sampling=replace(request.sampling, max_tokens=max_tokens))


class TextualGradientDescent(Optimizer):
    """TGD: each `step()` sends one batch with an update request per parameter and applies the results.

    constraints: natural-language rules every new value must follow.
    gradient_memory: how many past (value, feedback) pairs per parameter to show (momentum).
    in_context_examples: examples of good values to show.
    new_variable_tags: the tags the new value is written between.
    max_tokens: cap on the update's length (default: enough for the value plus room to grow).
    include_context: also show the conversation each piece of feedback came from (longer prompts).
    """

    def __init__(
        self,
        parameters: Iterable[Variable],
        verbose: int = 0,
        engine: Union[Engine, str, None] = None,
        constraints: Optional[Sequence[str]] = None,
        new_variable_tags: Optional[Sequence[str]] = None,
        optimizer_system_prompt: str = P.OPTIMIZER_SYSTEM_PROMPT,
        in_context_examples: Optional[Sequence[str]] = None,
        gradient_memory: int = 0,
        max_tokens: Optional[int] = None,
        include_context: bool = False,
    ):
        super().__init__(parameters)
        self.engine = resolve_engine(engine, "the optimizer")
        tags = check_tags(new_variable_tags if new_variable_tags is not None else DEFAULT_TAGS)
        check_int("gradient_memory", gradient_memory, 0)
        if max_tokens is not None:
            check_int("max_tokens", max_tokens, 1)
        if not isinstance(include_context, bool):
            raise InvalidInputError(f"include_context must be True or False, got {include_context!r}.")
        if not isinstance(verbose, bool):
            check_int("verbose", verbose, 0)
        if not isinstance(optimizer_system_prompt, str):
            raise InvalidInputError(f"optimizer_system_prompt must be a str, got {type(optimizer_system_prompt).__name__}.")
        self.tags = tags
        self.new_variable_tags = list(tags)
        self.constraint = update_constraint(tags)
        self.verbose = verbose
        self.constraints = text_list("constraints", constraints)
        self.in_context_examples = text_list("in_context_examples", in_context_examples)
        self.gradient_memory = gradient_memory
        self.max_tokens = max_tokens
        self.include_context = include_context
        self.optimizer_system_prompt = fill_tags(optimizer_system_prompt, tags)
        self.state: dict[str, Any] = {"steps": 0, "memory": [[] for _ in self.parameters]}

    def _request(self, index: int, variable: Variable) -> Request:
        memory = self.state["memory"][index][-self.gradient_memory:] if self.gradient_memory else []
        prompt = update_prompt(variable, self.tags, self.constraints, memory, self.in_context_examples, self.include_context)
        budget = self.max_tokens or max(self.engine.sampling.max_tokens, len(variable.value) // 3 + 48)
        return _with_max_tokens(
            Request.chat(prompt, system=self.optimizer_system_prompt, sampling=self.engine.sampling, constraint=self.constraint),
            budget,
        )

    def step(self) -> None:
        """Rewrite every parameter from its feedback: one batch, all updates applied or none.

        A parameter that received no feedback (or has requires_grad=False) is left as it is.
        An update cut off by the token limit before its closing tag (possible on backends that cannot
        plan the constraint within the budget, such as remote servers) is asked once more with twice the budget.
        """
        if not any(p.gradients for p in self.parameters):
            raise GraphError(
                "TGD.step: no parameter has feedback. Call loss.backward() before optimizer.step(), "
                "and make sure the parameters are used in computing the loss."
            )
        proposals = self.propose(1)
        for i, (p, (candidate,)) in enumerate(zip(self.parameters, proposals)):
            if candidate.value is None:
                raise OutputParseError(
                    f"TGD.step {self.state['steps'] + 1}: the optimizer's output for parameter {i} "
                    f"({p.role_description!r}) was refused: {candidate.problem}; no parameter was changed. It must begin "
                    f"with {self.tags[0]}, then the new value, then {self.tags[1]}. Use a backend that constrains output "
                    "(transformers, llamacpp, vllm) or raise max_tokens. localgrad never adopts an update it cannot "
                    "parse, where textgrad kept the text after an unclosed tag: a cut-off value would replace a working one.",
                    raw_output=candidate.raw_output,
                )
        self.apply([candidate.value for (candidate,) in proposals])

    def propose(self, k: int = 1, temperature: float = DEFAULT_CANDIDATE_TEMPERATURE) -> list[list[Candidate]]:
        """`k` candidate new values per parameter, all from one batch; no parameter is changed.

        Candidate 0 is the update `step()` would make; the others sample at rising temperatures
        (see `localgrad.optimizer.candidates`). A candidate whose output was refused has `value=None`.
        A parameter without feedback gets its current value as every candidate, without a request.
        Outputs cut off by the token limit are asked once more, together, with twice the budget.
        """
        settings = candidate_settings(self.engine.sampling, k, temperature, self.state.get("proposals", 0))
        active = [i for i, p in enumerate(self.parameters) if p.gradients]
        requests, owners = [], []
        for i in active:
            request = self._request(i, self.parameters[i])
            requests += [replace(request, sampling=replace(s, max_tokens=request.sampling.max_tokens)) for s in settings]
            owners += [i] * k
        completions = self.engine.generate_batch(requests) if requests else []
        read = [self._read(c.text, owner) for c, owner in zip(completions, owners)]
        cut = [n for n, c in enumerate(completions) if read[n][0] is None and c.finish_reason == "length"]
        if cut:
            longer = [_with_max_tokens(requests[n], 2 * requests[n].sampling.max_tokens) for n in cut]
            for n, completion in zip(cut, self.engine.generate_batch(longer)):
                completions[n], read[n] = completion, self._read(completion.text, owners[n])
        self.state["proposals"] = self.state.get("proposals", 0) + 1
        proposals = [[Candidate(p.value, None, "", s.temperature, s.seed) for s in settings] for p in self.parameters]
        for row, i in enumerate(active):
            proposals[i] = [
                Candidate(*read[row * k + j], completions[row * k + j].text, s.temperature, s.seed) for j, s in enumerate(settings)
            ]
        return proposals

    def apply(self, values: Sequence[str]) -> None:
        """Set every parameter to its new value (one per parameter, e.g. chosen among `propose` candidates)."""
        if len(values) != len(self.parameters) or not all(
            isinstance(v, str) and (v.strip() or v == p.value) for v, p in zip(values, self.parameters)
        ):
            raise InvalidInputError(f"apply needs one non-empty string per parameter ({len(self.parameters)}).")
        for i, (p, value) in enumerate(zip(self.parameters, values)):
            if self.gradient_memory and p.gradients:
                self.state["memory"][i].append({"value": p.value, "feedback": p.get_gradient_text()})
                del self.state["memory"][i][:-self.gradient_memory]
            p.set_value(value)
            if self.verbose and p.gradients:
                print(f"TGD step {self.state['steps'] + 1}, parameter {i} ({p.role_description}):\n{value}\n")
        self.state["steps"] += 1

    def _read(self, text: str, index: int) -> tuple[str | None, str | None]:
        """(new value, None) from one optimizer output for parameter `index`, or (None, why it was refused)."""
        value, problem = read_update(text, self.parameters[index].value, self.tags)
        return (value, None) if value is not None else (None, problem)

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state as plain values (steps taken, momentum memory), for checkpoints."""
        return copy.deepcopy(self.state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from `state_dict()`."""
        if not isinstance(state, dict) or "steps" not in state or "memory" not in state:
            raise InvalidInputError("load_state_dict needs a dict from TGD.state_dict() with 'steps' and 'memory'.")
        check_int("The state's steps", state["steps"], 0)
        memory = state["memory"]
        if not isinstance(memory, list) or not all(isinstance(m, list) for m in memory):
            raise InvalidInputError("The state's memory must be a list (one per parameter) of lists of past versions.")
        if len(memory) != len(self.parameters):
            raise InvalidInputError(
                f"The state holds memory for {len(memory)} parameters; this optimizer has {len(self.parameters)}."
            )
        for entries in memory:
            for entry in entries:
                if not isinstance(entry, dict) or set(entry) != {"value", "feedback"} or not all(isinstance(v, str) for v in entry.values()):
                    raise InvalidInputError(
                        f"Each memory entry must be {{'value': str, 'feedback': str}}, got {entry!r:.80}."
                    )
        self.state = copy.deepcopy(state)


TGD = TextualGradientDescent
