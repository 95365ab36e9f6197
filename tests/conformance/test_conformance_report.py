"""The report: a verdict per capability, SIMULATED heading on sim, diagnostics for failures."""

from __future__ import annotations

import json
from pathlib import Path

from conformance.report import SIMULATED_BANNER, CheckResult, build, render_markdown, verdicts, write


def _checks() -> list[CheckResult]:
    return [
        CheckResult("t::a", "publish", "passed", 0.1),
        CheckResult("t::b", "sharing", "passed", 1.0),
        CheckResult(
            "t::c",
            "sharing",
            "failed",
            2.0,
            reason="pod x never ran",
            diagnostics={"driver log node-1": "prepare refused"},
        ),
        CheckResult("t::d", "rounding", "skipped", 0.0, reason="no requestPolicy"),
    ]


def test_one_failed_check_fails_its_capability() -> None:
    v = verdicts(_checks())
    assert v["publish"]["verdict"] == "pass"
    assert v["sharing"]["verdict"] == "fail" and v["sharing"]["reason"] == "pod x never ran"
    assert v["rounding"] == {**v["rounding"], "verdict": "skipped", "reason": "no requestPolicy"}
    assert "lifecycle" not in v  # not run: not reported as passed


def test_sim_report_is_headed_simulated_and_carries_diagnostics(tmp_path: Path) -> None:
    report = build({"simulated": True, "provider": "sim", "kubernetes_version": "v1.36.0"}, _checks(), [])
    assert report["verdict"] == "fail" and report["banner"] == SIMULATED_BANNER
    jpath, mpath = write(tmp_path, report)
    md = mpath.read_text()
    assert md.startswith("# SIMULATED") and "prepare refused" in md and "| sharing | **fail** |" in md
    assert json.loads(jpath.read_text())["failures"][0]["capability"] == "sharing"


def test_early_stop_is_an_error_verdict() -> None:
    report = build({"simulated": False}, [], [], error="the cluster does not serve the DRA API")
    assert report["verdict"] == "error" and "does not serve" in render_markdown(report)
    assert not render_markdown(report).startswith("# SIMULATED")


def test_capability_not_claimed_does_not_spoil_a_pass() -> None:
    checks = [
        CheckResult("t::a", "sharing", "passed", 1.0),
        CheckResult("t::e", "enforcement", "skipped", 0.0, reason="profile does not claim it"),
    ]
    report = build({"simulated": True}, checks, [])
    assert report["verdict"] == "pass"
    assert report["capabilities"]["enforcement"]["reason"] == "profile does not claim it"
