"""Allocator invariants at scale (issue 13 part 3). Prints counts; asserts nothing.

Runs the random scenarios of tests/support/allocator_scenarios.py (consumable capacity with request policies,
shared counters, matchAttribute/distinctAttribute, firstAvailable, allocationMode All, admin access,
existing allocations made by the allocator) and checks every decision's invariants: never over
capacity or counters, never an exclusive device twice, shareIDs distinct, request counts and the
32-results limit kept, release exact.

    python benchmarks/bench_allocator_properties.py                  # 10,000 scenarios from seed 0
    python benchmarks/bench_allocator_properties.py --count 50000 --start 1000000
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.allocator_scenarios import check, classify, generate, run  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--start", type=int, default=0, help="first seed")
    args = parser.parse_args()
    outcomes: Counter[str] = Counter()
    violations: Counter[str] = Counter()
    failing: list[int] = []
    began = time.perf_counter()
    for seed in range(args.start, args.start + args.count):
        scenario = generate(seed)
        outcome = run(scenario)
        outcomes[classify(outcome)] += 1
        problems = check(scenario, outcome)
        for p in problems:
            violations[p.split(":")[0]] += 1
        if problems:
            failing.append(seed)
    elapsed = time.perf_counter() - began
    print(f"scenarios: {args.count} (seeds {args.start}..{args.start + args.count - 1}) in {elapsed:.1f} s")
    for name, n in outcomes.most_common():
        print(f"  {name}: {n}")
    print(f"scenarios violating an invariant: {len(failing)}")
    for name, n in violations.most_common():
        print(f"  {name}: {n}")
    if failing:
        print(f"  first failing seeds: {failing[:10]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
