"""lifecycle: the driver restarts under running sharers; slices come back; nothing is left behind."""

from __future__ import annotations

import pytest

from conformance.inventory import driver_slices, slice_node
from conformance.kube import items
from conformance.observe import State, hold, wait_for
from conformance.scenarios.checks import require_room_for_sharers, share_plan
from conformance.workloads import LABEL_SCENARIO, Scenario, is_running

pytestmark = pytest.mark.lifecycle


def test_driver_restart_keeps_sharers_running_and_admits_a_new_one(scenario: Scenario) -> None:
    sc = scenario
    (gpu,) = sc.suite.pick_gpus(1)
    plan = share_plan(sc, gpu)
    r, k = plan.requests, plan.sharers
    require_room_for_sharers(sc, gpu, plan, want=3)
    if k < 3:
        pytest.skip(f"{gpu.label}: needs room for three sharers, has {k}")
    ns = sc.namespace("a")
    before = [sc.sharer(ns, f"before-{i}", gpu, r) for i in range(2)]
    running = sc.wait_running(before)
    restarts = {
        p.key: [c.get("restartCount", 0) for c in running[p.key]["status"]["containerStatuses"]]
        for p in before
    }
    sc.suite.provider.restart_driver(gpu.node)
    after = sc.sharer(ns, "after-restart", gpu, r)
    sc.wait_running([after])

    def violation(state: State) -> str | None:
        for p in before:
            pod = state.get(p.key)
            if pod is None or not is_running(pod):
                return f"{p.key} stopped running after the driver restart"
            counts = [c.get("restartCount", 0) for c in pod["status"]["containerStatuses"]]
            if counts != restarts[p.key]:
                return f"{p.key}'s container restarted ({restarts[p.key]} -> {counts})"
        return None

    hold(
        sc.kube.core.list_pod_for_all_namespaces,
        violation,
        window=sc.suite.settle_seconds,
        what="sharers running through a driver restart",
        label_selector=f"{LABEL_SCENARIO}={sc.id}",
    )


def test_slices_come_back_after_a_wipe(scenario: Scenario) -> None:
    # The kubelet wipes a driver's slices when it loses the driver; a live driver must republish.
    sc = scenario
    (gpu,) = sc.suite.pick_gpus(1)
    driver = sc.profile.driver
    devices = {g.device for g in sc.suite.preflight.gpus if g.node == gpu.node}
    for s in driver_slices(items(sc.kube.resource.list_resource_slice)[0], driver):
        if slice_node(s) == gpu.node:
            sc.kube.resource.delete_resource_slice(s["metadata"]["name"])

    def republished(state: State) -> bool | None:
        have = {
            d["name"]
            for s in driver_slices(list(state.values()), driver)
            if slice_node(s) == gpu.node
            for d in s["spec"].get("devices") or ()
        }
        return True if devices <= have else None

    # The bound is the profile's (sim.republishTimeout): drivers on upstream's helper take up to a minute.
    wait_for(
        sc.kube.resource.list_resource_slice,
        republished,
        timeout=sc.suite.republish_timeout,
        what=f"driver {driver} to republish {sorted(devices)} on {gpu.node} after its slices were deleted",
    )


def test_unprepare_leaves_no_cdi_spec_behind(scenario: Scenario) -> None:
    sc = scenario
    (gpu,) = sc.suite.pick_gpus(1)
    before = sc.suite.provider.node_cdi_specs(gpu.node)
    if before is None:
        pytest.skip(f"the {sc.suite.handle.provider} provider cannot list CDI specs on {gpu.node}")
    pod = sc.sharer(sc.namespace("a"), "cdi-check", gpu, share_plan(sc, gpu).requests)
    sc.wait_running([pod])
    uid = sc.claim_of(pod)["metadata"]["uid"]
    during = list(sc.suite.provider.node_cdi_specs(gpu.node) or {})
    sc.delete_pods([pod])
    left = [f for f in sc.suite.provider.node_cdi_specs(gpu.node) or {} if uid in f]
    assert not left, (
        f"CDI spec(s) of deleted claim {uid} remain on {gpu.node}: {left} "
        f"(while running: {[f for f in during if uid in f]})"
    )
