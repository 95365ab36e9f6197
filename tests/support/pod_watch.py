"""Watch-based waits on pods and events shared by the kubelet tests (official client, bounded)."""

from __future__ import annotations

import json
from collections.abc import Callable

from kubernetes import client, watch


class PodWatch:
    """Mixin: needs `self.api` (ApiClient), `self.core` (CoreV1Api) and `self.namespace`."""

    api: client.ApiClient
    core: client.CoreV1Api
    namespace = "default"
    default_timeout: float = 20

    def plain(self, obj) -> dict:
        return self.api.sanitize_for_serialization(obj)

    def diagnostics(self, name: str) -> str:
        """Extra context appended when a wait gives up."""
        return ""

    def wait_pod(
        self, name: str, predicate: Callable[[dict], bool], timeout: float | None = None, what: str = ""
    ) -> dict:
        timeout = timeout or self.default_timeout
        last = None
        w = watch.Watch()
        for ev in w.stream(
            self.core.list_namespaced_pod,
            self.namespace,
            field_selector=f"metadata.name={name}",
            timeout_seconds=int(timeout),
        ):
            last = self.plain(ev["object"])
            if ev["type"] != "DELETED" and predicate(last):
                w.stop()
                return last
        raise AssertionError(
            f"pod {name}: {what or 'condition'} not reached in {timeout}s; status: "
            f"{json.dumps((last or {}).get('status'), indent=1)}{self.diagnostics(name)}"
        )

    def wait_gone(self, name: str, timeout: float | None = None) -> None:
        timeout = timeout or self.default_timeout
        try:
            rv = self.core.read_namespaced_pod(name, self.namespace).metadata.resource_version
        except client.ApiException as e:
            if e.status == 404:
                return
            raise
        w = watch.Watch()  # from the version read, so that a deletion in between is not missed
        for ev in w.stream(
            self.core.list_namespaced_pod,
            self.namespace,
            field_selector=f"metadata.name={name}",
            resource_version=rv,
            timeout_seconds=int(timeout),
        ):
            if ev["type"] == "DELETED":
                w.stop()
                return
        raise AssertionError(f"pod {name} still present after {timeout}s")

    def wait_event(self, name: str, reason: str, timeout: float | None = None) -> dict:
        timeout = timeout or self.default_timeout
        w = watch.Watch()
        for ev in w.stream(
            self.core.list_namespaced_event,
            self.namespace,
            field_selector=f"involvedObject.name={name}",
            timeout_seconds=int(timeout),
        ):
            obj = self.plain(ev["object"])
            if obj["reason"] == reason:
                w.stop()
                return obj
        raise AssertionError(f"no {reason} event for pod {name} within {timeout}s: {self.events(name)}")

    def events(self, name: str) -> list[dict]:
        selector = f"involvedObject.name={name}"
        items = self.core.list_namespaced_event(self.namespace, field_selector=selector).items
        return [self.plain(e) for e in items]
