"""The one place that batches: the backward walk, level by level, each level one engine batch.

A node's level is its longest distance from a root. Every node at a level receives all its
feedback from lower levels, so all feedback requests a level produces are independent and go
to the engine together. Gradients are appended in a fixed order (level, node order, task order),
so a batched run builds exactly the prompts a one-by-one run builds.
"""
from __future__ import annotations

from typing import Iterable, Sequence, Union

from localgrad.autograd.function import GradientTask
from localgrad.engine import Engine, resolve_engine
from localgrad.errors import GraphError, InvalidInputError
from localgrad.protocol import read_feedback
from localgrad.variable import Variable


def topological_order(roots: Sequence[Variable]) -> list[Variable]:
    """Every variable the roots depend on, each after all of its predecessors (depth-first, ordered).

    The walk keeps its own stack, so a graph of any depth (a chain of thousands of calls) is ordered
    without recursion; the order is the one a recursive depth-first walk gives.
    """
    order: list[Variable] = []
    visited: set[int] = set()
    for root in roots:
        if id(root) in visited:
            continue
        visited.add(id(root))
        stack = [(root, iter(root.predecessors))]
        while stack:
            node, pending = stack[-1]
            for p in pending:
                if id(p) not in visited:
                    visited.add(id(p))
                    stack.append((p, iter(p.predecessors)))
                    break
            else:
                order.append(node)
                stack.pop()
    return order


def levels(roots: Sequence[Variable]) -> list[list[Variable]]:
    """The variables grouped by longest distance from a root: level 0 holds the roots."""
    order = topological_order(roots)
    depth = {id(r): 0 for r in roots}
    for v in reversed(order):
        for p in v.predecessors:
            depth[id(p)] = max(depth.get(id(p), 0), depth[id(v)] + 1)
    grouped: list[list[Variable]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for v in order:
        grouped[depth[id(v)]].append(v)
    return grouped


def run_tasks(tasks: list[GradientTask], engine: Engine) -> None:
    """Run every task's request in one engine batch, then append the feedback to each target in order."""
    pending = [t for t in tasks if t.request is not None]
    completions = engine.generate_batch([t.request for t in pending])
    texts = {id(t): read_feedback(c.text) for t, c in zip(pending, completions)}
    for task in tasks:
        text = texts.get(id(task), task.text)
        gradient = Variable(text, requires_grad=False, role_description=f"feedback to {task.target.role_description}")
        task.target.add_gradient(gradient, task.context)


def backward(roots: Union[Variable, Iterable[Variable]], engine: Union[Engine, str, None] = None) -> None:
    """Propagate feedback from the roots (losses) to every variable that requires grad.

    Each level of the graph is one batch of feedback requests to the engine.
    """
    if not isinstance(roots, (Variable, list, tuple)):
        raise InvalidInputError(f"backward takes a Variable or a list of Variables (the losses), got {type(roots).__name__}.")
    roots = [roots] if isinstance(roots, Variable) else list(roots)
    if not roots:
        raise InvalidInputError("backward needs at least one root Variable.")
    for root in roots:
        if not isinstance(root, Variable):
            raise InvalidInputError(f"backward roots must be Variables, got {type(root).__name__}.")
    if not any(root.requires_grad for root in roots):
        raise GraphError("None of the roots requires grad, so there is nothing to send feedback to.")
    resolved = resolve_engine(engine, "the backward pass")
    objectives = {id(r) for r in roots}
    for level in levels(roots):
        tasks: list[GradientTask] = []
        for node in level:
            step = node.grad_fn
            is_objective = id(node) in objectives
            if step is None or not node.requires_grad or not (node.gradients or is_objective):
                continue
            if step.transparent and is_objective and not node.gradients:
                objectives.update(id(p) for p in node.predecessors)
                continue
            tasks.extend(step.tasks(node, is_objective, resolved))
        if tasks:
            run_tasks(tasks, resolved)
