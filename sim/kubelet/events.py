"""Kubelet events: core/v1 Events about pods, aggregated like client-go's recorder (count, lastTimestamp)."""

from __future__ import annotations

import logging
import secrets
import threading
from typing import Any

from drakit.timeutil import now_rfc3339

log = logging.getLogger(__name__)


class EventRecorder:
    def __init__(self, store: Any, node_name: str):
        self._store = store
        self._node = node_name
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str, str, str], tuple[str, str, int]] = {}

    def emit(
        self, pod: dict[str, Any], event_type: str, reason: str, message: str, field_path: str | None = None
    ) -> None:
        meta = pod["metadata"]
        ns = meta.get("namespace", "default")
        key = (meta["uid"], reason, message, field_path or "")
        ts = now_rfc3339()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None:
                _, name, count = seen
                self._seen[key] = (ns, name, count + 1)
        try:
            if seen is not None:
                self._store.patch(
                    "events", name, {"count": count + 1, "lastTimestamp": ts}, "merge", namespace=ns
                )
                return
            involved: dict[str, Any] = {
                "kind": "Pod",
                "apiVersion": "v1",
                "namespace": ns,
                "name": meta["name"],
                "uid": meta["uid"],
            }
            if meta.get("resourceVersion"):
                involved["resourceVersion"] = meta["resourceVersion"]
            if field_path:
                involved["fieldPath"] = field_path
            # Named <object>.<hex> as client-go's recorder names them.
            name = f"{meta['name']}.{secrets.token_hex(8)}"
            self._store.create("events", {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": name, "namespace": ns},
                "involvedObject": involved, "reason": reason, "message": message, "type": event_type,
                "source": {"component": "kubelet", "host": self._node},
                "firstTimestamp": ts, "lastTimestamp": ts, "count": 1,
                "reportingComponent": "kubelet", "reportingInstance": self._node,
            }, namespace=ns)  # fmt: skip
            with self._lock:
                self._seen[key] = (ns, name, 1)
        except Exception as e:  # an event is best effort, as in client-go; the pod's status carries the truth
            log.warning("could not record event %s for %s/%s: %s", reason, ns, meta["name"], e)

    def forget(self, pod_uid: str) -> None:
        with self._lock:
            for key in [k for k in self._seen if k[0] == pod_uid]:
                del self._seen[key]
