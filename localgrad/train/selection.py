"""Choosing among scored prompts: the best by validation score, and a Pareto frontier over validation
examples (as GEPA does) from which later steps start.

A pool entry is a prompt with its per-example validation results (1 correct, 0 wrong). The frontier
keeps every prompt that is best on some validation example and not dominated by another prompt; a
step's parent is drawn from it, weighted by how many examples each frontier prompt is best on.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class Scored:
    """A prompt and its validation results, one 0/1 per validation example; `step` is where it came from."""

    prompt: str
    val: list[int]
    step: int

    @property
    def score(self) -> float:
        """Mean validation accuracy."""
        return sum(self.val) / len(self.val) if self.val else 0.0

    def to_dict(self) -> dict:
        """Plain values, for checkpoints."""
        return {"prompt": self.prompt, "val": list(self.val), "step": self.step}


def best_index(pool: Sequence[Scored]) -> int:
    """The pool entry with the highest validation score; the earliest on ties (a newcomer must beat it)."""
    best = 0
    for i, entry in enumerate(pool):
        if entry.score > pool[best].score:
            best = i
    return best


def dominates(a: Sequence[int], b: Sequence[int]) -> bool:
    """True when `a` is at least as good as `b` on every example and better on one."""
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def frontier(pool: Sequence[Scored]) -> dict[int, int]:
    """Frontier pool indices, each with the number of validation examples it is best on.

    Examples no prompt answers correctly say nothing and are skipped; of prompts with the same
    results only the earliest counts; a prompt dominated by another is left out.
    """
    if not pool:
        return {}
    distinct: dict[tuple[int, ...], int] = {}
    for i, entry in enumerate(pool):
        distinct.setdefault(tuple(entry.val), i)
    keep = [i for key, i in distinct.items() if not any(dominates(other, key) for other in distinct if other != key)]
    wins: dict[int, int] = {}
    for example in range(len(pool[0].val)):
        top = max(pool[i].val[example] for i in keep)
        if top <= 0:
            continue
        for i in keep:
            if pool[i].val[example] == top:
                wins[i] = wins.get(i, 0) + 1
    return wins


def pick_parent(pool: Sequence[Scored], rng: random.Random) -> int:
    """A frontier prompt drawn with weight = examples it is best on; the best prompt when no example is solved."""
    wins = frontier(pool)
    if not wins:
        return best_index(pool)
    indices = sorted(wins)
    return rng.choices(indices, weights=[wins[i] for i in indices])[0]


__all__ = ["Scored", "best_index", "dominates", "frontier", "pick_parent"]
