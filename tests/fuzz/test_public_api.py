"""Fuzz every public constructor and call: bad input is a LocalgradError, valid input works.

Runs under a hypothesis profile: `ci` (the default: a bounded, derandomized example count, so CI
cannot flake) or `long` (LOCALGRAD_FUZZ_PROFILE=long, for a deeper search on a workstation).
`scripts/fuzz_report.py` counts the outcomes of the same cases instead of asserting them.
"""
from __future__ import annotations

import os

import pytest
from fuzz_cases import TARGETS, Case
from hypothesis import HealthCheck, given, settings

COMMON = dict(deadline=None, database=None, derandomize=True, print_blob=False,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=40, **COMMON)
settings.register_profile("long", max_examples=1000, **COMMON)
settings.load_profile(os.environ.get("LOCALGRAD_FUZZ_PROFILE", "ci"))


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_public_api(name):
    @given(TARGETS[name])
    def check(case: Case):
        outcome, detail = case.outcome()
        expected = "ok" if case.valid else "localgrad error"
        assert outcome == expected, f"{case!r}\n-> {outcome}: {detail}"

    check()
