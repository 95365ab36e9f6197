"""The HTTP API through the official kubernetes client: typed, dynamic, watch and create_from_yaml."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, dynamic, utils, watch
from kubernetes.client.rest import ApiException

from sim.testing import SimHandle, running_sim

SLICE = {
    "apiVersion": "resource.k8s.io/v1",
    "kind": "ResourceSlice",
    "metadata": {"name": "node-1-gpu"},
    "spec": {
        "driver": "gpu.example.com",
        "nodeName": "node-1",
        "pool": {"name": "node-1", "generation": 1, "resourceSliceCount": 1},
        "devices": [
            {
                "name": "gpu-0",
                "allowMultipleAllocations": True,
                "capacity": {
                    "memory": {
                        "value": "24Gi",
                        "requestPolicy": {"default": "24Gi", "validRange": {"min": "1Gi", "step": "1Gi"}},
                    }
                },
            }
        ],
    },
}
POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "p"},
    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
}


def status_of(e: ApiException) -> dict[str, Any]:
    return json.loads(e.body)


def test_nodes_are_ready_with_hostname_labels(api_client: Any) -> None:
    nodes = client.CoreV1Api(api_client).list_node().items
    assert [n.metadata.name for n in nodes] == ["node-1", "node-2"]
    for n in nodes:
        assert n.metadata.labels["kubernetes.io/hostname"] == n.metadata.name
        assert {c.type: c.status for c in n.status.conditions}["Ready"] == "True"


def test_typed_client_round_trips_a_resource_slice(api_client: Any) -> None:
    api = client.ResourceV1Api(api_client)
    created = api.create_resource_slice(SLICE)
    assert created.spec.devices[0].allow_multiple_allocations is True
    got = api.read_resource_slice("node-1-gpu")
    assert got.spec.devices[0].capacity["memory"].request_policy.valid_range.step == "1Gi"
    listed = api.list_resource_slice(field_selector="spec.driver=gpu.example.com,spec.nodeName=node-1")
    assert [s.metadata.name for s in listed.items] == ["node-1-gpu"]
    assert api.list_resource_slice(field_selector="spec.nodeName=node-2").items == []
    deleted = api.delete_resource_slice("node-1-gpu")
    assert deleted.metadata.name == "node-1-gpu"


def test_errors_are_status_objects_with_code_and_reason(api_client: Any) -> None:
    v1 = client.CoreV1Api(api_client)
    with pytest.raises(ApiException) as e:
        v1.read_namespaced_pod("missing", "default")
    assert e.value.status == 404 and status_of(e.value)["reason"] == "NotFound"
    v1.create_namespaced_pod("default", POD)
    with pytest.raises(ApiException) as e:
        v1.create_namespaced_pod("default", POD)
    assert (e.value.status, status_of(e.value)["reason"]) == (409, "AlreadyExists")
    bad = {
        **SLICE,
        "spec": {
            **SLICE["spec"],
            "devices": [
                {
                    "name": "gpu-0",
                    "capacity": {"memory": {"value": "24Gi", "requestPolicy": {"default": "24Gi"}}},
                }
            ],
        },
    }
    with pytest.raises(ApiException) as e:
        client.ResourceV1Api(api_client).create_resource_slice(bad)
    body = status_of(e.value)
    assert (e.value.status, body["reason"], body["kind"]) == (422, "Invalid", "Status")
    assert body["details"]["causes"][0]["field"] == "spec.devices[0].capacity[memory].requestPolicy"


def test_update_with_stale_resource_version_is_409(api_client: Any) -> None:
    v1 = client.CoreV1Api(api_client)
    cm = v1.create_namespaced_config_map("default", {"metadata": {"name": "a"}, "data": {"k": "1"}})
    cm.data = {"k": "2"}
    v1.replace_namespaced_config_map("a", "default", cm)
    cm.data = {"k": "3"}
    with pytest.raises(ApiException) as e:
        v1.replace_namespaced_config_map("a", "default", cm)
    assert (e.value.status, status_of(e.value)["reason"]) == (409, "Conflict")


def test_patch_content_types(api_client: Any) -> None:
    v1 = client.CoreV1Api(api_client)
    v1.create_namespaced_pod("default", POD)
    v1.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"a": "1"}}})  # strategic
    v1.patch_namespaced_pod(
        "p", "default", [{"op": "add", "path": "/metadata/labels/b", "value": "2"}]
    )  # json
    out = v1.patch_namespaced_pod(
        "p", "default", {"metadata": {"labels": {"a": None}}}, _content_type="application/merge-patch+json"
    )
    assert out.metadata.labels == {"b": "2"}
    st = v1.patch_namespaced_pod_status("p", "default", {"status": {"phase": "Running"}})
    assert st.status.phase == "Running"


def test_binding_and_log_subresources(sim: SimHandle, api_client: Any) -> None:
    v1 = client.CoreV1Api(api_client)
    v1.create_namespaced_pod("default", POD)
    body = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "p"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"},
    }
    v1.create_namespaced_pod_binding("p", "default", body)
    assert v1.read_namespaced_pod("p", "default").spec.node_name == "node-1"
    sim.cluster.set_log_provider(lambda ns, pod, container: f"{ns}/{pod}/{container}\nline2\n".encode())
    assert v1.read_namespaced_pod_log("p", "default", container="c") == "default/p/c\nline2\n"
    assert v1.read_namespaced_pod_log("p", "default", tail_lines=1) == "line2\n"


def test_watch_streams_typed_events_and_resumes(api_client: Any) -> None:
    api = client.ResourceV1Api(api_client)
    api.create_resource_slice(SLICE)
    rv = api.list_resource_slice().metadata.resource_version
    api.patch_resource_slice("node-1-gpu", {"metadata": {"labels": {"x": "1"}}})
    w = watch.Watch()
    events = []
    for ev in w.stream(api.list_resource_slice, resource_version=rv, timeout_seconds=5):
        events.append((ev["type"], ev["object"].metadata.labels))
        w.stop()
    assert events == [("MODIFIED", {"x": "1"})]
    w = watch.Watch()
    for ev in w.stream(api.list_resource_slice, timeout_seconds=5):  # no resourceVersion: current state first
        assert (ev["type"], ev["object"].metadata.name) == ("ADDED", "node-1-gpu")
        w.stop()


def test_watch_from_expired_version_is_410() -> None:
    with running_sim(nodes=[], watch_history=3) as small:
        api = small.client()
        v1 = client.CoreV1Api(api)
        for i in range(6):
            v1.create_namespaced_config_map("default", {"metadata": {"name": f"c{i}"}})
        with pytest.raises(ApiException) as e:
            for _ in watch.Watch().stream(
                v1.list_namespaced_config_map, "default", resource_version="1", timeout_seconds=2
            ):
                pass
        api.close()
    assert e.value.status == 410


def test_set_based_label_selector_and_involved_object_field_selector(api_client: Any) -> None:
    v1 = client.CoreV1Api(api_client)
    for name, tier in (("a", "gpu"), ("b", "cpu")):
        v1.create_namespaced_config_map("default", {"metadata": {"name": name, "labels": {"tier": tier}}})
    got = v1.list_namespaced_config_map("default", label_selector="tier in (gpu, tpu)").items
    assert [c.metadata.name for c in got] == ["a"]
    event = {
        "metadata": {"name": "e1"},
        "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
        "reason": "Scheduled",
        "message": "ok",
        "type": "Normal",
        "count": 1,
    }
    v1.create_namespaced_event("default", event)
    sel = "involvedObject.kind=Pod,involvedObject.name=p"
    assert [e.reason for e in v1.list_namespaced_event("default", field_selector=sel).items] == ["Scheduled"]
    assert v1.list_namespaced_event("default", field_selector="involvedObject.name=q").items == []


def test_dynamic_client_resolves_kinds_and_server_side_applies(api_client: Any) -> None:
    dyn = dynamic.DynamicClient(api_client)
    slices = dyn.resources.get(api_version="resource.k8s.io/v1", kind="ResourceSlice")
    claims = dyn.resources.get(api_version="resource.k8s.io/v1", kind="ResourceClaim")
    assert (slices.namespaced, claims.namespaced) == (False, True)
    dyn.server_side_apply(slices, body=SLICE, field_manager="test")
    changed = {**SLICE, "metadata": {"name": "node-1-gpu", "labels": {"applied": "twice"}}}
    out = dyn.server_side_apply(slices, body=changed, field_manager="test")
    assert out.metadata.labels["applied"] == "twice"
    assert out.spec.devices[0].allowMultipleAllocations is True


def test_create_from_yaml_creates_dra_objects(api_client: Any, tmp_path: Path) -> None:
    manifest = tmp_path / "objs.yaml"
    manifest.write_text("""
apiVersion: resource.k8s.io/v1
kind: DeviceClass
metadata: {name: gpu.example.com}
spec:
  selectors: [{cel: {expression: 'device.driver == "gpu.example.com"'}}]
---
apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata: {name: gpu-6gi, namespace: default}
spec:
  spec:
    devices:
      requests:
      - name: gpu
        exactly:
          deviceClassName: gpu.example.com
          capacity: {requests: {memory: 6Gi}}
""")
    utils.create_from_yaml(api_client, str(manifest))
    tmpl = client.ResourceV1Api(api_client).read_namespaced_resource_claim_template("gpu-6gi", "default")
    assert tmpl.spec.spec.devices.requests[0].exactly.capacity.requests == {"memory": "6Gi"}


def raw(
    sim: SimHandle, method: str, path: str, body: bytes | None = None, content_type: str = "application/json"
) -> tuple[int, dict[str, Any]]:
    http = sim.http()
    r = http.request(method, sim.url + path, body=body, headers={"Content-Type": content_type, **sim.auth})
    return r.status, json.loads(r.data)


def test_malformed_bodies_get_bad_request_and_the_server_keeps_serving(sim: SimHandle) -> None:
    code, body = raw(sim, "POST", "/api/v1/namespaces/default/configmaps", b"{not json")
    assert (code, body["reason"]) == (400, "BadRequest")
    code, body = raw(sim, "POST", "/api/v1/namespaces/default/configmaps", b"a: [b", "application/yaml")
    assert code == 400
    code, body = raw(
        sim,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}}).encode(),
    )
    assert code == 400 and "ConfigMap" in body["message"]
    code, body = raw(
        sim,
        "POST",
        "/api/v1/namespaces/other/configmaps",
        json.dumps({"metadata": {"name": "x", "namespace": "default"}}).encode(),
    )
    assert code == 400 and "does not match the namespace" in body["message"]
    code, body = raw(sim, "GET", "/apis/nothing.example.com/v1/widgets")
    assert (code, body["reason"]) == (404, "NotFound")
    code, body = raw(sim, "PUT", "/api/v1/namespaces/default/configmaps")
    assert (code, body["reason"]) == (405, "MethodNotAllowed")
    code, _ = raw(sim, "GET", "/api/v1/namespaces/default/configmaps")
    assert code == 200


def test_abrupt_client_disconnect_does_not_stop_the_server(sim: SimHandle) -> None:
    host, port = sim.url.removeprefix("https://").split(":")
    context = ssl.create_default_context(cadata=sim.ca_pem.decode())
    with (
        socket.create_connection((host, int(port))) as raw_sock,
        context.wrap_socket(raw_sock, server_hostname=host) as s,
    ):
        s.sendall(
            b"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer " + sim.token.encode() + b"\r\nContent-Length: 100\r\n\r\n{"
        )
    code, _ = raw(sim, "GET", "/version")
    assert code == 200


def test_discovery_documents(sim: SimHandle) -> None:
    code, groups = raw(sim, "GET", "/apis")
    assert code == 200 and "resource.k8s.io" in [g["name"] for g in groups["groups"]]
    code, res = raw(sim, "GET", "/apis/resource.k8s.io/v1")
    assert code == 200
    names = {r["name"] for r in res["resources"]}
    assert {
        "resourceslices",
        "resourceclaims",
        "resourceclaims/status",
        "deviceclasses",
        "resourceclaimtemplates",
    } <= names
    _code, version = raw(sim, "GET", "/version")
    assert (version["major"], version["minor"]) == ("1", "36")


def test_delete_collection_by_label(api_client: Any) -> None:
    v1 = client.CoreV1Api(api_client)
    for name, app in (("a", "x"), ("b", "x"), ("c", "y")):
        v1.create_namespaced_config_map("default", {"metadata": {"name": name, "labels": {"app": app}}})
    v1.delete_collection_namespaced_config_map("default", label_selector="app=x")
    assert [c.metadata.name for c in v1.list_namespaced_config_map("default").items] == ["c"]


def test_send_initial_events_ends_with_a_bookmark(sim: SimHandle, api_client: Any) -> None:
    client.CoreV1Api(api_client).create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    http = sim.http()
    r = http.request(
        "GET",
        sim.url + "/api/v1/namespaces/default/configmaps?watch=1&sendInitialEvents=true"
        "&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=5",
        headers=sim.auth,
        preload_content=False,
    )
    lines = []
    for line in r.stream(65536):
        lines += [json.loads(x) for x in line.splitlines() if x.strip()]
        if any(ev["type"] == "BOOKMARK" for ev in lines):
            break
    r.release_conn()
    assert [ev["type"] for ev in lines] == ["ADDED", "BOOKMARK"]
    assert lines[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_concurrent_http_writers_lose_no_update(api_client: Any) -> None:
    v1 = client.CoreV1Api(api_client)
    v1.create_namespaced_config_map("default", {"metadata": {"name": "counter"}, "data": {"n": "0"}})

    def bump(times: int) -> None:
        for _ in range(times):
            while True:
                cm = v1.read_namespaced_config_map("counter", "default")
                cm.data["n"] = str(int(cm.data["n"]) + 1)
                try:
                    v1.replace_namespaced_config_map("counter", "default", cm)
                    break
                except ApiException as e:
                    assert e.status == 409

    threads = [threading.Thread(target=bump, args=(15,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert v1.read_namespaced_config_map("counter", "default").data["n"] == "60"


def test_list_pagination_with_limit_and_continue(api_client: Any) -> None:
    v1 = client.CoreV1Api(api_client)
    for i in range(5):
        v1.create_namespaced_config_map("default", {"metadata": {"name": f"c{i}"}})
    seen, token = [], None
    while True:
        page = v1.list_namespaced_config_map("default", limit=2, _continue=token)
        seen += [c.metadata.name for c in page.items]
        token = page.metadata._continue
        if not token:
            break
        assert page.metadata.remaining_item_count == 5 - len(seen)
    assert seen == ["c0", "c1", "c2", "c3", "c4"]
