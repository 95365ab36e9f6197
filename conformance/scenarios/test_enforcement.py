"""enforcement: on real GPUs, a sharer's view of GPU memory is capped at what it was granted."""

from __future__ import annotations

import re

import pytest

from conformance.scenarios.checks import assert_on_gpu, share_plan
from conformance.workloads import Scenario

pytestmark = pytest.mark.enforcement


def test_sharer_sees_at_most_its_granted_memory(scenario: Scenario) -> None:
    sc = scenario
    if not sc.profile.enforcement:
        pytest.skip(
            f"driver profile {sc.profile.name!r} does not claim memory enforcement "
            "(claims.enforcement: false); memory sharing is advisory"
        )
    if sc.suite.handle.simulated or sc.profile.visibility.method != "nvidia-smi":
        pytest.skip("enforcement needs real GPUs and nvidia-smi in the pod")
    (gpu,) = sc.suite.pick_gpus(1)
    r = share_plan(sc, gpu).requests
    pod = sc.sharer(sc.namespace("a"), "capped", gpu, r)
    sc.wait_running([pod])
    granted = sc.consumed(assert_on_gpu(sc, pod, gpu)) or r[sc.profile.shared_capacity]
    text = sc.wait_log(pod, lambda t: "MiB" in t or "UUID" in t, what="nvidia-smi output")
    totals = [int(m) * (1 << 20) for m in re.findall(r"(\d+)\s*MiB", text)]
    assert totals, f"{pod.key}: nvidia-smi printed no memory total: {text[-500:]!r}"
    assert max(totals) <= granted, f"{pod.key} sees {max(totals)} bytes of GPU memory, granted {granted}"
