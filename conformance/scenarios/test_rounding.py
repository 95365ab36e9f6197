"""rounding: requests are rounded as the published requestPolicy says; above max is rejected."""

from __future__ import annotations

import pytest

from conformance.capacity import format_bytes
from conformance.inventory import Gpu
from conformance.scenarios.checks import (
    assert_consumed,
    assert_on_gpu,
    env_view,
    expected_env,
    sharer_request,
)
from conformance.workloads import Scenario

pytestmark = pytest.mark.rounding


def _policy_gpu(sc: Scenario) -> Gpu:
    for gpu in sc.suite.usable_gpus():
        if (
            gpu.capacity is not None
            and gpu.capacity.policy is not None
            and (gpu.capacity.policy.step or gpu.capacity.policy.valid_values)
        ):
            return gpu
    pytest.skip("the driver publishes no requestPolicy with a step or validValues: nothing to round")


def test_off_step_request_consumes_the_rounded_amount(scenario: Scenario) -> None:
    sc = scenario
    gpu = _policy_gpu(sc)
    cap = gpu.capacity
    assert cap is not None and cap.policy is not None
    base = cap.share_size(4)
    off = base + 1  # one unit past a valid amount
    expected = cap.consumes(off)
    assert expected is not None and expected != off, (
        f"model: {format_bytes(off)} should round on {gpu.label}'s policy"
    )
    pod = sc.sharer(sc.namespace("a"), "off-step", gpu, sharer_request(sc, gpu, off))
    sc.wait_running([pod])
    result = assert_on_gpu(sc, pod, gpu)
    assert_consumed(sc, pod, gpu, result)
    # What the container is told it got must be the rounded amount too, not the raw request.
    granted = expected_env(sc, gpu, result, only="{granted}")
    if granted:
        seen = env_view(sc, pod, granted)
        wrong = [f"{n}={seen.get(n)!r} (granted {v})" for n, v in granted.items() if seen.get(n) != v]
        assert not wrong, f"{pod.key} asked {off} bytes, was granted {expected}, but sees {'; '.join(wrong)}"


def test_request_above_policy_max_is_rejected(scenario: Scenario) -> None:
    sc = scenario
    gpu = _policy_gpu(sc)
    cap = gpu.capacity
    assert cap is not None and cap.policy is not None
    over = cap.largest_request() + (cap.policy.step or 1)
    consumed = cap.consumes(over)
    assert consumed is None or consumed > cap.value
    sc.wait_rejected(sc.sharer(sc.namespace("a"), "above-max", gpu, sharer_request(sc, gpu, over)))
