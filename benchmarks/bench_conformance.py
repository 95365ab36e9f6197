"""Figures for the conformance suite on sim: wall time of a full run (2 nodes x 2 mock GPUs, every
scenario), time per capability, and each rejection's time from scheduler decision to verdict, for
the reference driver (goal: under 15 s) and for the seed fork's stand-in, the mutant that refuses to
prepare a second claim on a GPU (tests/support/mutants/refuse_second_claim.py; goal: its full verdict in under
60 s, 149 s before prepare refusals ended the waits at once).

    .venv/bin/python benchmarks/bench_conformance.py [--runs N] [--only reference|seed-fork] [pytest args]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def one_run(extra: list[str]) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory(prefix="bench-conf-") as tmp:
        t0 = time.monotonic()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "conformance/scenarios",
                "-q",
                "-p",
                "no:cacheprovider",
                "-p",
                "no:hypothesispytest",
                "--cluster=sim",
                "--nodes=node-1,node-2",
                "--gpus=rtx3090x2",
                f"--report-dir={tmp}",
                *extra,
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        wall = time.monotonic() - t0
        report_path = Path(tmp) / "report.json"
        if not report_path.is_file():
            sys.exit(
                f"the suite wrote no report (exit "
                f"{proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
            )
        return wall, json.loads(report_path.read_text())


DRIVERS = {
    "reference": [],
    "seed-fork": [f"--sim-driver-command={sys.executable} -m tests.support.mutants.refuse_second_claim"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--only", choices=sorted(DRIVERS), default=None)
    args, extra = parser.parse_known_args()
    for name, driver_args in DRIVERS.items():
        if args.only and name != args.only:
            continue
        walls = []
        for i in range(args.runs):
            wall, report = one_run(driver_args + extra)
            walls.append(wall)
            print(
                f"{name} run {i + 1}: {wall:.1f}s wall (pytest start to exit), suite "
                f"{report['wall_seconds']}s, verdict {report['verdict']}"
            )
            for cap, v in report["capabilities"].items():
                seconds = sum(c["seconds"] for c in v["checks"])
                reason = f"  {v['reason'][:140]}" if v["verdict"] == "fail" else ""
                print(
                    f"  {cap:<13} {v['verdict']:<8} {seconds:6.2f}s over {len(v['checks'])} check(s){reason}"
                )
            for r in report["rejections"]:
                print(
                    f"  rejection {r['pod']}: signal after {r['signal_after']:.2f}s, "
                    f"verdict after {r['verdict_after']:.2f}s"
                )
        if len(walls) > 1:
            print(f"{name} wall: min {min(walls):.1f}s, max {max(walls):.1f}s over {len(walls)} runs")


if __name__ == "__main__":
    main()
