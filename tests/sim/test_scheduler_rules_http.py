"""The allocator-rules.md table again, end to end: objects written and read through the HTTP API with
the official `kubernetes` client, decisions made by the sim's controller and scheduler threads.

Each case gets a fresh in-process sim (API server + claim controller + scheduler). A pod consumes the
case's claims; the test waits (by watch) for the pod to be bound or marked unschedulable, then reads
the claims back over HTTP and compares with the case's expectation.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from kubernetes import client, watch

from sim.scheduler import add_control_plane
from sim.testing import running_sim
from tests.sim.test_allocator_rules import CASES, Case

# With DRAConsumableCapacity off the API server drops `capacity` from claims (dra-facts 3.4), so the
# scheduler can never see a capacity request: these fatal errors exist only in the allocator, and the
# pure table covers them. test_gate_off_capacity_request_dropped_then_exclusive covers the HTTP side.
UNREACHABLE_OVER_HTTP = {
    "s1-gate-off-capacity-request-is-fatal",
    "s1-gate-off-empty-capacity-block-is-fatal",
    "s1-gate-off-subrequest-names-bare-subrequest",
    # With DRAAdminAccess off the API server drops `adminAccess`, so the request is a plain one.
    "s9-admin-disabled-is-fatal",
    # The API server refuses a claim whose CEL does not compile (422), as a real one does.
    "s12-cel-compile-error-fatal",
    # PreFilter reports a missing class first; the API server refuses a constraint with no kind.
    "r9-missing-class-text",
    "r9-empty-constraint-fatal",
}
WAIT_S = 20


def _gates(case: Case) -> str:
    gates = []
    if not case.features.consumable_capacity:
        gates.append("DRAConsumableCapacity=false")
    if not case.features.admin_access:
        gates.append("DRAAdminAccess=false")
    if not case.features.partitionable_devices:
        gates.append("DRAPartitionableDevices=false")
    return ",".join(gates)


def _pod(name: str, claims: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "containers": [
                {"name": "c", "image": "busybox", "resources": {"claims": [{"name": c} for c in claims]}}
            ],
            "resourceClaims": [{"name": c, "resourceClaimName": c} for c in claims],
        },
    }


def wait_for_decision(core: client.CoreV1Api, ns: str, name: str) -> dict[str, Any]:
    """Watch the pod until it is bound or has PodScheduled=False; return it as a dict."""
    w = watch.Watch()
    for ev in w.stream(
        core.list_namespaced_pod, ns, field_selector=f"metadata.name={name}", timeout_seconds=WAIT_S
    ):
        pod = ev["object"]
        scheduled = [c for c in (pod.status.conditions or []) if c.type == "PodScheduled"]
        if pod.spec.node_name or (scheduled and scheduled[0].status == "False"):
            w.stop()
            return core.api_client.sanitize_for_serialization(pod)
    raise AssertionError(f"pod {ns}/{name} was neither bound nor marked unschedulable within {WAIT_S}s")


def run_case(case: Case) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    with running_sim(
        nodes=[case.node["metadata"]["name"]],
        feature_gates=_gates(case),
        configure=lambda c: add_control_plane(c, initial_backoff=0.05),
    ) as sim:
        api = sim.client()
        core, res = client.CoreV1Api(api), client.ResourceV1Api(api)
        labels = case.node["metadata"].get("labels")
        if labels:
            core.patch_node(case.node["metadata"]["name"], {"metadata": {"labels": labels}})
        core.patch_namespace(
            "default", {"metadata": {"labels": {"resource.kubernetes.io/admin-access": "true"}}}
        )
        for cls in case.classes:
            res.create_device_class(cls)
        for s in case.slices:
            res.create_resource_slice(s)
        for old in case.committed:
            body = {k: v for k, v in old.items() if k != "status"}
            created = res.create_namespaced_resource_claim("default", body)
            created = api.sanitize_for_serialization(created)
            created["status"] = {
                **old["status"],
                "reservedFor": [{"resource": "pods", "name": "elsewhere", "uid": str(uuid.uuid4())}],
            }
            res.replace_namespaced_resource_claim_status(old["metadata"]["name"], "default", created)
        for c in case.claims:
            res.create_namespaced_resource_claim("default", c)
        names = [c["metadata"]["name"] for c in case.claims]
        core.create_namespaced_pod("default", _pod("consumer", names))
        pod = wait_for_decision(core, "default", "consumer")
        claims = [
            api.sanitize_for_serialization(res.read_namespaced_resource_claim(n, "default")) for n in names
        ]
        return pod, claims


@pytest.mark.parametrize("name", [n for n in CASES if n not in UNREACHABLE_OVER_HTTP])
def test_rule_over_http(name: str) -> None:
    case = CASES[name]
    pod, claims = run_case(case)
    cond = next(c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
    if case.fatal:
        assert cond["status"] == "False" and cond["reason"] == "SchedulerError", cond
        assert case.fatal in cond["message"]
        assert all("allocation" not in (c.get("status") or {}) for c in claims)
        return
    if case.reason:
        assert cond["status"] == "False" and cond["reason"] == "Unschedulable", cond
        assert cond["message"].startswith(f"0/1 nodes are available: 1 {case.reason}.")
        assert all("allocation" not in (c.get("status") or {}) for c in claims), "all or nothing"
        return
    assert pod["spec"]["nodeName"] == case.node["metadata"]["name"], cond
    assert cond["status"] == "True"
    share_ids = []
    for claim, want in zip(claims, case.want or [], strict=True):
        results = claim["status"]["allocation"]["devices"]["results"]
        got = [(r["request"], r["device"], (r.get("consumedCapacity") or {}).get("memory")) for r in results]
        assert got == want
        share_ids += [r["shareID"] for r in results if r.get("shareID")]
        assert [r["uid"] for r in claim["status"]["reservedFor"]] == [pod["metadata"]["uid"]]
    assert len(share_ids) == len(set(share_ids))
