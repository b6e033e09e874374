"""Variable: a node of the text graph. It holds a value (text or an image), what the value is for,
whether it should be optimized, the variables it was computed from, and the feedback it received.
"""
from __future__ import annotations

import html
import numbers
import os
from collections import abc, defaultdict
from collections.abc import MutableSet
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Optional, Union

from localgrad.errors import InvalidInputError, MissingDependencyError, check_int

if TYPE_CHECKING:
    from localgrad.autograd.function import BackwardStep
    from localgrad.engine import Engine


def _image_like(value: Any) -> bool:
    if isinstance(value, (bytes, bytearray)):
        return True
    try:
        from PIL import Image
    except ImportError:
        return False
    return isinstance(value, Image.Image)


class OrderedSet(MutableSet):
    """A set that keeps insertion order: textgrad's set operations (add, discard, in, |) on a stable order.

    It also indexes and compares equal to a list in the same order, so code written for either keeps working.
    """

    def __init__(self, items: Iterable[Any] = ()):
        self._items: dict[Any, None] = dict.fromkeys(items)

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: Any) -> None:
        """Append `item` unless it is already here."""
        self._items[item] = None

    def discard(self, item: Any) -> None:
        """Remove `item` if it is here."""
        self._items.pop(item, None)

    def __getitem__(self, index: Union[int, slice]) -> Any:
        items = list(self._items)
        return items[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, tuple)):
            return list(self._items) == list(other)
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{{{', '.join(map(repr, self._items))}}}" if self._items else "set()"

    @classmethod
    def _from_iterable(cls, items: Iterable[Any]) -> "OrderedSet":
        return cls(items)


class Variable:
    """A value in the graph: text (or an image) with a role description and feedback ("gradients").

    `predecessors` and `gradients` are ordered sets (insertion order), so the same run always builds
    the same prompts; assigning any iterable to them (textgrad's `v.gradients = set()`) keeps that type.
    `gradients_context` maps each gradient to the conversation it came from (None when unknown, as in textgrad).
    """

    def __init__(
        self,
        value: Union[str, int, float, bytes, Any] = "",
        image_path: Union[str, os.PathLike, None] = None,
        predecessors: Optional[Iterable["Variable"]] = None,
        requires_grad: bool = True,
        *,
        role_description: str,
    ):
        if not isinstance(role_description, str) or not role_description.strip():
            raise InvalidInputError(
                "Variable needs a non-empty role_description (what the text is for, e.g. "
                "'answer to the question'); the optimizer and feedback prompts depend on it."
            )
        if not isinstance(requires_grad, bool):
            raise InvalidInputError(f"requires_grad must be True or False, got {requires_grad!r}.")
        if predecessors is not None and (isinstance(predecessors, (str, bytes, dict, Variable)) or not isinstance(predecessors, abc.Iterable)):
            raise InvalidInputError(f"predecessors must be a list of Variables or None, got {type(predecessors).__name__}.")
        preds = list(predecessors or [])
        for p in preds:
            if not isinstance(p, Variable):
                raise InvalidInputError(f"predecessors must be Variables, got {type(p).__name__}.")
        if not requires_grad and any(p.requires_grad for p in preds):
            raise InvalidInputError(
                "A variable that does not require grad cannot be computed from variables that do; "
                "set requires_grad=True or detach its inputs."
            )
        self.mime_type: Optional[str] = None
        if image_path not in (None, ""):
            if value not in ("", None):
                raise InvalidInputError("Pass either value= or image_path=, not both.")
            value = image_path
            is_image = True
        else:
            is_image = _image_like(value)
        if is_image:
            from localgrad.images import load_image

            if requires_grad:
                raise InvalidInputError(
                    "Images cannot be optimized: create image variables with requires_grad=False. "
                    "Feedback still flows through image-conditioned calls to the text beside them."
                )
            value, self.mime_type = load_image(value)
        elif isinstance(value, bool) or not isinstance(value, (str, numbers.Number)):
            raise InvalidInputError(
                f"A Variable's value must be text (str), a number, or an image (bytes, PIL image, image_path=); "
                f"got {type(value).__name__}."
            )
        elif not isinstance(value, str):
            value = str(value)
        self.value: Union[str, bytes] = value
        self.role_description = role_description
        self.requires_grad = requires_grad
        self.predecessors = preds
        self.gradients = OrderedSet()
        self.gradients_context: dict[Variable, Optional[dict[str, str]]] = defaultdict(type(None))
        self.grad_fn: Optional["BackwardStep"] = None

    @property
    def gradients(self) -> OrderedSet:
        """The feedback received, in the order it arrived."""
        return self._gradients

    @gradients.setter
    def gradients(self, items: Iterable["Variable"]) -> None:
        self._gradients = OrderedSet(items)

    @property
    def predecessors(self) -> OrderedSet:
        """The variables this one was computed from, in order."""
        return self._predecessors

    @predecessors.setter
    def predecessors(self, items: Iterable["Variable"]) -> None:
        self._predecessors = OrderedSet(items)

    @property
    def is_image(self) -> bool:
        """True when this variable holds an image."""
        return self.mime_type is not None

    def __repr__(self) -> str:
        shown = f"<image {self.mime_type}, {len(self.value)} bytes>" if self.is_image else repr(self.value)
        return f"Variable(value={shown}, role={self.role_description!r}, grads={len(self.gradients)})"

    def __str__(self) -> str:
        return self.value if isinstance(self.value, str) else repr(self)

    def __add__(self, other: "Variable") -> "Variable":
        from localgrad.autograd.functional import sum as sum_variables

        if not isinstance(other, Variable):
            raise InvalidInputError(f"Can only add a Variable to a Variable, got {type(other).__name__}.")
        return sum_variables([self, other])

    def get_value(self) -> Union[str, bytes]:
        """The current value."""
        return self.value

    def set_value(self, value: str) -> None:
        """Replace the text value (what the optimizer does on each step)."""
        if self.is_image or not isinstance(value, str):
            raise InvalidInputError("set_value takes text, and only on text variables.")
        self.value = value

    def get_role_description(self) -> str:
        """What this variable is for, as shown to the models."""
        return self.role_description

    def set_role_description(self, role_description: str) -> None:
        """Change what this variable is said to be for."""
        if not isinstance(role_description, str) or not role_description.strip():
            raise InvalidInputError("role_description must be a non-empty string.")
        self.role_description = role_description

    def get_short_value(self, n_words_offset: int = 10) -> str:
        """The first and last words of the value, for logs."""
        check_int("n_words_offset", n_words_offset, 0)
        if self.is_image:
            return repr(self)
        words = self.value.split(" ")
        if len(words) <= 2 * n_words_offset:
            return self.value
        return " ".join(words[:n_words_offset]) + " (...) " + " ".join(words[-n_words_offset:])

    def set_grad_fn(self, grad_fn: "BackwardStep") -> None:
        """Attach the step that sends this variable's feedback to its predecessors."""
        self.grad_fn = grad_fn

    def get_grad_fn(self) -> Optional["BackwardStep"]:
        """The step that sends this variable's feedback to its predecessors, or None for a leaf."""
        return self.grad_fn

    def add_gradient(self, gradient: "Variable", context: Optional[dict[str, str]] = None) -> None:
        """Add one piece of feedback, with the conversation it came from."""
        if not isinstance(gradient, Variable) or gradient.is_image:
            raise InvalidInputError(f"A gradient must be a text Variable, got {gradient!r:.80}.")
        if context is not None and not isinstance(context, dict):
            raise InvalidInputError(f"A gradient's context must be a dict or None, got {type(context).__name__}.")
        self.gradients.add(gradient)
        self.gradients_context[gradient] = context

    def get_gradient_text(self) -> str:
        """All feedback received, joined in the order it arrived."""
        return "\n".join(g.value for g in self.gradients)

    def reset_gradients(self) -> None:
        """Forget all feedback."""
        self.gradients = OrderedSet()
        self.gradients_context = defaultdict(type(None))

    zero_grad = reset_gradients

    def backward(self, engine: Union["Engine", str, None] = None) -> None:
        """Send feedback from this variable to every variable it depends on, level by level in batches."""
        from localgrad.execution import backward

        backward([self], engine=engine)

    def generate_graph(self, print_gradients: bool = False) -> Any:
        """The graph that computed this variable as a `graphviz.Digraph` (role, value excerpt, feedback per node).

        Building it needs the `graphviz` package; rendering it (`.render()`, notebooks) also needs Graphviz's `dot`.
        Feedback is shown as an excerpt, or whole with `print_gradients=True`.
        """
        try:
            from graphviz import Digraph
        except ImportError as exc:
            raise MissingDependencyError("graphviz", "graph", "Variable.generate_graph") from exc
        from localgrad.execution import topological_order

        graph = Digraph(comment=f"computation graph of {self.role_description}")
        graph.attr(rankdir="TB", ranksep="0.2", bgcolor="white")
        for node in topological_order([self]):
            rows = [("Role", node.role_description), ("Value", _excerpt(str(node), GRAPH_EXCERPT))]
            if node.grad_fn is not None:
                rows.append(("Grad fn", node.grad_fn.name))
            if node.gradients:
                limit = None if print_gradients else GRAPH_EXCERPT
                rows += [(f"Feedback {i + 1}", _excerpt(g.value, limit)) for i, g in enumerate(node.gradients)]
            label = "<br/>".join(f"<b>{html.escape(k)}:</b> {_wrap(v)}" for k, v in rows)
            graph.node(str(id(node)), label=f"<{label}>", shape="box", style="filled", fillcolor="aliceblue",
                       fontname="Helvetica", fontsize="9")
            for predecessor in node.predecessors:
                graph.edge(str(id(predecessor)), str(id(node)))
        return graph


GRAPH_EXCERPT = 160


def _excerpt(text: str, limit: Optional[int]) -> str:
    text = " ".join(str(text).split())
    return text if limit is None or len(text) <= limit else text[:limit - 3] + "..."


def _wrap(text: str, width: int = 48) -> str:
    """HTML-escaped text broken into lines of about `width` characters, for graphviz HTML labels."""
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return "<br/>".join(html.escape(chunk) for chunk in lines)
