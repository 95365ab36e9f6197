"""release: upstream's consumable-capacity sequence, scaled to the card."""

from __future__ import annotations

import pytest

from conformance.scenarios.checks import require_room_for_sharers, share_plan, sharer_request
from conformance.workloads import Scenario

pytestmark = pytest.mark.release


def test_released_capacity_lets_a_larger_claim_start(scenario: Scenario) -> None:
    # kubernetes test/e2e/dra consumableCapacityTests on an 8Gi device: 4Gi runs, 8Gi waits,
    # 4Gi runs, the two 4Gi go, then 8Gi runs. Here "half" and "whole" come from the published card.
    sc = scenario
    (gpu,) = sc.suite.pick_gpus(1)
    cap = gpu.capacity
    assert cap is not None
    plan = share_plan(sc, gpu, parts=2)
    require_room_for_sharers(sc, gpu, plan)
    half = plan.requests
    large = sharer_request(sc, gpu, cap.largest_request())
    caps = gpu.capacities
    half_used = caps.consumes(half)
    if (
        plan.sharers < 2
        or half_used is None
        or caps.consumes(large) is None
        or caps.sharers_that_fit(large) < 1
        or caps.sharers_that_fit(large, used=[half_used]) > 0
    ):
        pytest.skip(f"{gpu.label}: the published policy cannot express the half/half/whole sequence")
    ns = sc.namespace("a")
    first = sc.sharer(ns, "half-1", gpu, half)
    sc.wait_running([first])
    larger = sc.sharer(sc.namespace("b"), "larger", gpu, large)
    sc.wait_rejected(larger)
    second = sc.sharer(ns, "half-2", gpu, half)
    sc.wait_running([second])
    sc.delete_pods([first, second])
    sc.wait_running([larger])
    result = sc.single_result(larger)
    assert (result["pool"], result["device"]) == (gpu.pool, gpu.device)
