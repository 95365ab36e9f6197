"""A client that speaks only Kubernetes protobuf, over real HTTP to a running sim.

It writes the way client-go's typed clients do (`Content-Type: application/vnd.kubernetes.protobuf`)
and, unlike client-go's default, accepts only protobuf back, so every answer (objects, lists, Status
errors, watch frames) must come in protobuf. The bodies NVIDIA's gpu-kubelet-plugin sent (captured in
tests/fixtures/k8s-protobuf) are replayed byte for byte.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sim.apiserver import protobuf as pb
from sim.testing import SimHandle, running_sim

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "k8s-protobuf"
PB = pb.CONTENT_TYPE
SLICES = "/apis/resource.k8s.io/v1/resourceslices"
CONFIG_MAP = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"}}


class ProtobufClient:
    """Raw HTTP with the official client's connection settings (TLS, bearer token) and protobuf bodies."""

    def __init__(self, sim: SimHandle, accept: str = PB) -> None:
        self.api = sim.client()
        cfg = self.api.configuration
        self.host = cfg.host
        self.headers = {"Accept": accept, "User-Agent": "protobuf-only-test/v0"}
        token = cfg.api_key.get("authorization") or cfg.api_key.get("BearerToken")
        if token:
            prefix = cfg.api_key_prefix.get("authorization", "")
            self.headers["Authorization"] = f"{prefix} {token}".strip()

    def request(self, method: str, path: str, body: bytes | None = None, stream: bool = False) -> Any:
        headers = dict(self.headers)
        if body is not None:
            headers["Content-Type"] = PB
        return self.api.rest_client.pool_manager.request(
            method, self.host + path, body=body, headers=headers, preload_content=not stream, timeout=30
        )

    def call(
        self, method: str, path: str, obj: dict[str, Any] | bytes | None = None
    ) -> tuple[int, dict[str, Any]]:
        body = pb.encode(obj) if isinstance(obj, dict) else obj
        resp = self.request(method, path, body)
        assert resp.headers["Content-Type"] == PB, (resp.status, resp.data[:300])
        return resp.status, pb.decode(resp.data)

    def watch(self, path: str) -> Iterator[dict[str, Any]]:
        resp = self.request("GET", path, stream=True)
        assert resp.status == 200 and resp.headers["Content-Type"] == pb.WATCH_CONTENT_TYPE
        try:
            while True:
                head = resp.read(4)
                if len(head) < 4:
                    return
                (size,) = struct.unpack(">I", head)
                frame = resp.read(size)
                yield pb.decode_watch_stream(head + frame)[0]
        finally:
            resp.release_conn()


@pytest.fixture
def sim() -> Iterator[SimHandle]:
    with running_sim(nodes=["node-1"]) as handle:
        yield handle


def resource_slice(name: str, devices: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": name},
        "spec": {
            "driver": "gpu.example.com",
            "nodeName": "node-1",
            "pool": {"name": "node-1", "generation": 1, "resourceSliceCount": 1},
            "devices": [
                {
                    "name": f"gpu-{i}",
                    "allowMultipleAllocations": True,
                    "attributes": {"index": {"int": i}, "uuid": {"string": f"GPU-{i}"}},
                    "capacity": {
                        "memory": {
                            "value": "24Gi",
                            "requestPolicy": {"default": "24Gi", "validRange": {"min": "1Gi", "step": "1Gi"}},
                        }
                    },
                }
                for i in range(devices)
            ],
        },
    }


def event(name: str, reason: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": "default"},
        "involvedObject": {"kind": "Node", "name": "node-1", "apiVersion": "v1"},
        "reason": reason,
        "message": f"{reason} from a protobuf client",
        "source": {"component": "gpu-kubelet-plugin", "host": "node-1"},
        "firstTimestamp": "2026-01-15T11:00:03Z",
        "lastTimestamp": "2026-01-15T11:00:03Z",
        "count": 1,
        "type": "Normal",
        "reportingComponent": "gpu-kubelet-plugin",
        "reportingInstance": "node-1",
    }


def test_protobuf_only_client_writes_and_reads_resource_slices(sim: SimHandle) -> None:
    c = ProtobufClient(sim)
    code, created = c.call("POST", SLICES, resource_slice("node-1-gpu-a", devices=8))
    assert code == 201 and created["kind"] == "ResourceSlice"
    assert created["spec"]["devices"][7]["capacity"]["memory"]["requestPolicy"]["validRange"]["step"] == "1Gi"
    assert created["metadata"]["uid"] and created["metadata"]["creationTimestamp"]
    stored = sim.store.get("resourceslices.resource.k8s.io", "node-1-gpu-a")
    assert stored["spec"]["devices"][3]["attributes"] == {"index": {"int": 3}, "uuid": {"string": "GPU-3"}}

    code, got = c.call("GET", f"{SLICES}/node-1-gpu-a")
    assert code == 200 and got["spec"] == created["spec"]
    got["metadata"]["labels"] = {"tampered": "yes"}
    code, updated = c.call("PUT", f"{SLICES}/node-1-gpu-a", got)
    assert code == 200 and updated["metadata"]["labels"] == {"tampered": "yes"}

    c.call("POST", SLICES, resource_slice("node-1-gpu-b"))
    code, listing = c.call("GET", f"{SLICES}?limit=1")
    assert code == 200 and listing["kind"] == "ResourceSliceList"
    assert [i["metadata"]["name"] for i in listing["items"]] == ["node-1-gpu-a"]
    assert listing["metadata"]["continue"] and listing["metadata"]["remainingItemCount"] == 1

    code, status = c.call("DELETE", f"{SLICES}/node-1-gpu-b", {"apiVersion": "v1", "kind": "DeleteOptions"})
    assert code == 200
    code, status = c.call("GET", f"{SLICES}/node-1-gpu-b")
    assert code == 404 and status["kind"] == "Status" and status["reason"] == "NotFound"


def test_protobuf_only_client_writes_events_and_watches_them(sim: SimHandle) -> None:
    c = ProtobufClient(sim)
    code, first = c.call("POST", "/api/v1/namespaces/default/events", event("node-1.a", "Registered"))
    assert code == 201 and first["reason"] == "Registered" and first["count"] == 1
    stream = c.watch(
        "/api/v1/namespaces/default/events?watch=true&sendInitialEvents=true&allowWatchBookmarks=true"
        "&resourceVersionMatch=NotOlderThan&resourceVersion=&timeoutSeconds=20"
    )
    initial = next(stream)
    assert (initial["type"], initial["object"]["metadata"]["name"]) == ("ADDED", "node-1.a")
    assert initial["object"]["kind"] == "Event" and initial["object"]["source"]["host"] == "node-1"
    bookmark = next(stream)
    assert bookmark["type"] == "BOOKMARK"
    assert bookmark["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    c.call("POST", "/api/v1/namespaces/default/events", event("node-1.b", "Published"))
    for ev in stream:
        if ev["type"] != "BOOKMARK":
            break
    assert (ev["type"], ev["object"]["reason"]) == ("ADDED", "Published")
    code, listing = c.call("GET", "/api/v1/namespaces/default/events")
    assert code == 200 and {e["reason"] for e in listing["items"]} == {"Registered", "Published"}


def test_watch_of_expired_version_sends_a_protobuf_error_frame() -> None:
    with running_sim(nodes=[], watch_history=3) as small:
        c = ProtobufClient(small)
        for i in range(6):
            c.call(
                "POST", "/api/v1/namespaces/default/configmaps", {**CONFIG_MAP, "metadata": {"name": f"c{i}"}}
            )
        frames = list(
            c.watch("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=1&timeoutSeconds=5")
        )
        c.api.close()
    assert [f["type"] for f in frames] == ["ERROR"]
    assert (frames[0]["object"]["kind"], frames[0]["object"]["code"]) == ("Status", 410)


def test_errors_reach_a_protobuf_only_client_as_protobuf_status(sim: SimHandle) -> None:
    c = ProtobufClient(sim)
    c.call("POST", SLICES, resource_slice("dup"))
    code, status = c.call("POST", SLICES, resource_slice("dup"))
    assert code == 409 and status["reason"] == "AlreadyExists"
    bad = pb.encode(resource_slice("x"))[:-10]
    code, status = c.call("POST", SLICES, bad)
    assert code == 400 and status["kind"] == "Status" and "truncated" in status["message"]


def test_unknown_field_number_in_a_body_is_400_naming_it(sim: SimHandle) -> None:
    config_map = pb.message_for("v1", "ConfigMap")
    assert config_map is not None
    inner = (
        pb._encode_message({"metadata": {"name": "cm"}}, config_map, "") + pb._varint_bytes(99 << 3) + b"\x01"
    )
    body = pb._envelope("v1", "ConfigMap", inner)
    resp = ProtobufClient(sim, accept="application/json").request(
        "POST", "/api/v1/namespaces/default/configmaps", body
    )
    status = json.loads(resp.data)
    assert resp.status == 400
    assert "k8s.io.api.core.v1.ConfigMap has no field number 99" in status["message"]


def test_protobuf_and_json_clients_keep_getting_json(sim: SimHandle) -> None:
    c = ProtobufClient(sim, accept="application/vnd.kubernetes.protobuf,application/json")
    resp = c.request("POST", SLICES, pb.encode(resource_slice("s")))
    assert resp.status == 201 and resp.headers["Content-Type"] == "application/json"
    assert json.loads(resp.data)["spec"]["devices"][1]["name"] == "gpu-1"


def test_kind_without_protobuf_layout_is_406_for_protobuf_only_clients(sim: SimHandle) -> None:
    c = ProtobufClient(sim)
    code, status = c.call("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
    assert code == 406 and status["reason"] == "NotAcceptable"


def _capture(n: int) -> bytes:
    [path] = FIXTURES.glob(f"capture__{n}__*.pb")
    return path.read_bytes()


def test_captured_nvidia_plugin_requests_are_served(sim: SimHandle) -> None:
    """POST, DELETE with preconditions and PUT exactly as gpu-kubelet-plugin sent them."""
    c = ProtobufClient(sim, accept="application/vnd.kubernetes.protobuf,application/json")
    resp = c.request("POST", SLICES, _capture(3))
    assert resp.status == 201, resp.data
    created = json.loads(resp.data)
    assert created["metadata"]["name"].startswith("00000-gpu.nvidia.com-node-1-")
    assert created["spec"]["devices"][0]["capacity"]["memory"]["requestPolicy"]
    want = pb.decode(_capture(3))["spec"]
    assert {k: v for k, v in created["spec"].items() if k in want} == want

    # DELETE of a stale slice with uid+resourceVersion preconditions: they are read and enforced
    stale = sim.store.create("resourceslices.resource.k8s.io", resource_slice("node-1-gpu.nvidia.com-stale"))
    resp = c.request("DELETE", f"{SLICES}/node-1-gpu.nvidia.com-stale", _capture(4))
    assert resp.status == 409 and "Precondition failed: uid" in json.loads(resp.data)["message"]
    opts = pb.decode(_capture(4))
    opts["preconditions"] = {k: stale["metadata"][k] for k in ("uid", "resourceVersion")}
    resp = c.request("DELETE", f"{SLICES}/node-1-gpu.nvidia.com-stale", pb.encode(opts))
    assert resp.status == 200, resp.data

    # PUT of the plugin's update: its resourceVersion comes from the captured run, so it applies only
    # where this sim is at the same version (a 409 Conflict otherwise); at the current one it applies
    put = pb.decode(_capture(5))
    name = put["metadata"]["name"]
    current = sim.store.create(
        "resourceslices.resource.k8s.io", {**pb.decode(_capture(3)), "metadata": {"name": name}}
    )
    resp = c.request("PUT", f"{SLICES}/{name}", _capture(5))
    same_version = current["metadata"]["resourceVersion"] == put["metadata"]["resourceVersion"]
    assert resp.status == (200 if same_version else 409), resp.data
    if not same_version:
        assert json.loads(resp.data)["reason"] == "Conflict"
        put["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        resp = c.request("PUT", f"{SLICES}/{name}", pb.encode(put))
        assert resp.status == 200, resp.data
    updated = json.loads(resp.data)
    assert updated["metadata"]["labels"] == {"tampered": "yes"}
    assert updated["spec"]["devices"] == put["spec"]["devices"]
