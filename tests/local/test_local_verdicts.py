"""The suite's verdicts on a real control plane with the sim's nodes (``--cluster local``) are the ones it
gives on sim: the reference driver passes the node-heavy capabilities (all of them with
GSC_LOCAL_WHOLE_SUITE=1), and the mutants that matter most fail the capability they break, for the same
reason. Prints the wall time of each run on both."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conformance.test_suite_bites import MUTANTS, run_suite
from tests.support.suite import assert_fails_for, check_outcomes

# sharing off, prepare refuses a second claim, the container told other than what was consumed
MOST = (
    "no-allow-multiple-allocations",
    "prepare-refuses-second-claim",
    "container-told-the-unrounded-request",
)
LOCAL_TIMEOUT = 420


# The capabilities whose checks lean on the nodes most (prepare, unprepare, restart, placement). The whole
# suite runs on real nodes (test_local_real_nodes.py) against the same control plane; this keeps CI's
# warm run within its 15 minutes. GSC_LOCAL_WHOLE_SUITE=1 make test-local runs it whole here too.
SIM_NODE_MARKERS = "sharing or exclusivity or release or lifecycle"


def test_reference_driver_gets_the_same_verdicts_on_local_as_on_sim(
    tmp_path: Path, local_release: str, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = os.environ.get("GSC_LOCAL_WHOLE_SUITE") == "1"
    args = ("--nodes=node-1,node-2", "--gpus=mixed", *(() if whole else ("-m", SIM_NODE_MARKERS)))
    sim, _, sim_wall = run_suite(tmp_path / "sim", *args, timeout=180)
    local, out, wall = run_suite(
        tmp_path / "local", "--cluster=local", f"--kube-version={local_release}", *args, timeout=LOCAL_TIMEOUT
    )
    assert local["provider"] == "local", out[-3000:]
    assert local["kubernetes_version"] == f"v{local_release}"
    assert local["banner"].startswith(f"control plane: real Kubernetes v{local_release}; nodes: simulated")
    verdicts = {c: v["verdict"] for c, v in local["capabilities"].items()}
    assert verdicts == {c: v["verdict"] for c, v in sim["capabilities"].items()}, out[-3000:]
    assert check_outcomes(local) == check_outcomes(sim), out[-3000:]
    assert local["verdict"] == "pass", out[-3000:]
    with capsys.disabled():
        what = "whole suite" if whole else SIM_NODE_MARKERS
        print(f"\nreference driver, {what}: sim {sim_wall:.1f}s, local v{local_release} {wall:.1f}s wall")


CHOSEN = [m for m in MUTANTS if m[0] in MOST]


@pytest.mark.parametrize(
    ("args", "capability", "reason"), [m[1:] for m in CHOSEN], ids=[m[0] for m in CHOSEN]
)
def test_mutant_fails_on_local_as_on_sim(
    tmp_path: Path,
    local_release: str,
    args: list[str],
    capability: str,
    reason: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    report, output, wall = run_suite(
        tmp_path,
        "--cluster=local",
        f"--kube-version={local_release}",
        "--nodes=node-1",
        *args,
        timeout=LOCAL_TIMEOUT,
    )
    assert_fails_for(report, output, capability, reason)
    assert report["verdict"] == "fail" and report["provider"] == "local"
    with capsys.disabled():
        print(f"\n{capability} mutant on local: {wall:.1f}s wall")
