"""Nothing outlives a run, and an interrupted run never says PASS.

A few representative cells of the interruption matrix (tests/support/interrupt_harness.py; all of it:
benchmarks/bench_interruptions.py), run side by side: each interrupts a real conformance run on sim and
counts what is left (processes, work dirs, sockets) and what the report says. Plus the mechanism
underneath (the sim's parent pipe), and runs that never start a cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
HARNESS = REPO / "tests" / "support" / "interrupt_harness.py"
CELLS = [("scenario", "SIGTERM", "pytest"), ("scenario", "SIGKILL", "pytest"), ("scenario", "SIGKILL", "sim")]
NO_CLUSTER = {"-k nomatch": ["-k", "nomatch"], "--collect-only": ["--collect-only"]}
# The whole run has a bound: when it passes, the run stops as a Ctrl-C would (the SIGINT path) and says so.
TIMED_OUT = ["--nodes=node-1", "--run-timeout=4", "-k", "test_released_capacity_lets_a_larger_claim_start"]


def _cell(point: str, sig: str, target: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(HARNESS), point, sig, target],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def _no_cluster(args: list[str], tmp: Path) -> dict[str, Any]:
    run_tmp = Path(tempfile.mkdtemp(prefix="gi-", dir="/tmp"))  # short: the sim's socket paths go under it
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "conformance/scenarios",
            "-q",
            "-p",
            "no:cacheprovider",
            "--cluster=sim",
            f"--report-dir={tmp / 'r'}",
            *args,
        ],
        cwd=REPO,
        env={**os.environ, "TMPDIR": str(run_tmp)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = tmp / "r" / "report.json"
    left = sorted(p.name for p in run_tmp.iterdir())
    shutil.rmtree(run_tmp, ignore_errors=True)
    return {
        "returncode": out.returncode,
        "left": left,
        "report": json.loads(report.read_text()) if report.exists() else None,
        "output": out.stdout[-1500:],
    }


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    with ThreadPoolExecutor(len(CELLS) + len(NO_CLUSTER) + 1) as pool:
        cells = {" ".join(c): pool.submit(_cell, *c) for c in CELLS}
        runs = {
            name: pool.submit(_no_cluster, args, tmp_path_factory.mktemp("nocluster"))
            for name, args in {**NO_CLUSTER, "timed out": TIMED_OUT}.items()
        }
        return {**{k: f.result() for k, f in cells.items()}, **{k: f.result() for k, f in runs.items()}}


@pytest.mark.parametrize("cell", [" ".join(c) for c in CELLS])
def test_an_interrupted_run_leaves_nothing_and_never_says_pass(cell: str, results: dict[str, Any]) -> None:
    r = results[cell]
    why = json.dumps({k: v for k, v in r.items() if k != "log_tail"}) + "\n" + r["log_tail"]
    assert r["reached"], why
    assert r["leftover_processes"] == [], why
    assert r["leftover_work_dirs"] == [] and r["leftover_sockets"] == [], why
    assert not r["false_pass"], why
    if r["target"] == "pytest" and r["signal"] == "SIGKILL":
        assert r["verdict"] is None, why  # killed outright: no report at all, certainly no PASS
    else:
        assert r["verdict"] == "incomplete" and r["returncode"] == 3, why


@pytest.mark.parametrize("name", sorted(NO_CLUSTER))
def test_a_run_that_starts_no_cluster_creates_no_work_dir(name: str, results: dict[str, Any]) -> None:
    r = results[name]
    assert r["returncode"] in (0, 5), r["output"]
    assert r["left"] == [] and r["report"] is None, r


def test_a_run_past_its_run_timeout_is_incomplete_and_leaves_nothing(results: dict[str, Any]) -> None:
    r = results["timed out"]
    assert r["returncode"] == 3, r["output"]
    assert r["report"]["verdict"] == "incomplete", r["output"]
    assert "the run was interrupted by the run timeout (4s)" in r["report"]["incomplete"], r["report"]
    assert r["left"] == [], r


def test_the_sim_stops_and_removes_the_orphaned_work_dir_when_its_parent_pipe_closes(tmp_path: Path) -> None:
    work = tmp_path / "gsc-work"
    work.mkdir()
    r, w = os.pipe()
    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sim",
            "--kubeconfig",
            str(work / "kc"),
            "--exit-with-fd",
            str(r),
            "--orphan-cleanup",
            str(work),
        ],
        cwd=REPO,
        pass_fds=(r,),
        stdout=subprocess.PIPE,
        text=True,
    )
    os.close(r)
    try:
        assert sim.stdout is not None and "sim: serving" in sim.stdout.readline()
        os.close(w)  # what the kernel does when the parent dies
        assert sim.wait(30) == 0
        assert not work.exists()
    finally:
        if sim.poll() is None:
            sim.send_signal(signal.SIGKILL)
            sim.wait()
