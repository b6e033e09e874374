"""Output constraints as data: the optimizer's tag format as a regex and an equivalent GBNF grammar,
plus the parser that reads exactly the language the constraint allows.

The language of `tagged(start, end)` is `start`, a body, then `end`. The body is any text that is not blank
and does not hold `end`; `<` and markup are fine, so code and HTML variables survive a constrained update.
With `tag_free=True` the body holds not even the start of a tag (`<` or `</` before a capital or `_`, as
`localgrad.protocol` defines it), so a model can neither copy a prompt's scaffolding into a value nor
invent a near-copy (`</VARIABLE >`, `<FEEDBACK_VARIABLE_...`); it closes the value instead. Values shown in
prompts are escaped the same way, so copying them stays possible.
`read_tagged` accepts a text when it begins (after whitespace) with a string of that language, and
returns that string's body: what follows the first `end` is not part of the answer.
"""
from __future__ import annotations

import re

from localgrad.errors import InvalidInputError
from localgrad.protocol import NAME_FIRST, OPENING, TAG
from localgrad.request import Constraint

BLANK = " \t\r\n"
BLANK_CLASS = " \\t\\r\\n"  # BLANK inside a regex or GBNF character class


def _regex_class_char(ch: str) -> str:
    return "\\" + ch if ch in "\\]^-[" else ch


def _gbnf_class_char(ch: str) -> str:
    return {"\\": "\\\\", "]": "\\]", "^": "\\^", "-": "\\-", "[": "\\[", "\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch, ch)


def _gbnf_literal(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") + '"'


def _check_tags(start: str, end: str, tag_free: bool) -> None:
    if not isinstance(start, str) or not isinstance(end, str) or not start or len(end) < 2:
        raise InvalidInputError("A tagged constraint needs a non-empty opening tag and a closing tag of two characters or more.")
    if tag_free and not TAG.fullmatch(end):
        raise InvalidInputError(
            f"A tag-free constraint needs a closing tag like '</IMPROVED_VARIABLE>' (capitals, digits, '_'), got {end!r}."
        )
    if end[0] in end[1:]:
        raise InvalidInputError(
            f"The closing tag {end!r} repeats its first character {end[0]!r}; "
            "use a closing tag whose first character appears once, such as '</IMPROVED_VARIABLE>'."
        )


def _regex_pieces(end: str, tag_free: bool) -> tuple[str, str]:
    """(partial, tail): `partial` is `end[0]` plus any start of a forbidden word that stops short of it;
    `tail` is what may follow `end[0]` to leave every forbidden word on a character other than `end[0]`."""
    lead = _regex_class_char(end[0])
    if tag_free:
        return "(?:</?)", f"(?:[^</{NAME_FIRST}]|/[^<{NAME_FIRST}])"
    path, tail = "", f"[^{lead}{_regex_class_char(end[-1])}]"
    for ch in reversed(end[1:-1]):
        path = f"(?:{re.escape(ch)}{path})?"
        tail = f"(?:[^{lead}{_regex_class_char(ch)}]|{re.escape(ch)}{tail})"
    return f"(?:{re.escape(end[0])}{path})", tail


def tagged_body_regex(end: str, tag_free: bool = False) -> str:
    """A regex for any text with a non-blank character that holds neither `end` nor, when `tag_free`, the start
    of any tag."""
    _check_tags("<", end, tag_free)
    partial, tail = _regex_pieces(end, tag_free)
    lead = _regex_class_char(end[0])
    opened = f"{partial}*{re.escape(end[0])}{tail}"
    return f"[{BLANK_CLASS}]*(?:(?:[^{lead}{BLANK_CLASS}]|{opened})(?:[^{lead}]|{opened})*{partial}*|{partial}+)"


def _grammar_pieces(end: str, tag_free: bool) -> list[str]:
    """GBNF rules `partial` and `tail0`, the counterparts of `_regex_pieces`."""
    if tag_free:
        return ['partial ::= "<" "/"?', f'tail0 ::= [^</{NAME_FIRST}] | "/" [^<{NAME_FIRST}]']
    lead = _gbnf_class_char(end[0])
    rules = [f"partial ::= {_gbnf_literal(end[0])}" + (" path1" if len(end) > 2 else "")]
    for i, ch in enumerate(end[1:], start=1):
        diverge = f"[^{lead}{_gbnf_class_char(ch)}]"
        if i == len(end) - 1:
            rules.append(f"tail{i - 1} ::= {diverge}")
        else:
            rules.append(f"tail{i - 1} ::= {diverge} | {_gbnf_literal(ch)} tail{i}")
            rules.append(f"path{i} ::= ({_gbnf_literal(ch)}" + (f" path{i + 1}" if i + 1 < len(end) - 1 else "") + ")?")
    return rules


def tagged_grammar(start: str, end: str, tag_free: bool = False) -> str:
    """The GBNF grammar of `start`, then any text that is not blank and holds neither `end` nor, when
    `tag_free`, the start of any tag, then `end`."""
    _check_tags(start, end, tag_free)
    lead_literal, lead_class = _gbnf_literal(end[0]), _gbnf_class_char(end[0])
    rules = [
        f"root ::= {_gbnf_literal(start)} body {_gbnf_literal(end)}",
        f"body ::= [{BLANK_CLASS}]* (first unit* partial* | partial+)",
        f"first ::= [^{lead_class}{BLANK_CLASS}] | partial* {lead_literal} tail0",
        f"unit ::= [^{lead_class}] | partial* {lead_literal} tail0",
        *_grammar_pieces(end, tag_free),
    ]
    return "\n".join(rules) + "\n"


def tagged(start: str, end: str, tag_free: bool = False) -> Constraint:
    """A constraint forcing output to be exactly `start`, a value that is not blank and holds neither `end`
    nor, when `tag_free`, the start of any tag, then `end`."""
    _check_tags(start, end, tag_free)
    regex = re.escape(start) + tagged_body_regex(end, tag_free) + re.escape(end)
    grammar = tagged_grammar(start, end, tag_free)
    return Constraint(regex=regex, grammar=grammar, tags=(start, end), tag_free=tag_free)


def read_tagged(text: str, start: str, end: str, tag_free: bool = False) -> tuple[str | None, str]:
    """The value of a tagged answer, or None and the reason it is refused.

    Accepts exactly what `tagged(start, end, tag_free)` lets a model write, after optional leading whitespace:
    the text must begin with `start`; the value runs to the first `end` (what follows is ignored), is not
    blank, and holds not even the start of a tag when `tag_free`. Tags match exactly (case and spaces included), as in the
    constraint. The value comes back without surrounding whitespace.
    """
    _check_tags(start, end, tag_free)
    answer = text.lstrip(BLANK)
    if not answer.startswith(start):
        return None, f"it does not begin with {start}"
    body, found, _ = answer[len(start):].partition(end)
    if not found:
        return None, f"it has no {end} after {start} (cut off, or never closed)"
    held = OPENING.search(body) if tag_free else None
    if held:
        return None, f"the value holds the start of a tag, {held.group()!r}, and values may hold tags only escaped"
    value = body.strip(BLANK)
    if not value:
        return None, "the value between the tags is blank"
    return value, ""


def parse_tagged(text: str, start: str, end: str, tag_free: bool = False) -> str | None:
    """The value of a tagged answer as `read_tagged` reads it, or None when it is refused."""
    return read_tagged(text, start, end, tag_free)[0]
