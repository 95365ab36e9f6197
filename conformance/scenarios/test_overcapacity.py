"""overcapacity: what does not fit is rejected, on the positive signal, and stays rejected."""

from __future__ import annotations

import pytest

from conformance.capacity import format_bytes, parse
from conformance.scenarios.checks import share_plan, sharer_request
from conformance.templates import retarget
from conformance.workloads import Scenario

pytestmark = pytest.mark.overcapacity


def test_sharer_beyond_capacity_is_rejected(scenario: Scenario) -> None:
    sc = scenario
    (gpu,) = sc.suite.pick_gpus(1)
    plan = share_plan(sc, gpu)
    r, k = plan.requests, plan.sharers
    if k < 1:
        pytest.skip(f"{gpu.label}: not even one sharer of {format_bytes(r[sc.profile.shared_capacity])} fits")
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
    sc.wait_rejected(sc.sharer(sc.namespace("a"), "too-big", gpu, sharer_request(sc, gpu, too_big)))


def test_seed_24gi_template_never_schedules_on_a_smaller_card(scenario: Scenario) -> None:
    """The seed guide's own warning: 24Gi asked of an RTX 3060 (12Gi) must stay Pending."""
    sc = scenario
    seed = next((t for t in sc.suite.templates if t.name == "gpu-24gi-3090"), None)
    if seed is None:
        pytest.skip("the seed template gpu-24gi-3090 is not among the claim templates given")
    asked = parse(seed.request()["capacity"]["requests"]["memory"])
    smaller = [g for g in sc.suite.usable_gpus() if g.capacity is not None and g.capacity.value < asked]
    if not smaller:
        pytest.skip(f"no GPU under test has less than {format_bytes(asked)}; run with --gpus mixed")
    # Only that model is selected, so no bigger card can satisfy the claim instead.
    gpu = smaller[0]
    if any(
        g.product == gpu.product and g.capacity and g.capacity.value >= asked for g in sc.suite.preflight.gpus
    ):
        pytest.skip(f"{gpu.product} also comes with {format_bytes(asked)} or more here")
    ns = sc.namespace("a")
    name = sc.create_template_object(ns, retarget(seed, sc.profile, product=gpu.product))
    sc.wait_rejected(sc.pod(ns, "seed-24gi", name))
