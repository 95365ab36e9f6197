"""Helpers for scheduler/controller tests over HTTP (no tests here)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from kubernetes import client, watch

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
        for _ in range(3):
            self.controller.wait_idle(timeout)
            self.scheduler.wait_idle(timeout)


@contextmanager
def control_plane_sim(
    nodes: tuple[str, ...] = ("node-1",),
    feature_gates: str = "",
    kube_version: str = "1.36",
    backoff: float = 0.05,
) -> Iterator[Sim]:
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
