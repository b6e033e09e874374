"""How text travels inside localgrad's prompts: escaped, so it cannot open or close a tag the prompt writes,
and cut where a model's output degenerates into repetition.

A tag is `<NAME>` or `</NAME>` with NAME made of capitals, digits and `_` (not starting with a digit): the
form of every tag localgrad's prompts write (`localgrad.prompts.tags`). Escaping works on the start of any
tag, `<` or `</` before a capital or `_` (so `<VARIABLE>`, `</FEEDBACK` and `List<String>` alike): `escape`
puts one more backslash after it, escaped ones included (`</VARIABLE>` -> `</\\VARIABLE>`, `</\\VARIABLE>` ->
`</\\\\VARIABLE>`), and `unescape` takes one away. So `unescape(escape(text)) == text` for every text, and
escaped text cannot open or close any tag. A model that copies an escaped value copies the backslash, and
its copy decodes to the original exactly.
"""
from __future__ import annotations

import math
import re
from typing import Sequence

from localgrad.prompts.tags import TAG_NAMES

NAME_FIRST = "A-Z_"  # the character class a tag's NAME starts with, shared with the constraints
TAG = re.compile(f"</?[{NAME_FIRST}][A-Z0-9_]*>")
OPENING = re.compile(f"</?[{NAME_FIRST}]")  # the start of a tag: what escaped text never holds
_ANY = re.compile(f"<(/?)(\\\\*)(?=[{NAME_FIRST}])")
_ESCAPED = re.compile(f"<(/?)\\\\(\\\\*)(?=[{NAME_FIRST}])")


def tags_of(names: Sequence[str] = TAG_NAMES) -> tuple[str, ...]:
    """Every opening and closing tag of `names`: `<NAME>` and `</NAME>`."""
    return tuple(tag for n in names for tag in (f"<{n}>", f"</{n}>"))


def escape(text: str) -> str:
    """`text` with one more backslash at the start of every tag, plain or escaped, so it holds no tag and shows
    safely inside a prompt."""
    return _ANY.sub(lambda m: f"<{m[1]}\\{m[2]}", text)


def unescape(text: str) -> str:
    """The inverse of `escape`: one backslash less at the start of every escaped tag (plain ones stay as they are)."""
    return _ESCAPED.sub(lambda m: f"<{m[1]}{m[2]}", text)


def tag_counts(text: str, names: Sequence[str] = TAG_NAMES) -> dict[str, int]:
    """How often each plain tag of `names` occurs in `text` (the tags that do occur)."""
    return {tag: text.count(tag) for tag in tags_of(names) if tag in text}


REPEATS = 3
MIN_REPEATED_WORDS = 12
MIN_SENTENCE_WORDS = 5
MAX_PERIOD_WORDS = 60


def cut_repetition(text: str, repeats: int = REPEATS) -> str:
    """`text` up to the first repeat of a loop, without trailing space; text without a loop comes back unchanged.

    A loop is a run of words that follows itself `repeats` times or more in a row (at least 12 words in all,
    so "very very very" or a short repeated line stays), or a sentence or line of 5 words or more that occurs
    `repeats` times or more anywhere. A model that loops ("The answer is wrong. The answer is wrong. ...", up
    to the token limit) keeps its first round.
    """
    cuts = [c for c in (_run_loop(text, repeats), _repeated_sentence(text, repeats)) if c is not None]
    return text[:min(cuts)].rstrip() if cuts else text


def _run_loop(text: str, repeats: int) -> int | None:
    """Where the second round of the first run of words that repeats itself in a row starts."""
    words = [(m.start(), m.group()) for m in re.finditer(r"\S+", text)]
    tokens = [w for _, w in words]
    first: tuple[int, int] | None = None  # (where the loop starts, its period in words)
    for period in range(1, min(MAX_PERIOD_WORDS, len(tokens) // repeats) + 1):
        needed = period * (max(repeats, math.ceil(MIN_REPEATED_WORDS / period)) - 1)
        run = 0  # how many words from i on equal the word one period later
        for i in range(len(tokens) - period - 1, -1, -1):
            run = run + 1 if tokens[i] == tokens[i + period] else 0
            if run >= needed and (first is None or i < first[0]):
                first = (i, period)
    return None if first is None else words[first[0] + first[1]][0]


def _repeated_sentence(text: str, repeats: int) -> int | None:
    """Where the second occurrence of the first long sentence (or line) that occurs `repeats` times starts."""
    seen: dict[str, list[int]] = {}
    for m in re.finditer(r"[^\n.!?]*(?:[.!?]+|\n|$)", text):
        sentence = " ".join(m.group().split())
        if len(sentence.split()) >= MIN_SENTENCE_WORDS:
            seen.setdefault(sentence, []).append(m.start() + len(m.group()) - len(m.group().lstrip()))
    second = [starts[1] for starts in seen.values() if len(starts) >= repeats]
    return min(second) if second else None


def read_feedback(text: str) -> str:
    """Feedback as a model wrote it in answer to an escaped prompt, back in the user's terms: unescaped,
    and cut at the first repeat of a loop."""
    return cut_repetition(unescape(text))
