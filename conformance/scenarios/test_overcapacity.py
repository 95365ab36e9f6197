"""overcapacity: what does not fit is rejected, on the positive signal, and stays rejected."""

from __future__ import annotations

import pytest

from conformance.capacity import format_bytes
from conformance.scenarios.checks import share_plan
from conformance.workloads import Scenario

pytestmark = pytest.mark.overcapacity


def test_sharer_beyond_capacity_is_rejected(scenario: Scenario) -> None:
    sc = scenario
    (gpu,) = sc.suite.pick_gpus(1)
    r, k = share_plan(gpu)
    if k < 1:
        pytest.skip(f"{gpu.label}: not even one sharer of {format_bytes(r)} fits")
    ns = sc.namespace("a")
    pods = [sc.sharer(ns, f"fit-{i}", gpu, r) for i in range(k)]
    sc.wait_running(pods)
    sc.wait_rejected(sc.sharer(sc.namespace("b"), "one-too-many", gpu, r))


def test_request_above_card_memory_never_schedules(scenario: Scenario) -> None:
    sc = scenario
    (gpu,) = sc.suite.pick_gpus(1)
    assert gpu.capacity is not None
    # The seed's case: 24Gi asked of a 12Gi card. Here: one step more than the card holds.
    policy = gpu.capacity.policy
    step = policy.step if policy and policy.step else 1 << 30
    too_big = gpu.capacity.value + step
    sc.wait_rejected(sc.sharer(sc.namespace("a"), "too-big", gpu, too_big))
