"""Tag constraints on backends that cannot close a tag at the token limit (vLLM, OpenAI-compatible servers).

Such a backend decodes the tag regex unbounded (a bounded repeat is slow on vLLM's grammar engines and
still does not close), asks for max_tokens less the closing tag's tokens, counted with the model's own
tokenizer, and closes an output that the limit cut off. So a tag output is always whole within max_tokens.
"""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Callable

from localgrad.errors import InvalidInputError
from localgrad.request import Completion, Constraint


def token_budget(constraint: Constraint | None, max_tokens: int, count_tokens: Callable[[str], int]) -> int:
    """The max_tokens to ask of a backend that cannot close a tag constraint by itself (vLLM, servers):
    `max_tokens` less the closing tag's tokens, counted with the model's own tokenizer, so that
    `close_cut_off` can always add the closing tag within `max_tokens`. Other constraints keep `max_tokens`.
    """
    if constraint is None or constraint.tags is None:
        return max_tokens
    start, end = constraint.tags
    reserve, floor = count_tokens(end), count_tokens(start) + 1
    if max_tokens - reserve < floor:
        raise InvalidInputError(
            f"max_tokens={max_tokens} cannot hold the constraint's tags ({start} and {end} take {floor - 1 + reserve} "
            f"tokens) and a value; give it at least {floor + reserve} (better, several times that)."
        )
    return max_tokens - reserve


def close_cut_off(text: str, constraint: Constraint | None) -> str:
    """A tag-constrained output that the token limit cut off, closed: a closing tag it was in the middle of
    writing is completed, else the closing tag is added. Text that does not open the tag, or already
    closes it, comes back unchanged."""
    if constraint is None or constraint.tags is None:
        return text
    start, end = constraint.tags
    if not text.lstrip().startswith(start):
        return text
    body_at = text.index(start) + len(start)
    if end in text[body_at:]:
        return text
    for cut in range(len(end) - 1, 0, -1):
        if text.endswith(end[:cut]) and len(text) - cut >= body_at:
            return text[:-cut] + end
    return text + end


def close_completion(completion: Completion, constraint: Constraint | None, count_tokens: Callable[[str], int]) -> Completion:
    """`completion` with its tag output closed when the token limit cut it off (`close_cut_off`), the added
    text counted in its tokens (with `count_tokens`). Complete outputs come back unchanged."""
    if completion.finish_reason != "length":
        return completion
    text = close_cut_off(completion.text, constraint)
    if text == completion.text:
        return completion
    added = text[len(os.path.commonprefix([completion.text, text])):]
    return replace(completion, text=text, completion_tokens=completion.completion_tokens + count_tokens(added))
