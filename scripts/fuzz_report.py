"""Count how localgrad's public API answers fuzzed input: bad input should be a LocalgradError, valid input should work.

    python scripts/fuzz_report.py [--examples N] [--target NAME ...] [--show K]

Draws N cases per target from tests/fuzz/fuzz_cases.py (derandomized: the same cases on every run
of the same code) and prints, per target and in total, how many bad inputs gave a localgrad error,
a builtin error or silent acceptance, and how many valid inputs worked, were refused, crashed or
gave a wrong result; then up to K examples of each failing kind.
"""
from __future__ import annotations

import argparse
import collections
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fuzz"))

from fuzz_cases import OUTCOMES, TARGETS  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402

FAILING = ("builtin error", "silent acceptance", "valid refused", "valid crashed", "valid wrong result")


def count(name: str, examples: int) -> tuple[collections.Counter, dict[str, list[str]]]:
    """Outcome counts over `examples` draws of one target, with the cases behind each failing outcome."""
    counts: collections.Counter = collections.Counter()
    samples: dict[str, list[str]] = collections.defaultdict(list)

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(TARGETS[name])
    def run(case):
        outcome, detail = case.outcome()
        counts[outcome] += 1
        if outcome in FAILING:
            samples[outcome].append(f"{case!r}\n      -> {detail[:300]}")

    run()
    return counts, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=300, help="cases per target (default 300)")
    parser.add_argument("--target", action="append", choices=sorted(TARGETS), help="only these targets (repeatable)")
    parser.add_argument("--show", type=int, default=2, help="examples to print per target and failing outcome (default 2)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    total: collections.Counter = collections.Counter()
    header = f"{'target':<24}" + "".join(f"{o:>19}" for o in OUTCOMES)
    print(header)
    details = []
    for name in args.target or sorted(TARGETS):
        counts, samples = count(name, args.examples)
        total.update(counts)
        print(f"{name:<24}" + "".join(f"{counts[o]:>19}" for o in OUTCOMES), flush=True)
        for outcome in FAILING:
            for sample in samples[outcome][:args.show]:
                details.append(f"[{outcome}] {sample}")
    print(f"{'TOTAL':<24}" + "".join(f"{total[o]:>19}" for o in OUTCOMES))
    bad = sum(total[o] for o in ("localgrad error", "builtin error", "silent acceptance"))
    valid = sum(total[o] for o in ("ok", "valid refused", "valid crashed", "valid wrong result"))
    print(f"\n{bad} bad inputs: {total['localgrad error']} localgrad errors, {total['builtin error']} builtin errors, "
          f"{total['silent acceptance']} silently accepted")
    print(f"{valid} valid inputs: {total['ok']} ok, {total['valid refused']} refused, {total['valid crashed']} crashed, "
          f"{total['valid wrong result']} wrong results")
    if details:
        print("\nExamples:\n" + "\n".join(details))


if __name__ == "__main__":
    main()
