"""Scheduler behaviour over HTTP: sharing, release and reuse, messages, events, reacting to changes."""

from __future__ import annotations

import uuid

import pytest
from kubernetes import client, watch

from tests.support.allocator_builders import RANGE_POLICY, claim, device, device_class, exactly, slice_
from tests.support.scheduler_sim import (
    bound,
    condition,
    control_plane_sim,
    pod_with_claim,
    pod_with_template,
    template,
    unschedulable,
)


def test_e2e_consumable_capacity_sequence_pending_pod_runs_after_release() -> None:
    """Upstream e2e "must allow multiple allocations and consume capacity" (anchors.md section 5)."""
    policy = {"default": "1Gi", "validRange": {"min": "1Gi"}}
    with control_plane_sim() as sim:
        sim.res.create_device_class(device_class())
        sim.res.create_resource_slice(
            slice_("s", [device("consumable-device-1", memory="8Gi", policy=policy)])
        )
        for size in ("4Gi", "8Gi"):
            sim.res.create_namespaced_resource_claim_template(
                "default", template(f"t{size.lower()}", exactly(size))
            )
        sim.core.create_namespaced_pod("default", pod_with_template("pod1", "t4gi"))
        sim.wait_pod("pod1", bound, "pod1 (4Gi) bound")
        sim.core.create_namespaced_pod("default", pod_with_template("pod2", "t8gi"))
        pod2 = sim.wait_pod("pod2", unschedulable, "pod2 (8Gi) marked unschedulable")
        assert "cannot allocate all claims" in condition(pod2)["message"]
        sim.core.create_namespaced_pod("default", pod_with_template("pod3", "t4gi"))
        sim.wait_pod("pod3", bound, "pod3 (4Gi) bound next to pod1")
        sim.quiesce()
        assert not bound(sim.pod("pod2")), "8Gi must not fit while 8Gi are taken"
        sim.core.delete_namespaced_pod("pod1", "default")
        sim.core.delete_namespaced_pod("pod3", "default")
        sim.wait_pod("pod2", bound, "pod2 bound once pod1 and pod3 released their shares")
        claims = sim.wait_claims(lambda cs: len(cs) == 1, "the released claims to be deleted with their pods")
        results = claims[0]["status"]["allocation"]["devices"]["results"]
        assert results[0]["consumedCapacity"] == {"memory": "8Gi"}
        assert uuid.UUID(results[0]["shareID"]).version == 4


def test_seed_template_four_pods_share_a_24gi_gpu_and_the_fifth_waits() -> None:
    """The seed guide's pattern 1: 6Gi x 4 on one RTX 3090 (24Gi)."""
    with control_plane_sim() as sim:
        sim.res.create_device_class(device_class())
        sim.res.create_resource_slice(
            slice_("s", [device("gpu-0", attrs={"productName": {"string": "NVIDIA GeForce RTX 3090"}})])
        )
        sim.res.create_namespaced_resource_claim_template(
            "default",
            template(
                "gpu-6gi-3090",
                exactly(
                    "6Gi",
                    selectors=[
                        "device.attributes['gpu.example.com'].productName == 'NVIDIA GeForce RTX 3090'"
                    ],
                ),
            ),
        )
        for i in range(5):
            sim.core.create_namespaced_pod("default", pod_with_template(f"p{i}", "gpu-6gi-3090"))
        sim.quiesce()
        pods = [sim.pod(f"p{i}") for i in range(5)]
        assert sum(bound(p) for p in pods) == 4
        waiting = next(p for p in pods if not bound(p))
        assert condition(waiting)["reason"] == "Unschedulable"
        claims = [
            c
            for c in sim.plain(sim.res.list_namespaced_resource_claim("default")).get("items")
            if (c.get("status") or {}).get("allocation")
        ]
        assert len(claims) == 4
        shares = {c["status"]["allocation"]["devices"]["results"][0]["shareID"] for c in claims}
        assert len(shares) == 4


def test_failed_scheduling_event_is_counted_not_duplicated() -> None:
    with control_plane_sim() as sim:
        sim.res.create_device_class(device_class())
        sim.res.create_resource_slice(slice_("s", [device("gpu-0", memory="8Gi")]))
        sim.res.create_namespaced_resource_claim("default", claim("big", ("gpu", exactly("16Gi"))))
        sim.core.create_namespaced_pod("default", pod_with_claim("p", "big"))
        sim.wait_pod("p", unschedulable, "first failed attempt")
        # A new slice could help, so the pod is retried; it still does not fit.
        sim.res.create_resource_slice(slice_("s2", [device("gpu-1", memory="8Gi")], pool="other"))
        sim.quiesce()
        events = [
            e
            for e in sim.core.list_namespaced_event("default").items
            if e.reason == "FailedScheduling" and e.involved_object.name == "p"
        ]
        assert len(events) == 1, [e.message for e in events]
        assert events[0].count == 2
        assert events[0].type == "Warning"
        assert events[0].message == (
            "0/1 nodes are available: 1 cannot allocate all claims. still not "
            "schedulable, preemption: 0/1 nodes are available: 1 Preemption is not "
            "helpful for scheduling."
        )


def test_missing_device_class_message_then_scheduled_when_class_appears() -> None:
    with control_plane_sim() as sim:
        sim.res.create_resource_slice(slice_("s", [device("gpu-0")]))
        sim.res.create_namespaced_resource_claim("default", claim("c", ("gpu", exactly("1Gi"))))
        sim.core.create_namespaced_pod("default", pod_with_claim("p", "c"))
        pod = sim.wait_pod("p", unschedulable, "PreFilter failure")
        assert condition(pod)["message"].startswith(
            "0/1 nodes are available: request gpu: device class gpu.example.com does not exist."
        )
        sim.res.create_device_class(device_class())
        sim.wait_pod("p", bound, "bound after the class was created")


def test_node_reasons_are_counted_and_sorted() -> None:
    with control_plane_sim(nodes=("node-1", "node-2", "node-3")) as sim:
        sim.core.patch_node("node-3", {"spec": {"unschedulable": True}})
        sim.res.create_device_class(device_class())
        sim.res.create_resource_slice(slice_("s", [device("gpu-0", memory="8Gi")]))
        sim.res.create_namespaced_resource_claim("default", claim("c", ("gpu", exactly("9Gi"))))
        sim.core.create_namespaced_pod(
            "default", pod_with_claim("p", "c", nodeSelector={"kubernetes.io/hostname": "node-1"})
        )
        pod = sim.wait_pod("p", unschedulable, "unschedulable on every node")
        assert condition(pod)["message"].startswith(
            "0/3 nodes are available: 1 cannot allocate all claims, 1 node(s) didn't match Pod's node "
            "affinity/selector, 1 node(s) were unschedulable."
        )


def test_bad_input_keeps_pod_pending_and_scheduler_serves_others() -> None:
    """Issue 3 "Bad input": missing capacity name, CEL that does not compile; others still scheduled."""
    with control_plane_sim() as sim:
        sim.res.create_device_class(device_class())
        sim.res.create_resource_slice(slice_("s", [device("gpu-0")]))
        sim.res.create_namespaced_resource_claim(
            "default", claim("nocap", ("gpu", exactly(capacity={"bandwidth": "1"})))
        )
        # A real API server refuses CEL that does not compile, naming the field; nothing is stored.
        with pytest.raises(client.ApiException) as refused:
            sim.res.create_namespaced_resource_claim(
                "default", claim("badcel", ("gpu", exactly("1Gi", selectors=["device.driver =="])))
            )
        assert refused.value.status == 422
        assert "spec.devices.requests[0].exactly.selectors[0].cel.expression" in refused.value.body
        sim.res.create_namespaced_resource_claim("default", claim("good", ("gpu", exactly("1Gi"))))
        sim.core.create_namespaced_pod("default", pod_with_claim("nocap", "nocap"))
        # A selector that compiles but fails at runtime is a fatal allocator error on the pod.
        sim.res.create_namespaced_resource_claim(
            "default",
            claim(
                "badcel",
                ("gpu", exactly("1Gi", selectors=['device.attributes["gpu.example.com"].missing == "x"'])),
            ),
        )
        sim.core.create_namespaced_pod("default", pod_with_claim("badcel", "badcel"))
        sim.core.create_namespaced_pod("default", pod_with_claim("good", "good"))
        sim.wait_pod("good", bound, "the good pod bound despite its broken neighbours")
        nocap = sim.wait_pod("nocap", unschedulable, "missing capacity -> unschedulable")
        assert "1 cannot allocate all claims" in condition(nocap)["message"]
        badcel = sim.wait_pod("badcel", unschedulable, "CEL runtime error surfaced")
        cond = condition(badcel)
        assert cond["reason"] == "SchedulerError"
        assert cond["message"].startswith(
            'running "DynamicResources" filter plugin: claim default/badcel: '
            "selector #0 on device gpu.example.com/node-1/gpu-0: CEL runtime error: no such key: missing"
        )


def test_claim_allocated_by_another_client_is_respected() -> None:
    """Issue 3 item 1: a status with an allocation and reservedFor written directly is honoured."""
    with control_plane_sim() as sim:
        sim.res.create_device_class(device_class())
        sim.res.create_resource_slice(
            slice_("s", [device("gpu-0", multi=False), device("gpu-1", multi=False)])
        )
        manual = sim.plain(
            sim.res.create_namespaced_resource_claim("default", claim("manual", ("gpu", exactly())))
        )
        manual["status"] = {
            "allocation": {
                "devices": {
                    "results": [
                        {"request": "gpu", "driver": "gpu.example.com", "pool": "node-1", "device": "gpu-0"}
                    ]
                }
            },
            "reservedFor": [{"resource": "pods", "name": "outside", "uid": str(uuid.uuid4())}],
        }
        sim.res.replace_namespaced_resource_claim_status("manual", "default", manual)
        for name in ("a", "b"):
            sim.res.create_namespaced_resource_claim("default", claim(name, ("gpu", exactly())))
            sim.core.create_namespaced_pod("default", pod_with_claim(name, name))
        sim.wait_pod("a", lambda p: bound(p) or unschedulable(p), "pod a decided")
        sim.wait_pod("b", lambda p: bound(p) or unschedulable(p), "pod b decided")
        a, b = sim.claim("a"), sim.claim("b")
        devices = [
            c["status"]["allocation"]["devices"]["results"][0]["device"]
            for c in (a, b)
            if (c.get("status") or {}).get("allocation")
        ]
        assert devices == ["gpu-1"], "gpu-0 is taken by the directly written allocation"
        # A pod using the pre-allocated claim joins its reservedFor and lands on its node.
        sim.core.create_namespaced_pod("default", pod_with_claim("joiner", "manual"))
        sim.wait_pod("joiner", bound, "pod using the pre-allocated claim bound")
        # The controller dropped the unknown "outside" pod from reservedFor, as upstream does; the
        # allocation stays because the scheduler did not make it (no delete-protection finalizer).
        manual = sim.claim("manual")
        assert [r["name"] for r in manual["status"]["reservedFor"]] == ["joiner"]
        assert manual["status"]["allocation"]["devices"]["results"][0]["device"] == "gpu-0"


def test_gate_off_capacity_request_dropped_then_exclusive() -> None:
    """allocator-rules.md section 1 over HTTP: the API drops the fields, the device becomes exclusive."""
    with control_plane_sim(feature_gates="DRAConsumableCapacity=false") as sim:
        sim.res.create_device_class(device_class())
        sim.res.create_resource_slice(slice_("s", [device("gpu-0")]))
        for name in ("a", "b"):
            sim.res.create_namespaced_resource_claim("default", claim(name, ("gpu", exactly("6Gi"))))
            sim.core.create_namespaced_pod("default", pod_with_claim(name, name))
        sim.wait_pod("a", lambda p: bound(p) or unschedulable(p), "pod a decided")
        sim.wait_pod("b", lambda p: bound(p) or unschedulable(p), "pod b decided")
        results = [
            sim.claim(n).get("status", {}).get("allocation", {}).get("devices", {}).get("results")
            for n in ("a", "b")
        ]
        allocated = [r for r in results if r]
        assert len(allocated) == 1
        assert "shareID" not in allocated[0][0] and "consumedCapacity" not in allocated[0][0]


def test_admin_access_needs_namespace_label() -> None:
    with control_plane_sim() as sim:
        sim.core.create_namespace({"metadata": {"name": "ops"}})
        sim.res.create_device_class(device_class())
        sim.res.create_resource_slice(slice_("s", [device("gpu-0", multi=False)]))
        sim.res.create_namespaced_resource_claim(
            "ops", claim("admin", ("gpu", exactly(admin=True)), namespace="ops")
        )
        sim.core.create_namespaced_pod("ops", pod_with_claim("p", "admin"))
        pod = sim.wait_pod("p", unschedulable, "admin access refused without the label", ns="ops")
        assert "requires the `resource.kubernetes.io/admin-access: true` label" in condition(pod)["message"]
        sim.core.patch_namespace(
            "ops", {"metadata": {"labels": {"resource.kubernetes.io/admin-access": "true"}}}
        )
        sim.wait_pod("p", bound, "bound once the namespace is labelled", ns="ops")
        result = sim.claim("admin", "ops")["status"]["allocation"]["devices"]["results"][0]
        assert result["adminAccess"] is True


def test_rounding_over_http_range_policy() -> None:
    with control_plane_sim() as sim:
        sim.res.create_device_class(device_class())
        sim.res.create_resource_slice(slice_("s", [device("gpu-0", memory="8Gi", policy=RANGE_POLICY)]))
        sim.res.create_namespaced_resource_claim("default", claim("c", ("gpu", exactly("3Gi"))))
        sim.core.create_namespaced_pod("default", pod_with_claim("p", "c"))
        sim.wait_pod("p", bound, "bound")
        r = sim.claim("c")["status"]["allocation"]["devices"]["results"][0]
        assert r["consumedCapacity"] == {"memory": "4Gi"}


def test_idle_scheduler_does_not_wake_up() -> None:
    """Issue 3 item 4: an idle sim uses no CPU (the loops block on their watches)."""
    with control_plane_sim() as sim:
        if sim.scheduler is None:
            pytest.skip("counts the sim scheduler's own wake-ups: nothing to compare on a real one")
        sim.res.create_device_class(device_class())
        sim.quiesce()
        before = (sim.scheduler.wakeups, sim.controller.wakeups)
        probe = sim.handle.store.watch(["pods"])
        try:
            assert probe.get(timeout=1.0) is None  # a quiet second, observed through a real watch
        finally:
            probe.close()
        assert (sim.scheduler.wakeups, sim.controller.wakeups) == before


def test_pod_without_nodes_gets_scheduler_error() -> None:
    with control_plane_sim(nodes=()) as sim:
        sim.core.create_namespaced_pod(
            "default",
            client.V1Pod(
                metadata=client.V1ObjectMeta(name="p"),
                spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]),
            ),
        )
        pod = sim.wait_pod("p", unschedulable, "no nodes")
        assert condition(pod)["message"] == "no nodes available to schedule pods"


def test_standalone_sim_process_serves_outside_client_with_any_driver() -> None:
    """Issue 3 item 7: `python -m sim --kubeconfig PATH --nodes node-1` without GPUs runs the API, the
    controller and the scheduler; a client publishes its own class and slice under any driver name,
    and reads the allocation back. The bound pod stays Pending (no kubelet), which is not an error."""
    from sim.testing import running_sim

    net = "net.example.org"
    with running_sim(nodes=["node-1"], subprocess=True) as handle:
        api = handle.client()
        core, res = client.CoreV1Api(api), client.ResourceV1Api(api)
        res.create_device_class(device_class("nic", [f'device.driver == "{net}"']))
        res.create_resource_slice(
            slice_("nics", [device("port-0", memory=None, extra_caps={"bandwidth": "10G"})], driver=net)
        )
        c = claim("link", ("nic", exactly(cls="nic", capacity={"bandwidth": "4G"})))
        res.create_namespaced_resource_claim("default", c)
        core.create_namespaced_pod("default", pod_with_claim("app", "link"))
        w = watch.Watch()
        pod = None
        for ev in w.stream(
            core.list_namespaced_pod, "default", field_selector="metadata.name=app", timeout_seconds=20
        ):
            if ev["object"].spec.node_name:
                pod = ev["object"]
                w.stop()
        assert pod is not None, "gave up after 20s waiting for pod default/app to be bound"
        assert pod.status.phase == "Pending"
        result = api.sanitize_for_serialization(res.read_namespaced_resource_claim("link", "default"))[
            "status"
        ]["allocation"]["devices"]["results"][0]
        assert result["driver"] == net and result["device"] == "port-0"
        assert result["consumedCapacity"] == {"bandwidth": "4G"}
        api.close()


def test_pending_pod_scheduled_when_a_matching_node_and_its_slice_arrive() -> None:
    """Issue 3 item 4: reacting to a node added (and its slice published), not polling."""
    with control_plane_sim() as sim:
        sim.res.create_device_class(device_class())
        sim.res.create_resource_slice(slice_("s1", [device("gpu-0")]))
        sim.res.create_namespaced_resource_claim("default", claim("c", ("gpu", exactly("1Gi"))))
        sim.core.create_namespaced_pod("default", pod_with_claim("p", "c", nodeSelector={"pool": "big"}))
        pod = sim.wait_pod("p", unschedulable, "no node matches yet")
        assert "1 node(s) didn't match Pod's node affinity/selector" in condition(pod)["message"]
        sim.core.create_node({"metadata": {"name": "node-2", "labels": {"pool": "big"}}})
        sim.res.create_resource_slice(slice_("s2", [device("gpu-0")], node="node-2"))
        pod = sim.wait_pod("p", bound, "bound on the new node")
        assert pod["spec"]["nodeName"] == "node-2"
        assert sim.claim("c")["status"]["allocation"]["devices"]["results"][0]["pool"] == "node-2"
