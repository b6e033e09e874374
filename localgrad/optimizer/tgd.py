"""Textual Gradient Descent: rewrite every parameter from its feedback, all in one batch.

Each update request carries a tag constraint, so backends that constrain decoding (outlines,
llama.cpp grammars, vLLM structured outputs) always return a parseable value; for the others a
tolerant parser reads the tags, and a missing tag is an error that names the parameter and
shows the raw output. A step applies all updates or none.
"""
from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any, Iterable, Optional, Sequence, Union

from localgrad.backends.constraints import parse_tagged, tagged
from localgrad.engine import Engine, resolve_engine
from localgrad.errors import GraphError, InvalidInputError, OutputParseError
from localgrad.optimizer.candidates import Candidate, candidate_settings
from localgrad.prompts import optimizer as P
from localgrad.request import Request
from localgrad.variable import Variable

DEFAULT_TAGS = ("<IMPROVED_VARIABLE>", "</IMPROVED_VARIABLE>")
DEFAULT_CANDIDATE_TEMPERATURE = 0.9


class Optimizer:
    """Holds the parameters; `zero_grad` clears their feedback."""

    def __init__(self, parameters: Iterable[Variable]):
        params = list(parameters) if parameters is not None else []
        if not params:
            raise InvalidInputError("The optimizer got no parameters; pass the Variables to optimize, e.g. TGD([answer]).")
        for i, p in enumerate(params):
            if not isinstance(p, Variable):
                raise InvalidInputError(f"Parameter {i} is a {type(p).__name__}, not a Variable.")
            if p.is_image:
                raise InvalidInputError(f"Parameter {i} is an image; only text variables can be optimized.")
            if not p.requires_grad:
                raise InvalidInputError(
                    f"Parameter {i} ({p.role_description!r}) has requires_grad=False; set it to True to optimize it."
                )
        self.parameters = params

    def zero_grad(self) -> None:
        """Forget the feedback on every parameter."""
        for p in self.parameters:
            p.reset_gradients()


def update_prompt(
    variable: Variable,
    tags: Sequence[str],
    constraints: Sequence[str],
    memory: Sequence[dict[str, str]],
    examples: Sequence[str],
    include_context: bool,
) -> str:
    """The user message asking for one parameter's new value."""
    feedback = []
    for g in variable.gradients:
        context = variable.gradients_context.get(g)
        if include_context and context:
            feedback.append(P.FEEDBACK_WITH_CONTEXT.format(feedback=g.value, context=context.get("conversation", "")))
        else:
            feedback.append(g.value)
    extras = ""
    if constraints:
        extras += P.CONSTRAINTS_BLOCK.format(constraints="\n".join(P.CONSTRAINT_LINE.format(constraint=c) for c in constraints))
    if memory:
        extras += P.MEMORY_BLOCK.format(entries="\n".join(P.MEMORY_ENTRY.format(**m) for m in memory))
    if examples:
        extras += P.EXAMPLES_BLOCK.format(examples="\n".join(P.EXAMPLE_LINE.format(example=e) for e in examples))
    return P.UPDATE_REQUEST.format(
        role=variable.role_description,
        value=variable.value,
        feedback="\n".join(feedback),
        extras=extras,
        start_tag=tags[0],
        end_tag=tags[1],
    )


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
        tags = tuple(new_variable_tags) if new_variable_tags is not None else DEFAULT_TAGS
        if len(tags) != 2 or not all(isinstance(t, str) and t for t in tags):
            raise InvalidInputError("new_variable_tags must be two non-empty strings: [start_tag, end_tag].")
        if not isinstance(gradient_memory, int) or gradient_memory < 0:
            raise InvalidInputError(f"gradient_memory must be an int >= 0, got {gradient_memory!r}.")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise InvalidInputError(f"max_tokens must be a positive int or None, got {max_tokens!r}.")
        self.tags = tags
        self.new_variable_tags = list(tags)
        self.constraint = tagged(*tags)
        self.verbose = verbose
        self.constraints = [str(c) for c in (constraints or [])]
        self.in_context_examples = [str(e) for e in (in_context_examples or [])]
        self.gradient_memory = gradient_memory
        self.max_tokens = max_tokens
        self.include_context = include_context
        try:
            self.optimizer_system_prompt = optimizer_system_prompt.format(
                start_tag=tags[0], end_tag=tags[1], new_variable_start_tag=tags[0], new_variable_end_tag=tags[1]
            )
        except (KeyError, IndexError) as exc:
            raise InvalidInputError(
                f"optimizer_system_prompt has an unknown placeholder {exc}; use {{start_tag}} and {{end_tag}}."
            ) from exc
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

        An update cut off by the token limit before its closing tag (possible on backends that cannot
        plan the constraint within the budget, such as remote servers) is asked once more with twice the budget.
        """
        missing = [f"{i} ({p.role_description!r})" for i, p in enumerate(self.parameters) if not p.gradients]
        if missing:
            raise GraphError(
                f"TGD.step: parameter(s) {', '.join(missing)} have no feedback. Call loss.backward() before "
                "optimizer.step(), and make sure each parameter is used in computing the loss."
            )
        proposals = self.propose(1)
        for i, (p, (candidate,)) in enumerate(zip(self.parameters, proposals)):
            if candidate.value is None:
                raise OutputParseError(
                    f"TGD.step {self.state['steps'] + 1}: the optimizer's output for parameter {i} "
                    f"({p.role_description!r}) was refused: {candidate.problem}; no parameter was changed. "
                    "Use a backend that constrains output (transformers, llamacpp, vllm) or raise max_tokens.",
                    raw_output=candidate.raw_output,
                )
        self.apply([candidate.value for (candidate,) in proposals])

    def propose(self, k: int = 1, temperature: float = DEFAULT_CANDIDATE_TEMPERATURE) -> list[list[Candidate]]:
        """`k` candidate new values per parameter, all from one batch; no parameter is changed.

        Candidate 0 is the update `step()` would make; the others sample at rising temperatures
        (see `localgrad.optimizer.candidates`). A candidate whose output has no value has `value=None`.
        Outputs cut off by the token limit are asked once more, together, with twice the budget.
        """
        settings = candidate_settings(self.engine.sampling, k, temperature, self.state.get("proposals", 0))
        requests = []
        for i, p in enumerate(self.parameters):
            request = self._request(i, p)
            requests += [replace(request, sampling=replace(s, max_tokens=request.sampling.max_tokens)) for s in settings]
        completions = self.engine.generate_batch(requests)
        read = [self._read(c.text, i // k) for i, c in enumerate(completions)]
        cut = [i for i, c in enumerate(completions) if read[i][0] is None and c.finish_reason == "length"]
        if cut:
            longer = [_with_max_tokens(requests[i], 2 * requests[i].sampling.max_tokens) for i in cut]
            for i, completion in zip(cut, self.engine.generate_batch(longer)):
                completions[i], read[i] = completion, self._read(completion.text, i // k)
        self.state["proposals"] = self.state.get("proposals", 0) + 1
        return [
            [Candidate(*read[i * k + j], completions[i * k + j].text, s.temperature, s.seed) for j, s in enumerate(settings)]
            for i in range(len(self.parameters))
        ]

    def apply(self, values: Sequence[str]) -> None:
        """Set every parameter to its new value (one per parameter, e.g. chosen among `propose` candidates)."""
        if len(values) != len(self.parameters) or not all(isinstance(v, str) and v.strip() for v in values):
            raise InvalidInputError(f"apply needs one non-empty string per parameter ({len(self.parameters)}).")
        for i, (p, value) in enumerate(zip(self.parameters, values)):
            if self.gradient_memory:
                self.state["memory"][i].append({"value": p.value, "feedback": p.get_gradient_text()})
                del self.state["memory"][i][:-self.gradient_memory]
            p.set_value(value)
            if self.verbose:
                print(f"TGD step {self.state['steps'] + 1}, parameter {i} ({p.role_description}):\n{value}\n")
        self.state["steps"] += 1

    def _read(self, text: str, index: int) -> tuple[str | None, str | None]:
        """(new value, None) from one optimizer output for parameter `index`, or (None, why it was refused)."""
        value = parse_tagged(text, *self.tags)
        return (value, None) if value is not None else (None, f"it has no {self.tags[0]}...{self.tags[1]} value")

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state as plain values (steps taken, momentum memory), for checkpoints."""
        return copy.deepcopy(self.state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from `state_dict()`."""
        if not isinstance(state, dict) or "steps" not in state or "memory" not in state:
            raise InvalidInputError("load_state_dict needs a dict from TGD.state_dict() with 'steps' and 'memory'.")
        if len(state["memory"]) != len(self.parameters):
            raise InvalidInputError(
                f"The state holds memory for {len(state['memory'])} parameters; this optimizer has {len(self.parameters)}."
            )
        self.state = copy.deepcopy(state)


TGD = TextualGradientDescent
