"""Budget-aware constrained decoding for transformers models, on outlines' token index, applied batch-wide.

outlines_core compiles a regex (or a JSON schema) into a token-level automaton. We turn it, once per
constraint, into tensors on the model's device: a dense next-state table [states, vocab], each state's
tokens-to-finish (the fewest tokens that still complete a valid output), and the tokens that can never
finish. At each decode step every constrained row advances by one gather and its logits are masked by
one more, for the whole batch at once: no per-row Python, no host sync. A token is allowed only when the
output can still be finished, end token included, within the row's remaining max_tokens, so a constrained
output always completes and stops: the optimizer's closing tag is never cut off by the token limit. Rows
without a constraint in the same batch are left alone.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Iterable, Optional

import numpy as np

from localgrad.errors import InvalidInputError
from localgrad.request import Constraint

UNREACHABLE = 1 << 30
MAX_TABLE_BYTES = 1 << 30


class TokenAutomaton:
    """One constraint compiled for one tokenizer, as device tensors.

    States are renumbered 0..n-1, plus DONE (after the end token) and DEAD (after a token outside the
    language); both allow only the end token. `table[s, t]` is the state after token t, DEAD where t is
    not allowed; `finish[s, t]` the fewest tokens that complete a valid output after t (the end token
    excluded; -1 for the end token itself, clipped to the dtype's maximum where none can); `never[s, t]`
    marks tokens after which no output can be completed at all.
    """

    def __init__(self, index: Any, end_token_id: int, excluded: Iterable[int], vocab_size: int, device: Any):
        import torch

        transitions: dict[int, dict[int, int]] = index.get_transitions()
        finals = set(index.get_final_states())
        ids = np.array(sorted(set(transitions) | finals | {index.get_initial_state()}
                              | {n for moves in transitions.values() for n in set(moves.values())}), dtype=np.int64)
        n = len(ids)
        self.done, self.dead = n, n + 1
        self.end_token_id = end_token_id
        if (n + 2) * vocab_size * 5 > MAX_TABLE_BYTES:
            raise InvalidInputError(
                f"The output constraint compiles to {n} automaton states, too many to keep as tables on the device "
                f"({(n + 2) * vocab_size * 5 / 2**30:.1f} GiB). Simplify the regex or JSON schema."
            )
        skip = np.zeros(vocab_size, dtype=bool)
        skip[[t for t in set(excluded) | {end_token_id} if 0 <= t < vocab_size]] = True
        table = np.full((n + 2, vocab_size), self.dead, dtype=np.int32)
        for state, moves in transitions.items():
            tokens = np.fromiter(moves.keys(), dtype=np.int64, count=len(moves))
            nexts = np.fromiter(moves.values(), dtype=np.int64, count=len(moves))
            keep = tokens < vocab_size
            keep[keep] = ~skip[tokens[keep]]
            table[np.searchsorted(ids, state), tokens[keep]] = np.searchsorted(ids, nexts[keep])
        distance = _distances(table[:n], np.searchsorted(ids, sorted(finals)), self.dead)
        self.initial = int(np.searchsorted(ids, index.get_initial_state()))
        self.shortest = int(distance[self.initial])
        self.horizon = int(distance[distance < UNREACHABLE].max(initial=0))
        table[np.searchsorted(ids, sorted(finals)), end_token_id] = self.done
        table[[self.done, self.dead], end_token_id] = self.done
        finish = np.concatenate([distance, [-1, UNREACHABLE]]).astype(np.int32)[table]
        small = np.int16 if max(n + 2, self.horizon + 2) < 1 << 15 else np.int32
        self.table = torch.from_numpy(table.astype(small)).to(device)
        self.finish_max = int(np.iinfo(small).max)
        self.finish = torch.from_numpy(np.minimum(finish, self.finish_max).astype(small)).to(device)
        self.never = torch.from_numpy(finish >= UNREACHABLE).to(device)
        self.device = device

    def min_tokens(self) -> int:
        """The fewest tokens any valid output takes, its end token included."""
        return self.shortest + 1


def _distances(table: np.ndarray, finals: np.ndarray, dead: int) -> np.ndarray:
    """Each state's fewest tokens to a final state (UNREACHABLE where none is reachable), by reverse BFS."""
    n = table.shape[0]
    predecessors: list[set[int]] = [set() for _ in range(n)]
    for state in range(n):
        for nxt in np.unique(table[state]):
            if nxt != dead:
                predecessors[int(nxt)].add(state)
    distance = np.full(n, UNREACHABLE, dtype=np.int64)
    distance[finals] = 0
    queue = deque(int(f) for f in finals)
    while queue:
        state = queue.popleft()
        for before in predecessors[state]:
            if distance[before] == UNREACHABLE:
                distance[before] = distance[state] + 1
                queue.append(before)
    return distance


class _Rows:
    """The batch rows guided by one automaton: their states, token budgets and mask buffers, on the device."""

    def __init__(self, automaton: TokenAutomaton, rows: list[int], budgets: list[int], batch_size: int):
        import torch

        device = automaton.device
        self.automaton = automaton
        self.index = None if rows == list(range(batch_size)) else torch.tensor(rows, device=device)
        self.budgets = torch.tensor([budgets[r] for r in rows], device=device)
        self.least_budget = min(budgets[r] for r in rows)
        self.state = torch.full((len(rows),), automaton.initial, dtype=torch.long, device=device)
        width = automaton.table.shape[1]
        self._finish = torch.empty((len(rows), width), dtype=automaton.finish.dtype, device=device)
        self._forbidden = None if self.index is None else torch.empty((len(rows), width), dtype=torch.bool, device=device)

    def advance(self, last_tokens: Any) -> None:
        tokens = last_tokens if self.index is None else last_tokens[self.index]
        self.state = self.automaton.table[self.state, tokens].long()

    def write_forbidden(self, generated: int, mask: Any) -> None:
        """Set these rows of the batch's [batch, vocab] mask True where a token may not come next: a token is
        allowed when it, the rest of a valid output and the end token fit in the row's remaining budget.
        Written into buffers kept between steps (fresh [batch, vocab] tensors cost as much as the work)."""
        import torch

        a = self.automaton
        out = mask if self.index is None else self._forbidden
        if self.least_budget - generated > a.horizon + 1:  # every finishable token still fits every row's budget
            torch.index_select(a.never, 0, self.state, out=out)
        else:
            remaining = self.budgets - generated
            room = (remaining - 1).clamp(max=a.finish_max).to(a.finish.dtype)  # compared in the table's own dtype
            torch.index_select(a.finish, 0, self.state, out=self._finish)
            torch.ge(self._finish, room[:, None], out=out)
            out[:, a.end_token_id] &= remaining > 0  # rows past their budget (already finished) take the end token
        if self.index is not None:
            mask.index_copy_(0, self.index, out)


class GuidedLogitsProcessor:
    """A transformers logits processor applying one automaton (or none) per batch row, batch-wide.

    Per step: one gather advances every constrained row's state, one gather builds the batch's mask, one
    masked fill applies it; Python work is per distinct constraint in the batch (usually one), never per row.
    """

    def __init__(self, automata: list[Optional[TokenAutomaton]], budgets: list[int], prompt_width: int):
        import torch

        groups: dict[int, tuple[TokenAutomaton, list[int]]] = {}
        for row, automaton in enumerate(automata):
            if automaton is not None:
                groups.setdefault(id(automaton), (automaton, []))[1].append(row)
        self.groups = [_Rows(a, rows, budgets, len(automata)) for a, rows in groups.values()]
        self.prompt_width = prompt_width
        first = self.groups[0].automaton
        self._mask = torch.zeros((len(automata), first.table.shape[1]), dtype=torch.bool, device=first.device)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        generated = input_ids.shape[1] - self.prompt_width
        for group in self.groups:
            if generated > 0:
                group.advance(input_ids[:, -1])
            group.write_forbidden(generated, self._mask)
        return scores.masked_fill_(self._mask, float("-inf"))


class RowBudgets:
    """A transformers stopping criterion: each row stops at its own max_tokens, checked batch-wide."""

    def __init__(self, budgets: list[int], prompt_width: int, device: Any):
        import torch

        self.budgets = torch.tensor(budgets, device=device)
        self.prompt_width = prompt_width

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        return self.budgets <= input_ids.shape[1] - self.prompt_width


class AutomatonCache:
    """Compiles each constraint once per tokenizer (index building takes seconds) and keeps its tensors."""

    def __init__(self, model: Any, tokenizer: Any, end_token_id: int, vocab_size: int, device: Any):
        self._model = model
        self._tokenizer = tokenizer
        self._end = end_token_id
        self._vocab_size = vocab_size
        self._device = device
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
            special = getattr(self._tokenizer, "all_special_ids", [])
            self._automata[constraint] = TokenAutomaton(index, self._end, special, self._vocab_size, self._device)
        return self._automata[constraint]
