"""How text travels inside localgrad's prompts: escaped, so it cannot open or close a tag the prompt writes,
and cut where a model's output degenerates into repetition.

A tag is `<NAME>` or `</NAME>` with NAME made of capitals, digits and `_` (not starting with a digit): the
form of every tag localgrad's prompts write (`localgrad.prompts.tags`). `escape` puts one more backslash
before the NAME of every such tag, escaped ones included (`</VARIABLE>` -> `</\\VARIABLE>`,
`</\\VARIABLE>` -> `</\\\\VARIABLE>`), and `unescape` takes one away, so `unescape(escape(text)) == text` for
every text, and escaped text holds no tag at all. A model that copies an escaped value copies the
backslash, and its copy decodes to the original exactly.
"""
from __future__ import annotations

import math
import re
from typing import Sequence

from localgrad.prompts.tags import TAG_NAMES

NAME_FIRST = "A-Z_"  # the character classes of a tag's NAME, shared with the constraints
NAME_REST = "A-Z0-9_"
TAG = re.compile(f"</?[{NAME_FIRST}][{NAME_REST}]*>")
_ANY_TAG = re.compile(f"<(/?)(\\\\*)([{NAME_FIRST}][{NAME_REST}]*)>")
_ESCAPED_TAG = re.compile(f"<(/?)\\\\(\\\\*)([{NAME_FIRST}][{NAME_REST}]*)>")


def tags_of(names: Sequence[str] = TAG_NAMES) -> tuple[str, ...]:
    """Every opening and closing tag of `names`: `<NAME>` and `</NAME>`."""
    return tuple(tag for n in names for tag in (f"<{n}>", f"</{n}>"))


def escape(text: str) -> str:
    """`text` with one more backslash in every tag, plain or escaped, so it holds no tag and shows safely in a prompt."""
    return _ANY_TAG.sub(lambda m: f"<{m[1]}\\{m[2]}{m[3]}>", text)


def unescape(text: str) -> str:
    """The inverse of `escape`: one backslash less in every escaped tag (plain tags stay as they are)."""
    return _ESCAPED_TAG.sub(lambda m: f"<{m[1]}{m[2]}{m[3]}>", text)


def tag_counts(text: str, names: Sequence[str] = TAG_NAMES) -> dict[str, int]:
    """How often each plain tag of `names` occurs in `text` (the tags that do occur)."""
    return {tag: text.count(tag) for tag in tags_of(names) if tag in text}


REPEATS = 3
MIN_REPEATED_WORDS = 12
MAX_PERIOD_WORDS = 60


def cut_repetition(text: str, repeats: int = REPEATS, min_words: int = MIN_REPEATED_WORDS) -> str:
    """`text` up to the first repeat of a run of words that follows itself `repeats` times or more in a row
    (at least `min_words` words in all, so "very very" or a short repeated line stays), without trailing space.

    A model that loops ("The answer is wrong. The answer is wrong. ...", up to the token limit) keeps its first
    round; text without such a loop comes back unchanged.
    """
    words = [(m.start(), m.group()) for m in re.finditer(r"\S+", text)]
    tokens = [w for _, w in words]
    first: tuple[int, int] | None = None  # (where the loop starts, its period in words)
    for period in range(1, min(MAX_PERIOD_WORDS, len(tokens) // repeats) + 1):
        needed = period * (max(repeats, math.ceil(min_words / period)) - 1)
        run = 0  # how many words from i on equal the word one period later
        for i in range(len(tokens) - period - 1, -1, -1):
            run = run + 1 if tokens[i] == tokens[i + period] else 0
            if run >= needed and (first is None or i < first[0]):
                first = (i, period)
    if first is None:
        return text
    return text[:words[first[0] + first[1]][0]].rstrip()


def read_feedback(text: str) -> str:
    """Feedback as a model wrote it in answer to an escaped prompt, back in the user's terms: unescaped,
    and cut at the first repeat of a loop."""
    return cut_repetition(unescape(text))
