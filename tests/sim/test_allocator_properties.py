"""Allocator invariants over a derandomized set of random scenarios (tests/support/allocator_scenarios.py):
never over capacity or counters, never an exclusive device twice, shareIDs distinct, request counts and
the 32-results limit kept, constraints kept, release exact. The 10,000-scenario run is
benchmarks/bench_allocator_properties.py."""

from __future__ import annotations

import pytest

import sim.allocator as allocator
from tests.support.allocator_scenarios import check, classify, generate, run

SEEDS = range(400)


def test_invariants_hold_on_random_scenarios() -> None:
    outcomes: dict[str, int] = {}
    for seed in SEEDS:
        scenario = generate(seed)
        outcome = run(scenario)
        outcomes[classify(outcome)] = outcomes.get(classify(outcome), 0) + 1
        assert check(scenario, outcome) == [], f"seed {seed}"
    # The set must exercise both decisions, or it proves little.
    assert outcomes.get("allocated", 0) > len(SEEDS) // 4
    assert outcomes.get("cannot allocate all claims", 0) > len(SEEDS) // 4


@pytest.mark.parametrize("broken", ["capacity_fits", "in_use"])
def test_invariant_check_catches_a_broken_allocator(monkeypatch: pytest.MonkeyPatch, broken: str) -> None:
    monkeypatch.setattr(allocator._Search, broken, lambda self, *a: broken == "capacity_fits")
    assert any(check(sc := generate(seed), run(sc)) for seed in SEEDS)
