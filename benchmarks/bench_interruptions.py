"""The interruption matrix: every point x signal x target of tests/support/interrupt_harness.py.

Prints one line per cell and the totals the issue asks for: leftovers (processes, work dirs, sockets)
and false PASS reports, both goal 0. ``make test`` runs a few representative cells
(tests/conformance/test_run_lifetime.py); this runs them all (32 cells, two at a time).

    python benchmarks/bench_interruptions.py [--jobs 2]
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.interrupt_harness import POINTS, SIGNALS, TARGETS  # noqa: E402


def cell(point: str, sig: str, target: str) -> dict:
    out = subprocess.run(
        [sys.executable, str(REPO / "tests" / "support" / "interrupt_harness.py"), point, sig, target],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
    )
    if out.returncode != 0:
        return {
            "point": point,
            "signal": sig,
            "target": target,
            "reached": False,
            "leftovers": -1,
            "false_pass": False,
            "error": out.stderr[-500:],
        }
    return json.loads(out.stdout)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args()
    cells = list(itertools.product(POINTS, SIGNALS, TARGETS))
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda c: cell(*c), cells))
    print(
        f"{'point':<10} {'signal':<8} {'target':<7} {'reached':<8} {'rc':>4} {'verdict':<11} "
        f"{'leftovers':>9} {'false PASS':>10} {'cleanup s':>9}"
    )
    for r in results:
        print(
            f"{r['point']:<10} {r['signal']:<8} {r['target']:<7} {r['reached']!s:<8} "
            f"{r.get('returncode', '-')!s:>4} {r.get('verdict')!s:<11} {r['leftovers']:>9} "
            f"{r['false_pass']!s:>10} {r.get('cleanup_s', '-')!s:>9}"
        )
        for what in ("leftover_processes", "leftover_work_dirs", "leftover_sockets", "error"):
            if r.get(what):
                print(f"    {what}: {r[what]}")
    reached = [r for r in results if r["reached"]]
    leftovers = sum(max(r["leftovers"], 0) for r in results)
    false_pass = sum(bool(r["false_pass"]) for r in results)
    print(
        f"cells: {len(results)} ({len(POINTS)} points x {len(SIGNALS)} signals x {len(TARGETS)} targets); "
        f"reached: {len(reached)}; leftovers: {leftovers}; false PASS: {false_pass}"
    )
    return 0 if leftovers == 0 and false_pass == 0 and len(reached) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
