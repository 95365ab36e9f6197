"""Helpers for scheduler/controller tests over HTTP (no tests here).

With ``GSC_CONTROL_PLANE=local`` (``make compare-local``) the same tests run against a real control plane
(``localkube``: upstream's kube-apiserver, kube-controller-manager and kube-scheduler) instead of the
sim's, so the tests that fail there are exactly where the sim's scheduler and claim controller differ.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, watch

from sim.apiserver.errors import ApiError
from sim.scheduler import add_control_plane
from sim.testing import running_sim

WAIT_S = 20


@dataclass
class Sim:
    handle: Any
    api: client.ApiClient
    core: client.CoreV1Api
    res: client.ResourceV1Api
    controller: Any
    scheduler: Any

    def plain(self, obj: Any) -> Any:
        return self.api.sanitize_for_serialization(obj)

    def pod(self, name: str, ns: str = "default") -> dict[str, Any]:
        return self.plain(self.core.read_namespaced_pod(name, ns))

    def claim(self, name: str, ns: str = "default") -> dict[str, Any]:
        return self.plain(self.res.read_namespaced_resource_claim(name, ns))

    def wait_pod(
        self,
        name: str,
        predicate: Callable[[dict[str, Any]], bool],
        what: str,
        ns: str = "default",
        timeout: float = WAIT_S,
    ) -> dict[str, Any]:
        """Watch one pod over HTTP until `predicate(pod)` holds; fail naming `what` otherwise."""
        w = watch.Watch()
        for ev in w.stream(
            self.core.list_namespaced_pod,
            ns,
            field_selector=f"metadata.name={name}",
            timeout_seconds=int(timeout),
        ):
            pod = self.plain(ev["object"])
            if ev["type"] != "DELETED" and predicate(pod):
                w.stop()
                return pod
        raise AssertionError(f"gave up after {timeout}s waiting for pod {ns}/{name}: {what}")

    def wait_claims(
        self,
        predicate: Callable[[list[dict[str, Any]]], bool],
        what: str,
        ns: str = "default",
        timeout: float = WAIT_S,
    ) -> list[dict[str, Any]]:
        """Watch claims over HTTP until `predicate(all claims in ns)` holds."""
        # The client cannot derive the item type of ResourceV1ResourceClaimList by itself.
        w = watch.Watch(return_type="ResourceV1ResourceClaim")
        current: dict[str, dict[str, Any]] = {}
        if predicate([]):
            return []
        for ev in w.stream(self.res.list_namespaced_resource_claim, ns, timeout_seconds=int(timeout)):
            obj = self.plain(ev["object"])
            if ev["type"] == "DELETED":
                current.pop(obj["metadata"]["name"], None)
            else:
                current[obj["metadata"]["name"]] = obj
            if predicate(list(current.values())):
                w.stop()
                return list(current.values())
        raise AssertionError(f"gave up after {timeout}s waiting for claims in {ns}: {what}")

    def quiesce(self, timeout: float = WAIT_S) -> None:
        """Both control-plane threads parked with nothing queued (twice in a row: they feed each other)."""
        if self.controller is None:
            # Upstream's scheduler and controllers give no idle signal: a settle window as long as the
            # suite's on a real cluster stands in for one (comparison runs only).
            time.sleep(REAL_SETTLE_S)
            return
        for _ in range(3):
            self.controller.wait_idle(timeout)
            self.scheduler.wait_idle(timeout)


REAL_SETTLE_S = 5.0


@dataclass
class _RealHandle:
    kubeconfig: Path

    def client(self) -> client.ApiClient:
        from kubernetes import config

        cfg = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=cfg)
        return client.ApiClient(cfg)

    @property
    def store(self) -> Any:
        import pytest

        pytest.skip("reads the sim's in-process store: nothing to compare on a real control plane")


def _wait_untainted(admin: Any, nodes: tuple[str, ...], timeout: float = 60) -> None:
    """Until the node lifecycle controller has seen each node Ready and lifted its not-ready taint (the
    sim's nodes are schedulable at once; upstream's only after that)."""
    deadline = time.monotonic() + timeout
    for n in nodes:
        while admin.get("nodes", n).get("spec", {}).get("taints"):
            if time.monotonic() > deadline:
                raise AssertionError(f"node {n} still tainted after {timeout:.0f}s: {admin.get('nodes', n)}")
            time.sleep(0.2)


def _finish_deletions(admin: Any, stop: threading.Event) -> None:
    """What the kubelet does for a deleted pod on its node (these nodes have none): the final delete
    once deletionTimestamp is set, so deleting a pod releases its claims as on the sim."""
    while not stop.is_set():
        pods, rv = admin.list("pods")
        for pod in pods:
            _finish(admin, pod)
        w = admin.watch("pods", rv, timeout_s=30)
        try:
            while not stop.is_set() and not w.ended:
                ev = w.get(timeout=1.0)
                if ev is not None and ev.type != "DELETED":
                    _finish(admin, ev.object)
        finally:
            w.close()


def _finish(admin: Any, pod: dict[str, Any]) -> None:
    meta = pod["metadata"]
    if meta.get("deletionTimestamp") and pod.get("spec", {}).get("nodeName"):
        try:
            admin.delete("pods", meta["name"], namespace=meta["namespace"], grace_period_seconds=0)
        except ApiError:
            pass


@contextmanager
def _real_control_plane(nodes: tuple[str, ...], feature_gates: str) -> Iterator[Sim]:
    """Upstream's control plane with ``nodes`` registered Ready (Node objects and Leases kept fresh by
    the sim kubelet's heartbeat, no kubelets: these tests only schedule)."""
    from localkube import versions
    from localkube.controlplane import ControlPlane
    from sim.config import parse_feature_gates
    from sim.kubelet.remote import Connection, RemoteStore

    release = versions.resolve(os.environ.get("KUBE_VERSION") or None)
    with tempfile.TemporaryDirectory(prefix="gsc-cp-") as tmp:
        cp = ControlPlane(release, Path(tmp), feature_gates=parse_feature_gates(feature_gates))
        endpoints = cp.start()
        stores = []
        try:
            for n in nodes:
                store = RemoteStore(Connection.from_kubeconfig(endpoints.admin_kubeconfig), n)
                store.server_version = f"v{release}"
                store.register_kubelet(n)
                stores.append(store)
            admin = RemoteStore(Connection.from_kubeconfig(endpoints.admin_kubeconfig))
            _wait_untainted(admin, nodes)
            stop = threading.Event()
            finisher = threading.Thread(target=_finish_deletions, args=(admin, stop), daemon=True)
            finisher.start()
            handle = _RealHandle(endpoints.admin_kubeconfig)
            api = handle.client()
            try:
                yield Sim(handle, api, client.CoreV1Api(api), client.ResourceV1Api(api), None, None)
            finally:
                api.close()
        finally:
            stop.set()
            for store in stores:
                store.unregister_kubelet(store.node or "")
            cp.stop()


@contextmanager
def control_plane_sim(
    nodes: tuple[str, ...] = ("node-1",),
    feature_gates: str = "",
    kube_version: str = "1.36",
    backoff: float = 0.05,
) -> Iterator[Sim]:
    if os.environ.get("GSC_CONTROL_PLANE") == "local":
        with _real_control_plane(nodes, feature_gates) as real:
            yield real
        return
    parts: dict[str, Any] = {}

    def configure(cluster: Any) -> None:
        parts["controller"], parts["scheduler"] = add_control_plane(
            cluster, initial_backoff=backoff, max_backoff=backoff * 4
        )

    with running_sim(
        nodes=list(nodes), feature_gates=feature_gates, kube_version=kube_version, configure=configure
    ) as handle:
        api = handle.client()
        try:
            yield Sim(
                handle,
                api,
                client.CoreV1Api(api),
                client.ResourceV1Api(api),
                parts["controller"],
                parts["scheduler"],
            )
            assert not parts["controller"].errors, parts["controller"].errors
            assert not parts["scheduler"].errors, parts["scheduler"].errors
        finally:
            api.close()


def bound(pod: dict[str, Any]) -> bool:
    return bool(pod["spec"].get("nodeName"))


def condition(pod: dict[str, Any], type_: str = "PodScheduled") -> dict[str, Any] | None:
    return next((c for c in (pod.get("status") or {}).get("conditions") or [] if c["type"] == type_), None)


def unschedulable(pod: dict[str, Any]) -> bool:
    c = condition(pod)
    return c is not None and c["status"] == "False"


def template(name: str, request: dict[str, Any], ns: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"spec": {"devices": {"requests": [{"name": "gpu", "exactly": request}]}}},
    }


def pod_with_template(name: str, tmpl: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "containers": [{"name": "c", "image": "busybox", "resources": {"claims": [{"name": "gpu"}]}}],
            "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": tmpl}],
            **spec,
        },
    }


def pod_with_claim(name: str, claim: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "containers": [{"name": "c", "image": "busybox", "resources": {"claims": [{"name": "gpu"}]}}],
            "resourceClaims": [{"name": "gpu", "resourceClaimName": claim}],
            **spec,
        },
    }
