"""Several candidate updates per parameter from one batch: the sampling settings that make them differ,
and the record of each candidate (its value, or None when the output did not parse).

Candidate 0 uses the engine's own settings (greedy by default), so one candidate is exactly TGD's
usual update; candidates 1..k-1 sample at rising temperatures up to `temperature`, each with its own
seed, so the same run proposes the same candidates again (checkpoints resume exactly).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from localgrad.errors import InvalidInputError, check_int
from localgrad.request import SamplingSettings

MAX_CANDIDATES = 64
SEEDS_PER_ROUND = 1000


@dataclass(frozen=True)
class Candidate:
    """One proposed new value: `value` is None when the model's output was refused, and `problem` says why."""

    value: str | None
    problem: str | None
    raw_output: str
    temperature: float
    seed: int | None


def candidate_settings(base: SamplingSettings, k: int, temperature: float, round_index: int) -> list[SamplingSettings]:
    """Sampling settings of `k` candidates: `base` first, then temperatures rising to `temperature`.

    Each sampled candidate gets a seed of its own, distinct across rounds (`round_index` counts proposals).
    """
    check_int("candidates", k, 1, MAX_CANDIDATES)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0.0 < temperature <= 2.0:
        raise InvalidInputError(f"candidate temperature must be a number in (0, 2], got {temperature!r}.")
    check_int("round_index", round_index, 0)
    base_seed = base.seed if base.seed is not None else 0
    settings = [base]
    for j in range(1, k):
        settings.append(replace(
            base,
            temperature=round(temperature * j / (k - 1), 4),
            seed=base_seed + SEEDS_PER_ROUND * round_index + j,
        ))
    return settings


__all__ = ["Candidate", "candidate_settings"]
