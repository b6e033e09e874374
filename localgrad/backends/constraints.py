"""Output constraints as data: the optimizer's tag format as a regex and an equivalent GBNF grammar,
plus the tolerant parser used when a backend cannot constrain its output.

The tag body may hold any text, `<` and markup included, except the closing tag itself, so code
and HTML variables survive a constrained update.
"""
from __future__ import annotations

import re

from localgrad.errors import InvalidInputError
from localgrad.request import Constraint


def _regex_class_char(ch: str) -> str:
    return "\\" + ch if ch in "\\]^-[" else ch


def _gbnf_class_char(ch: str) -> str:
    return {"\\": "\\\\", "]": "\\]", "^": "\\^", "-": "\\-", "[": "\\[", "\n": "\\n"}.get(ch, ch)


def _gbnf_literal(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _check_tags(start: str, end: str) -> None:
    if not start or not end:
        raise InvalidInputError("Both tags of a tagged constraint must be non-empty strings.")
    if end[0] in end[1:]:
        raise InvalidInputError(
            f"The closing tag {end!r} repeats its first character {end[0]!r}; "
            "use a closing tag whose first character appears once, such as '</IMPROVED_VARIABLE>'."
        )


def tagged_body_regex(end: str, max_units: int | None = None) -> str:
    """A regex for any text with a non-space character that does not contain `end` (whose first character is unique),
    at most about `max_units` characters long when given."""
    first = _regex_class_char(end[0])
    tail = f"[^{first}{_regex_class_char(end[-1])}]"
    for ch in reversed(end[1:-1]):
        tail = f"(?:[^{first}{_regex_class_char(ch)}]|{re.escape(ch)}{tail})"
    opener = f"{re.escape(end[0])}+{tail}"
    repeat = "*" if max_units is None else f"{{0,{max_units}}}"
    return f"[ \\t\\r\\n]*(?:[^{first} \\t\\r\\n]|{opener})(?:[^{first}]|{opener}){repeat}"


def tagged_grammar(start: str, end: str, max_units: int | None = None) -> str:
    """The GBNF grammar of `start`, then any text without `end` that is not blank, then `end`
    (the text at most about `max_units` characters long when given)."""
    _check_tags(start, end)
    first = _gbnf_class_char(end[0])
    repeat = "*" if max_units is None else f"{{0,{max_units}}}"
    rules = [
        f"root ::= {_gbnf_literal(start)} body {_gbnf_literal(end)}",
        f"body ::= [ \\t\\r\\n]* (first-unit) unit{repeat}",
        f"first-unit ::= [^{first} \\t\\r\\n] | {_gbnf_literal(end[0])}+ x1",
        f"unit ::= [^{first}] | {_gbnf_literal(end[0])}+ x1",
    ]
    for i, ch in enumerate(end[1:], start=1):
        diverge = f"[^{first}{_gbnf_class_char(ch)}]"
        if i == len(end) - 1:
            rules.append(f"x{i} ::= {diverge}")
        else:
            rules.append(f"x{i} ::= {diverge} | {_gbnf_literal(ch)} x{i + 1}")
    return "\n".join(rules) + "\n"


def tagged(start: str, end: str) -> Constraint:
    """A constraint forcing output to be exactly `start`, a value that is not blank, then `end`."""
    _check_tags(start, end)
    regex = re.escape(start) + tagged_body_regex(end) + re.escape(end)
    return Constraint(regex=regex, grammar=tagged_grammar(start, end), tags=(start, end))


def _loose_tag(tag: str) -> str:
    inner = tag.strip()
    if inner.startswith("<") and inner.endswith(">"):
        inner = inner[1:-1].strip()
        closing = inner.startswith("/")
        name = inner[1:].strip() if closing else inner
        return r"<\s*" + (r"/\s*" if closing else "") + re.escape(name) + r"\s*>"
    return re.escape(tag)


def parse_tagged(text: str, start: str, end: str) -> str | None:
    """The text between the first `start` tag and the next `end` tag, stripped; None when either is missing.

    Tolerant of case and of spaces inside the tags; strict about both tags being there,
    so a truncated answer is never taken as a value.
    """
    pattern = re.compile(_loose_tag(start) + r"(.*?)" + _loose_tag(end), re.IGNORECASE | re.DOTALL)
    match = pattern.search(text)
    if match is None:
        return None
    value = match.group(1).strip()
    return value or None
