"""One run of the conformance suite as a user starts it (pytest on conformance/scenarios, in a fresh
process from the repository root), for the tests that judge the suite by its exit code, output and report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
# Bounds short enough for the sim (the suite's own defaults there are 20 s and 1 s).
FAST = ["--wait-timeout=6", "--settle-seconds=0.5"]


@dataclass
class SuiteRun:
    code: int  # the suite's exit code: 0 PASS, 1 FAIL, 3 INCOMPLETE, 4 bad input
    output: str  # stdout and stderr together
    report: dict[str, Any] = field(default_factory=dict)  # report.json, {} when none was written
    wall: float = 0.0  # seconds the run took


def run_suite(tmp_path: Path, *args: str, timeout: float = 150) -> SuiteRun:
    """The suite with ``args``, its report in ``tmp_path/report``. Every process the run starts inherits
    RUN_MARK=tmp_path, so a test can find what a run left behind."""
    report_dir = tmp_path / "report"
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
            "no:hypothesispytest",  # the scenarios use none of it; loading it costs ~0.7 s per run
            f"--report-dir={report_dir}",
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "RUN_MARK": str(tmp_path)},
    )
    wall = time.monotonic() - t0
    report_file = report_dir / "report.json"
    report = json.loads(report_file.read_text()) if report_file.is_file() else {}
    return SuiteRun(proc.returncode, proc.stdout + proc.stderr, report, wall)


def assert_fails_for(report: dict[str, Any], output: str, capability: str, reason: str) -> None:
    """The run judged ``capability`` FAIL for one of the ``|``-separated reasons (a mutant's verdict)."""
    verdict = report["capabilities"].get(capability)
    assert verdict is not None, f"capability {capability} did not run:\n{output[-3000:]}"
    assert verdict["verdict"] == "fail", f"{capability} was {verdict['verdict']}:\n{output[-3000:]}"
    assert any(r in verdict["reason"] for r in reason.split("|")), verdict["reason"]


def check_outcomes(report: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """Each capability's checks and their outcomes, for comparing two runs of the suite."""
    return {
        cap: tuple(sorted(f"{c['test']}={c['outcome']}" for c in v["checks"]))
        for cap, v in report["capabilities"].items()
    }
