"""Budget-aware constrained decoding for transformers models, on outlines' token index.

outlines_core compiles a regex (or a JSON schema) into a token-level automaton. On top of it
we compute, for every state, how many tokens it takes at least to finish a valid output, and
at each step allow only tokens from which the output can still be finished within the row's
remaining max_tokens. So a constrained output always completes: the optimizer's closing tag is
never cut off by the token limit. Rows without a constraint in the same batch are left alone.
"""
from __future__ import annotations

from typing import Any, Optional

from localgrad.errors import InvalidInputError
from localgrad.request import Constraint

UNREACHABLE = 1 << 30


class TokenAutomaton:
    """One constraint compiled for one tokenizer: transitions plus each state's tokens-to-finish."""

    def __init__(self, index: Any, eos_token_id: int):
        import torch

        self.initial: int = index.get_initial_state()
        self.finals: set[int] = set(index.get_final_states())
        self.eos_token_id = eos_token_id
        transitions: dict[int, dict[int, int]] = index.get_transitions()
        successors = {s: set(m.values()) for s, m in transitions.items()}
        distance = {s: 0 for s in self.finals}
        changed = True
        while changed:
            changed = False
            for state, nexts in successors.items():
                best = min((distance[n] + 1 for n in nexts if n in distance), default=UNREACHABLE)
                if best < distance.get(state, UNREACHABLE):
                    distance[state] = best
                    changed = True
        self.distance = distance
        self.transitions = transitions
        self.tokens: dict[int, Any] = {}
        self.token_distance: dict[int, Any] = {}
        for state, moves in transitions.items():
            pairs = [(t, distance.get(n, UNREACHABLE)) for t, n in moves.items() if t != eos_token_id]
            self.tokens[state] = torch.tensor([t for t, _ in pairs], dtype=torch.long)
            self.token_distance[state] = torch.tensor([d for _, d in pairs], dtype=torch.long)

    def min_tokens(self) -> int:
        """The fewest tokens any valid output takes."""
        return self.distance.get(self.initial, UNREACHABLE)

    def advance(self, state: int, token: int) -> Optional[int]:
        """The state after `token`, or None when the token leaves the language."""
        return self.transitions.get(state, {}).get(token)

    def allowed(self, state: int, remaining: int) -> tuple[Any, bool]:
        """Token ids allowed with `remaining` tokens left (this one included), and whether EOS is allowed."""
        import torch

        eos_ok = state in self.finals
        if remaining <= 0 or state not in self.tokens:
            return torch.empty(0, dtype=torch.long), True
        keep = self.token_distance[state] <= remaining - 1
        return self.tokens[state][keep], eos_ok


class GuidedLogitsProcessor:
    """A transformers logits processor applying one automaton (or none) per batch row."""

    def __init__(self, automata: list[Optional[TokenAutomaton]], budgets: list[int], prompt_width: int):
        self.automata = automata
        self.budgets = budgets
        self.prompt_width = prompt_width
        self.states: list[Optional[int]] = [a.initial if a else None for a in automata]
        self.done = [False] * len(automata)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        generated = input_ids.shape[1] - self.prompt_width
        for row, automaton in enumerate(self.automata):
            if automaton is None:
                continue
            if generated > 0 and not self.done[row]:
                last = int(input_ids[row, -1])
                if last == automaton.eos_token_id:
                    self.done[row] = True
                else:
                    self.states[row] = automaton.advance(self.states[row], last)
            state = self.states[row]
            mask = torch.full_like(scores[row], float("-inf"))
            if self.done[row] or state is None:
                mask[automaton.eos_token_id] = 0.0
            else:
                tokens, eos_ok = automaton.allowed(state, self.budgets[row] - generated)
                mask[tokens] = 0.0
                if eos_ok or len(tokens) == 0:
                    mask[automaton.eos_token_id] = 0.0
            scores[row] = scores[row] + mask
        return scores


class AutomatonCache:
    """Compiles each constraint once per tokenizer (index building takes seconds) and keeps it."""

    def __init__(self, model: Any, tokenizer: Any):
        self._model = model
        self._tokenizer = tokenizer
        self._vocabulary = None
        self._automata: dict[Constraint, TokenAutomaton] = {}

    def get(self, constraint: Constraint) -> TokenAutomaton:
        """The automaton for a constraint, compiled on first use."""
        if constraint not in self._automata:
            from outlines_core import Index
            from outlines_core.json_schema import build_regex_from_schema

            if self._vocabulary is None:
                import outlines
                from outlines.backends.outlines_core import OutlinesCoreBackend

                self._vocabulary = OutlinesCoreBackend(outlines.from_transformers(self._model, self._tokenizer)).vocabulary
            regex = constraint.regex if constraint.regex is not None else build_regex_from_schema(constraint.json_schema)
            try:
                index = Index(regex, self._vocabulary)
            except Exception as exc:
                raise InvalidInputError(f"The output constraint cannot be compiled: {exc}") from exc
            self._automata[constraint] = TokenAutomaton(index, self._tokenizer.eos_token_id)
        return self._automata[constraint]
