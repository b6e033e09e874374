"""The pieces every graph operation is built from.

A `Function` computes outputs from input Variables (its forward). Each output keeps a
`BackwardStep` that, given the output's feedback, says which feedback requests to send to
which inputs. The graph walk in `localgrad.execution` collects those requests level by level
and runs each level as one batch.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

from localgrad.request import Request
from localgrad.variable import Variable


@dataclass
class GradientTask:
    """Feedback owed to `target`: either an LLM `request` to run, or ready `text` passed through."""

    target: Variable
    request: Optional[Request] = None
    text: str = ""
    context: Optional[dict[str, str]] = None


class BackwardStep(ABC):
    """Builds the feedback requests from one output to its inputs (the output's `grad_fn`).

    `transparent` steps (sums) hand an objective on to their inputs unchanged: when the output
    of a sum is the thing being optimized, each summed input is an objective in its own right.
    """

    transparent: bool = False

    @abstractmethod
    def tasks(self, output: Variable, objective: bool, engine: Any) -> list[GradientTask]:
        """The feedback tasks for `output`'s inputs. `objective` is True when the output is a loss."""

    @property
    def name(self) -> str:
        """A short name for graphs and logs."""
        return type(self).__name__


class Function(ABC):
    """A graph operation: calling it runs `forward`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    @abstractmethod
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Compute the output Variable(s) and attach their backward steps."""


class BackwardContext(BackwardStep):
    """textgrad's grad_fn for Functions users write themselves: `backward_fn(*args, **kwargs, backward_engine=engine)`.

    The function adds feedback to the inputs itself (one call at a time); localgrad's own operations
    return their feedback requests instead, so each level of the graph runs as one batch.
    """

    def __init__(self, backward_fn: Callable[..., Any], *args: Any, **kwargs: Any):
        self.backward_fn = backward_fn
        self.fn_name = f"{backward_fn.__module__}.{backward_fn.__qualname__}"
        self.args = args
        self.kwargs = kwargs

    def __call__(self, backward_engine: Any) -> Any:
        return self.backward_fn(*self.args, **self.kwargs, backward_engine=backward_engine)

    def tasks(self, output: Variable, objective: bool, engine: Any) -> list[GradientTask]:
        self(engine)
        return []

    @property
    def name(self) -> str:
        return self.fn_name

    def __repr__(self) -> str:
        return self.fn_name


class Module(Function):
    """A reusable component with trainable parameters (textgrad's Module)."""

    def parameters(self) -> list[Variable]:
        """The variables an optimizer may change."""
        return []

    def named_parameters(self) -> Iterator[tuple[str, Variable]]:
        """(role description, parameter) pairs, as textgrad's Module gives them."""
        for p in self.parameters():
            yield p.get_role_description(), p

    def zero_grad(self) -> None:
        """Forget the feedback on every parameter."""
        for p in self.parameters():
            p.reset_gradients()
