"""Why a pod is not Running, from its status and events: which causes are final (the wait ends at once,
quoting the driver) and which are pending (the wait goes on and names them when it gives up); and the
multi-resource wait that watches pods and events together leaves no watch behind.
"""

from __future__ import annotations

import threading

import pytest
from kubernetes import client

from conformance.observe import WaitTimeout, wait_for_all
from conformance.podfate import cause_of, pod_events, prepare_cause
from sim.apiserver.server import ApiServer
from sim.apiserver.store import Store

KUBELET = "Failed to prepare dynamic resources: prepare dynamic resources: "
REFUSAL = (
    KUBELET + "NodePrepareResources failed for ResourceClaim sharer-1-tmpl-x7k2p: requested device "
    "gpu-1 is already allocated to different claim 0b7c"
)


def pod(phase="Pending", containers=(), conditions=(), policy="Never", uid="u1"):
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": uid},
        "spec": {"restartPolicy": policy},
        "status": {"phase": phase, "containerStatuses": list(containers), "conditions": list(conditions)},
    }


def event(message, reason="FailedPrepareDynamicResources", uid="u1", name="p", ts="2026-01-01T00:00:01Z"):
    return {
        "metadata": {"name": f"{name}.1", "namespace": "ns"},
        "reason": reason,
        "message": message,
        "type": "Warning",
        "lastTimestamp": ts,
        "involvedObject": {"kind": "Pod", "name": name, "namespace": "ns", "uid": uid},
    }


def test_a_driver_refusal_is_final_and_quotes_the_driver():
    cause = cause_of(pod(), [event(REFUSAL)])
    assert cause.final and cause.kind == "refused"
    assert cause.text == "the driver refused to prepare it"
    assert cause.quote == "requested device gpu-1 is already allocated to different claim 0b7c"


def test_a_refusal_ends_the_wait_even_after_a_transient_event():
    transient = event(KUBELET + "DRA driver gpu.example.dev is not registered", ts="2026-01-01T00:00:00Z")
    assert cause_of(pod(), [transient, event(REFUSAL)]).kind == "refused"


@pytest.mark.parametrize(
    "message",
    [
        KUBELET + "DRA driver gpu.example.dev is not registered",
        KUBELET + "NodePrepareResources: rpc error: code = Unavailable desc = connection refused",
        KUBELET + "pod p (u1) is not allowed to use ResourceClaim c (c1)",
    ],
)
def test_a_driver_that_is_not_there_yet_is_pending_not_final(message):
    cause = cause_of(pod(), [event(message)])
    assert not cause.final and cause.kind == "pending"
    assert not cause.quote.startswith("Failed to prepare")


def test_a_driver_error_over_grpc_is_final():
    message = KUBELET + "NodePrepareResources: rpc error: code = Internal desc = boom"
    assert prepare_cause(message).final and prepare_cause(message).quote.endswith("desc = boom")


def test_events_of_another_pod_or_incarnation_do_not_count():
    events = {"a": event(REFUSAL, name="other"), "b": event(REFUSAL, uid="old")}
    assert pod_events(events, pod(), "ns", "p") == []
    assert cause_of(pod(), []) is None


def test_cdi_injection_failure_is_final_with_the_runtimes_words():
    msg = "failed to create containerd container: CDI device injection failed: unresolvable CDI devices x"
    status = {
        "name": "ctr",
        "restartCount": 0,
        "state": {"waiting": {"reason": "CreateContainerError", "message": msg}},
    }
    cause = cause_of(pod(containers=[status]), [])
    assert cause.final and cause.kind == "create-failed" and cause.quote == msg


def test_an_exited_container_is_final():
    status = {"name": "ctr", "restartCount": 0, "state": {"terminated": {"exitCode": 3, "reason": "Error"}}}
    cause = cause_of(pod(phase="Failed", containers=[status]), [])
    assert cause.final and "exited with code 3 (Error)" in cause.text


def test_a_finished_init_container_is_not_a_cause():
    init = {
        "name": "setup",
        "restartCount": 0,
        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
    }
    p = pod(
        containers=[{"name": "ctr", "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}]
    )
    p["status"]["initContainerStatuses"] = [init]
    assert cause_of(p, []) is None


def test_a_crash_loop_is_final():
    status = {
        "name": "ctr",
        "restartCount": 2,
        "lastState": {"terminated": {"exitCode": 1}},
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
    }
    cause = cause_of(pod(policy="Always", containers=[status]), [])
    assert cause.final and cause.kind == "crash-loop" and "2 restart(s)" in cause.text


def test_unscheduled_is_pending_with_the_schedulers_words():
    cond = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": "0/1 nodes are available: 1 cannot allocate all claims.",
    }
    cause = cause_of(pod(conditions=[cond]), [])
    assert not cause.final and "cannot allocate all claims" in cause.quote


def test_a_deleted_pod_is_final():
    assert cause_of(None, []).kind == "gone"


@pytest.fixture
def api():
    store = Store()
    server = ApiServer(store)
    server.start()
    cfg = client.Configuration()
    cfg.host = server.url
    cfg.api_key = {"authorization": f"Bearer {server.token}"}
    cfg.ca_cert_data = server.ca_pem.decode()
    api = client.ApiClient(cfg)
    store.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "w"}})
    yield store, client.CoreV1Api(api)
    api.close()
    server.stop()


def watch_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("watch:")]


def test_a_wait_on_pods_and_events_sees_either_at_once_and_leaves_no_watch(api):
    store, core = api
    sources = {
        "pods": (core.list_namespaced_pod, {"namespace": "w"}),
        "events": (core.list_namespaced_event, {"namespace": "w"}),
    }

    def later() -> None:
        store.create(
            "events",
            {**event(REFUSAL, name="p"), "metadata": {"name": "p.1", "namespace": "w"}},
            namespace="w",
        )

    timer = threading.Timer(0.3, later)
    timer.start()
    try:
        found = wait_for_all(
            sources, lambda st: next(iter(st["events"].values()), None), timeout=20, what="an event"
        )
    finally:
        timer.join()
    assert found["reason"] == "FailedPrepareDynamicResources"
    assert watch_threads() == []
    with pytest.raises(WaitTimeout, match="gave up after 1s waiting for nothing"):
        wait_for_all(sources, lambda st: None, timeout=1, what="nothing")
    assert watch_threads() == []
