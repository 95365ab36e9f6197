"""The in-process Store: CRUD, optimistic concurrency, watch semantics, deletion rules."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from sim.apiserver import ApiError, Store
from sim.config import SimConfig

SLICES = "resourceslices.resource.k8s.io"
CLAIMS = "resourceclaims.resource.k8s.io"


def pod(name: str, node: str | None = None, **meta: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "busybox"}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, **meta}, "spec": spec}


def cm(name: str, **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, **meta}, "data": {"k": "v"}}


def test_create_assigns_identity_and_increasing_resource_versions(store: Store) -> None:
    a = store.create("configmaps", cm("a"), namespace="default")
    b = store.create("configmaps", cm("b"), namespace="default")
    assert a["apiVersion"] == "v1" and a["kind"] == "ConfigMap"
    assert a["metadata"]["uid"] != b["metadata"]["uid"]
    assert int(b["metadata"]["resourceVersion"]) > int(a["metadata"]["resourceVersion"])
    assert store.get("configmaps", "a", "default") == a


def test_create_existing_name_is_already_exists(store: Store) -> None:
    store.create("configmaps", cm("a"), namespace="default")
    with pytest.raises(ApiError) as e:
        store.create("configmaps", cm("a"), namespace="default")
    assert (e.value.code, e.value.reason) == (409, "AlreadyExists")


def test_get_missing_is_not_found(store: Store) -> None:
    with pytest.raises(ApiError) as e:
        store.get("pods", "nope", "default")
    assert (e.value.code, e.value.reason) == (404, "NotFound")


def test_create_in_missing_namespace_is_not_found(store: Store) -> None:
    with pytest.raises(ApiError) as e:
        store.create("configmaps", cm("a"), namespace="nowhere")
    assert e.value.code == 404 and "nowhere" in e.value.message


def test_update_with_stale_resource_version_is_conflict(store: Store) -> None:
    first = store.create("configmaps", cm("a"), namespace="default")
    fresh = dict(first, data={"k": "v2"})
    store.update("configmaps", fresh)
    stale = dict(first, data={"k": "v3"})
    with pytest.raises(ApiError) as e:
        store.update("configmaps", stale)
    assert (e.value.code, e.value.reason) == (409, "Conflict")
    assert store.get("configmaps", "a", "default")["data"] == {"k": "v2"}


def test_noop_update_keeps_resource_version(store: Store) -> None:
    first = store.create("configmaps", cm("a"), namespace="default")
    again = store.update("configmaps", first)
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]


def test_concurrent_writers_lose_no_update(store: Store) -> None:
    store.create("configmaps", {"metadata": {"name": "counter"}, "data": {"n": "0"}}, namespace="default")
    conflicts = []

    def bump(times: int) -> None:
        for _ in range(times):
            while True:
                obj = store.get("configmaps", "counter", "default")
                obj["data"]["n"] = str(int(obj["data"]["n"]) + 1)
                try:
                    store.update("configmaps", obj)
                    break
                except ApiError as e:
                    assert e.code == 409
                    conflicts.append(1)

    threads = [threading.Thread(target=bump, args=(50,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get("configmaps", "counter", "default")["data"]["n"] == "200"


def test_status_update_changes_only_status_and_main_update_keeps_status(store: Store) -> None:
    p = store.create("pods", pod("p"), namespace="default")
    p["status"] = {"phase": "Running"}
    p["metadata"]["labels"] = {"ignored": "yes"}
    after = store.update("pods", p, subresource="status")
    assert after["status"]["phase"] == "Running" and "labels" not in after["metadata"]
    after["status"] = {"phase": "Failed"}
    after["metadata"]["labels"] = {"kept": "yes"}
    main = store.update("pods", after)
    assert main["status"]["phase"] == "Running" and main["metadata"]["labels"] == {"kept": "yes"}


def test_patch_types_merge_json_strategic(store: Store) -> None:
    p = pod("p")
    p["spec"]["containers"][0]["command"] = ["sleep", "60"]
    store.create("pods", p, namespace="default")
    store.patch("pods", "p", {"metadata": {"labels": {"a": "1"}}}, "merge", "default")
    store.patch("pods", "p", [{"op": "add", "path": "/metadata/labels/b", "value": "2"}], "json", "default")
    with pytest.raises(ApiError) as e:  # a merge-key list element must carry its key
        store.patch("pods", "p", {"spec": {"containers": [{"image": "no-name"}]}}, "strategic", "default")
    assert e.value.code == 400 and "merge key 'name'" in e.value.message
    out = store.patch(
        "pods", "p", {"spec": {"containers": [{"name": "c", "image": "v2"}]}}, "strategic", "default"
    )
    assert out["metadata"]["labels"] == {"a": "1", "b": "2"}
    # merged into the element with the same name, not a replaced list
    assert out["spec"]["containers"] == [{"name": "c", "image": "v2", "command": ["sleep", "60"]}]


def test_pod_spec_is_immutable_except_images_and_binding_is_the_way_to_set_a_node(store: Store) -> None:
    store.create("pods", pod("p"), namespace="default")
    with pytest.raises(ApiError) as e:
        store.patch(
            "pods", "p", {"spec": {"containers": [{"name": "side", "image": "x"}]}}, "strategic", "default"
        )
    assert (e.value.code, e.value.causes[0]["field"]) == (422, "spec")
    with pytest.raises(ApiError) as e:
        store.patch("pods", "p", {"spec": {"nodeName": "node-1"}}, "merge", "default")
    assert e.value.causes[0]["field"] == "spec.nodeName" and "binding" in e.value.causes[0]["message"]


def test_patch_with_stale_resource_version_is_conflict(store: Store) -> None:
    store.create("configmaps", cm("a"), namespace="default")
    with pytest.raises(ApiError) as e:
        store.patch(
            "configmaps", "a", {"metadata": {"resourceVersion": "1"}, "data": {"k": "x"}}, "merge", "default"
        )
    assert e.value.code == 409


def test_watch_delivers_events_in_order(store: Store) -> None:
    w = store.watch(["configmaps"])
    store.create("configmaps", cm("a"), namespace="default")
    store.patch("configmaps", "a", {"data": {"k": "x"}}, "merge", "default")
    store.delete("configmaps", "a", "default")
    types = [w.get(timeout=5).type for _ in range(3)]
    assert types == ["ADDED", "MODIFIED", "DELETED"]
    assert w.get(timeout=0.05) is None
    w.close()


def test_watch_resumes_after_a_resource_version(store: Store) -> None:
    store.create("configmaps", cm("a"), namespace="default")
    _, rv = store.list("configmaps", "default")
    store.create("configmaps", cm("b"), namespace="default")
    store.create("configmaps", cm("c"), namespace="default")
    w = store.watch("configmaps", since=rv)
    names = [w.get(timeout=5).object["metadata"]["name"] for _ in range(2)]
    assert names == ["b", "c"]
    w.close()


def test_watch_from_a_version_older_than_history_is_expired() -> None:
    small = Store(SimConfig(), history=5)
    _, rv = small.list("configmaps")
    for i in range(10):
        small.create("configmaps", cm(f"c{i}"), namespace="default")
    with pytest.raises(ApiError) as e:
        small.watch("configmaps", since=rv)
    assert (e.value.code, e.value.reason) == (410, "Expired")


def test_watch_with_selector_reports_objects_leaving_the_selection_as_deleted(store: Store) -> None:
    store.create("configmaps", cm("a", labels={"app": "x"}), namespace="default")
    w = store.watch("configmaps", label_selector="app=x", send_initial=True)
    assert w.get(timeout=5).type == "ADDED"
    store.patch("configmaps", "a", {"metadata": {"labels": {"app": "y"}}}, "merge", "default")
    ev = w.get(timeout=5)
    assert ev.type == "DELETED" and ev.object["metadata"]["labels"] == {"app": "y"}
    w.close()


def test_label_and_field_selectors(store: Store) -> None:
    store.create("pods", pod("a", labels={"tier": "gpu", "team": "x"}), namespace="default")
    store.create("pods", pod("b", labels={"tier": "cpu"}), namespace="default")
    store.create("pods", pod("c"), namespace="default")

    def names(**kw: Any) -> list[str]:
        return [o["metadata"]["name"] for o in store.list("pods", "default", **kw)[0]]

    assert names(label_selector="tier in (gpu,tpu)") == ["a"]
    assert names(label_selector="tier notin (gpu)") == ["b", "c"]
    assert names(label_selector="!tier") == ["c"]
    assert names(label_selector="tier,team=x") == ["a"]
    assert names(field_selector="metadata.name!=a,status.phase=Pending") == ["b", "c"]
    with pytest.raises(ApiError) as e:
        names(field_selector="spec.bogus=1")
    assert e.value.code == 400 and "field label not supported" in e.value.message


def test_finalizer_holds_deletion_until_removed(store: Store) -> None:
    store.create("configmaps", cm("a", finalizers=["example.com/hold"]), namespace="default")
    held = store.delete("configmaps", "a", "default")
    assert held["metadata"]["deletionTimestamp"]
    assert store.get("configmaps", "a", "default")
    held["metadata"]["finalizers"] = []
    store.update("configmaps", held)
    with pytest.raises(ApiError):
        store.get("configmaps", "a", "default")


def test_bound_pod_with_kubelet_is_deleted_gracefully(store: Store) -> None:
    store.register_kubelet("node-1")
    store.create("pods", pod("p", node="node-1"), namespace="default")
    store.create("pods", pod("q", node="node-2"), namespace="default")
    marked = store.delete("pods", "p", "default")
    assert marked["metadata"]["deletionTimestamp"] and marked["metadata"]["deletionGracePeriodSeconds"] == 30
    assert store.get("pods", "p", "default")  # still there until the kubelet finishes
    store.delete("pods", "p", "default", grace_period_seconds=0)
    store.delete("pods", "q", "default")  # node-2 has no kubelet: removed at once
    assert store.list("pods", "default")[0] == []


def test_dependents_are_garbage_collected_with_their_owner(store: Store) -> None:
    owner = store.create("pods", pod("owner"), namespace="default")
    ref = {"apiVersion": "v1", "kind": "Pod", "name": "owner", "uid": owner["metadata"]["uid"]}
    store.create("configmaps", cm("dep", ownerReferences=[ref]), namespace="default")
    store.create("configmaps", cm("free"), namespace="default")
    store.delete("pods", "owner", "default")
    assert [o["metadata"]["name"] for o in store.list("configmaps", "default")[0]] == ["free"]


def test_namespace_deletion_removes_its_objects_then_itself(store: Store) -> None:
    store.create("namespaces", {"metadata": {"name": "team"}})
    store.create("configmaps", cm("a"), namespace="team")
    store.create("pods", pod("p"), namespace="team")
    w = store.watch("namespaces")
    store.delete("namespaces", "team")
    with pytest.raises(ApiError):
        store.get("namespaces", "team")
    assert store.list("configmaps", "team")[0] == [] and store.list("pods", "team")[0] == []
    assert [w.get(timeout=5).type for _ in range(2)] == ["MODIFIED", "DELETED"]
    w.close()


def test_namespace_waits_for_graceful_pods(store: Store) -> None:
    store.register_kubelet("node-1")
    store.create("namespaces", {"metadata": {"name": "team"}})
    store.create("pods", pod("p", node="node-1"), namespace="team")
    ns = store.delete("namespaces", "team")
    assert ns["status"]["phase"] == "Terminating"
    with pytest.raises(ApiError) as e:
        store.create("configmaps", cm("late"), namespace="team")
    assert e.value.code == 403
    store.delete("pods", "p", "team", grace_period_seconds=0)
    with pytest.raises(ApiError):
        store.get("namespaces", "team")


def test_binding_sets_node_once(store: Store) -> None:
    store.create("pods", pod("p"), namespace="default")
    bound = store.bind("p", "default", "node-1")
    assert bound["spec"]["nodeName"] == "node-1"
    assert any(c["type"] == "PodScheduled" and c["status"] == "True" for c in bound["status"]["conditions"])
    with pytest.raises(ApiError) as e:
        store.bind("p", "default", "node-2")
    assert e.value.code == 409


def test_returned_objects_are_copies(store: Store) -> None:
    obj = store.create("configmaps", cm("a"), namespace="default")
    obj["data"]["k"] = "mutated"
    assert store.get("configmaps", "a", "default")["data"]["k"] == "v"


def test_delete_collection_honours_selector(store: Store) -> None:
    store.create("configmaps", cm("a", labels={"x": "1"}), namespace="default")
    store.create("configmaps", cm("b"), namespace="default")
    store.delete_collection("configmaps", "default", label_selector="x=1")
    assert [o["metadata"]["name"] for o in store.list("configmaps", "default")[0]] == ["b"]


def test_graceful_pod_with_finalizer_goes_once_kubelet_and_finalizer_are_done(store: Store) -> None:
    store.register_kubelet("node-1")
    store.create("pods", pod("p", node="node-1", finalizers=["example.com/keep"]), namespace="default")
    store.delete("pods", "p", "default")
    store.delete("pods", "p", "default", grace_period_seconds=0)  # the kubelet stopped the pod
    held = store.get("pods", "p", "default")
    assert held["metadata"]["deletionGracePeriodSeconds"] == 0
    store.patch("pods", "p", {"metadata": {"finalizers": None}}, "merge", "default")
    assert store.list("pods", "default")[0] == []


def test_secret_defaults_type_and_merges_string_data(store: Store) -> None:
    s = store.create(
        "secrets", {"metadata": {"name": "s"}, "stringData": {"user": "admin"}}, namespace="default"
    )
    assert (s["type"], s["data"], "stringData" in s) == ("Opaque", {"user": "YWRtaW4="}, False)


def test_server_side_apply_removes_what_the_manager_stopped_applying(store: Store) -> None:
    first = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "a", "labels": {"x": "1", "y": "2"}},
        "data": {"k": "v", "old": "gone soon"},
    }
    store.patch("configmaps", "a", first, "apply", "default", field_manager="me")
    store.patch("configmaps", "a", {"metadata": {"labels": {"other": "keep"}}}, "merge", "default")
    second = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "a", "labels": {"x": "1"}},
        "data": {"k": "v2"},
    }
    out = store.patch("configmaps", "a", second, "apply", "default", field_manager="me")
    assert out["metadata"]["labels"] == {"x": "1", "other": "keep"}
    assert out["data"] == {"k": "v2"}
