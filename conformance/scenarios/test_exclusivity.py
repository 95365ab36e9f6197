"""exclusivity: no capacity request (or all of the memory) takes the whole GPU."""

from __future__ import annotations

import json

import pytest

from conformance.capacity import format_bytes
from conformance.inventory import Gpu
from conformance.scenarios.checks import assert_consumed, assert_on_gpu, share_plan, sharer_request
from conformance.workloads import Scenario

pytestmark = pytest.mark.exclusivity


def _whole_then_sharer(sc: Scenario, gpu: Gpu, request: dict[str, int] | None) -> None:
    assert gpu.capacity is not None
    ns = sc.namespace("a")
    first = sc.sharer(ns, "whole", gpu, request)
    sc.wait_running([first])
    result = assert_on_gpu(sc, first, gpu)
    consumed = assert_consumed(sc, first, gpu, result)
    # "The whole GPU" means nothing else fits next to it: even the smallest share the policy allows.
    smallest = gpu.capacity.consumes(1) or 1
    asked = (
        "without a memory request"
        if request is None
        else f"asking for {format_bytes(request[sc.profile.shared_capacity])}"
    )
    assert consumed + smallest > gpu.capacity.value, (
        f"a claim {asked} consumed {format_bytes(consumed)} of {gpu.label}'s "
        f"{format_bytes(gpu.capacity.value)}, leaving room for sharers: it does not get the whole GPU "
        "(check the published requestPolicy default)"
    )
    sc.wait_rejected(sc.sharer(sc.namespace("b"), "extra", gpu, share_plan(sc, gpu).requests))


def test_claim_without_capacity_request_takes_whole_gpu(scenario: Scenario) -> None:
    (gpu,) = scenario.suite.pick_gpus(1)
    _whole_then_sharer(scenario, gpu, None)


def test_claim_for_all_memory_takes_whole_gpu(scenario: Scenario) -> None:
    (gpu,) = scenario.suite.pick_gpus(1)
    assert gpu.capacity is not None
    _whole_then_sharer(scenario, gpu, sharer_request(scenario, gpu, gpu.capacity.largest_request()))


def test_two_exclusive_claims_land_on_different_gpus(scenario: Scenario) -> None:
    sc = scenario
    gpus = sc.suite.pick_gpus(2)
    if len(gpus) < 2:
        pytest.skip("needs two idle shareable GPUs")
    ref = sc.profile.cel_ref("attributes", sc.profile.identity_attribute)
    both = f"{ref} in {json.dumps([g.identity for g in gpus])}"
    ns = sc.namespace("a")
    pods = []
    for i in range(2):
        tmpl = sc.claim_template(ns, f"excl-{i}-tmpl", gpu=None, request=None, selectors=(both,))
        pods.append(sc.pod(ns, f"excl-{i}", tmpl))
    sc.wait_running(pods)
    devices = [(r["pool"], r["device"]) for p in pods for r in sc.results_of(p)]
    assert len(devices) == 2 and devices[0] != devices[1], (
        f"two claims without a capacity request must take two different GPUs, got {devices}"
    )
