"""sharing: k = floor(free / r) sharers from two namespaces all run on the same GPU."""

from __future__ import annotations

import pytest

from conformance.capacity import format_bytes
from conformance.observe import WaitTimeout
from conformance.scenarios.checks import (
    assert_consumed,
    assert_distinct_share_ids,
    assert_on_gpu,
    assert_unique_cdi_devices,
    require_room_for_sharers,
    share_plan,
)
from conformance.workloads import PodWillNotRun, Scenario

pytestmark = pytest.mark.sharing


def test_sharers_from_two_namespaces_pack_one_gpu(scenario: Scenario) -> None:
    sc = scenario
    (gpu,) = sc.suite.pick_gpus(1)
    plan = share_plan(sc, gpu)
    r, k = plan.requests, plan.sharers
    require_room_for_sharers(sc, gpu, plan)
    if k < 2:
        pytest.skip(
            f"{gpu.label}: a request of {format_bytes(r[sc.profile.shared_capacity])} leaves room "
            f"for {k} sharer(s); nothing to share"
        )
    ns = [sc.namespace("a"), sc.namespace("b")]
    pods = [sc.sharer(ns[i % 2], f"sharer-{i}", gpu, r) for i in range(k)]
    try:
        sc.wait_running(pods)
    except (WaitTimeout, PodWillNotRun):
        assert_unique_cdi_devices(sc, gpu)  # the likelier cause, named precisely when it is the cause
        raise
    results = {}
    for p in pods:
        results[p.key] = assert_on_gpu(sc, p, gpu)
        assert_consumed(sc, p, gpu, results[p.key])
    assert_distinct_share_ids(sc, results)
    assert_unique_cdi_devices(sc, gpu)
