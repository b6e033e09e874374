"""One parameter's update as TGD asks for it and reads it: the prompt, the constraint, the reading of the answer.

The prompt shows the value, the feedback and every other text escaped (`localgrad.protocol`), so none of
them can open or close a tag. The constraint allows exactly `<IMPROVED_VARIABLE>` + a body that holds not
even the start of a tag + `</IMPROVED_VARIABLE>`, and `read_update` accepts exactly that (after leading whitespace) on backends
that cannot constrain, too. The body is unescaped, so a value that holds tag text round-trips; a value
holding a tag of the prompt that its old value did not hold (copied escaped from the prompt) is cut where
that tag begins, and refused when nothing is left; a loop is cut.
"""
from __future__ import annotations

import re
from typing import Sequence

from localgrad.backends.constraints import read_tagged, tagged
from localgrad.errors import InvalidInputError
from localgrad.prompts import optimizer as P
from localgrad.prompts.tags import TAG_NAMES
from localgrad.protocol import (
    TAG,
    cut_repetition,
    escape,
    tag_counts,
    tags_of,
    unescape,
)
from localgrad.request import Constraint
from localgrad.variable import Variable


def check_tags(tags: Sequence[str]) -> tuple[str, str]:
    """The optimizer's tags, checked: an opening `<NAME>` and a closing `</NAME>` (NAME in capitals, digits, `_`)."""
    if not isinstance(tags, (list, tuple)) or len(tags) != 2 or not all(isinstance(t, str) for t in tags):
        raise InvalidInputError("new_variable_tags must be two strings: [start_tag, end_tag].")
    start, end = tags
    if not (TAG.fullmatch(start) and TAG.fullmatch(end) and not start.startswith("</") and end.startswith("</")):
        raise InvalidInputError(
            f"new_variable_tags must look like ['<NAME>', '</NAME>'] with NAME in capitals, digits and '_', "
            f"got {list(tags)!r}; the default is ['<IMPROVED_VARIABLE>', '</IMPROVED_VARIABLE>']."
        )
    return start, end


def scaffolding(tags: Sequence[str]) -> tuple[str, ...]:
    """The tag names of an update prompt: every name localgrad's prompts write, and the optimizer's own."""
    start, end = check_tags(tags)
    return tuple(dict.fromkeys([*TAG_NAMES, start[1:-1], end[2:-1]]))


def update_constraint(tags: Sequence[str]) -> Constraint:
    """The output constraint of an update: the tags around a value that holds no tag, not even the start of one
    (only escaped ones)."""
    start, end = check_tags(tags)
    return tagged(start, end, tag_free=True)


def update_prompt(
    variable: Variable,
    tags: Sequence[str],
    constraints: Sequence[str],
    memory: Sequence[dict[str, str]],
    examples: Sequence[str],
    include_context: bool,
) -> str:
    """The user message asking for one parameter's new value; every text in it is escaped."""
    shown = escape
    feedback = []
    for g in variable.gradients:
        context = variable.gradients_context.get(g)
        if include_context and context:
            feedback.append(P.FEEDBACK_WITH_CONTEXT.format(feedback=shown(g.value), context=context.get("conversation", "")))
        else:
            feedback.append(shown(g.value))
    extras = ""
    if constraints:
        extras += P.CONSTRAINTS_BLOCK.format(
            constraints="\n".join(P.CONSTRAINT_LINE.format(constraint=shown(c)) for c in constraints)
        )
    if memory:
        extras += P.MEMORY_BLOCK.format(
            entries="\n".join(P.MEMORY_ENTRY.format(value=shown(m["value"]), feedback=shown(m["feedback"])) for m in memory)
        )
    if examples:
        extras += P.EXAMPLES_BLOCK.format(examples="\n".join(P.EXAMPLE_LINE.format(example=shown(e)) for e in examples))
    return P.UPDATE_REQUEST.format(
        role=shown(variable.role_description),
        value=shown(variable.value),
        feedback="\n".join(feedback),
        extras=extras,
        start_tag=tags[0],
        end_tag=tags[1],
    )


def scaffolding_start(value: str, allowed: dict[str, int], names: Sequence[str]) -> int | None:
    """Where `value` first holds a tag of the prompt more often than `allowed` says (the old value's counts), or None."""
    pattern = re.compile("|".join(re.escape(t) for t in tags_of(names)))
    seen: dict[str, int] = {}
    for match in pattern.finditer(value):
        seen[match[0]] = seen.get(match[0], 0) + 1
        if seen[match[0]] > allowed.get(match[0], 0):
            return match.start()
    return None


def read_update(text: str, old_value: str, tags: Sequence[str]) -> tuple[str | None, str]:
    """The new value in an optimizer's answer, or None and why it is refused.

    The answer is read as the update constraint allows it; the value is unescaped; a value holding a tag of
    the prompt more often than `old_value` is cut before that tag (refused if nothing is left before it); a loop
    the old value does not have is cut.
    """
    names = scaffolding(tags)
    body, problem = read_tagged(text, tags[0], tags[1], tag_free=True)
    if body is None:
        return None, problem
    value = unescape(body)
    cut = scaffolding_start(value, tag_counts(old_value, names), names)
    if cut is not None:
        value = value[:cut].rstrip()
        if not value.strip():
            return None, "the value is only a tag of the prompt, copied from the prompt"
    if cut_repetition(old_value) == old_value:
        value = cut_repetition(value)
    return value, ""
