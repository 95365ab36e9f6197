"""Server-side printing (meta.k8s.io/v1 Table) for `kubectl get`."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from typing import Any

from .resources import ResourceType

Column = tuple[str, str, int, Callable[[dict[str, Any]], Any]]


def _age(obj: dict[str, Any]) -> str:
    return _since((obj.get("metadata") or {}).get("creationTimestamp"))


def _last_seen(obj: dict[str, Any]) -> str:
    return _since(
        obj.get("lastTimestamp") or obj.get("eventTime") or obj["metadata"].get("creationTimestamp")
    )


def _since(ts: str | None) -> str:
    if not ts:
        return "<unknown>"
    ts = ts.split(".")[0].rstrip("Z") + "Z"  # eventTime carries microseconds
    created = _dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.UTC)
    secs = max(0, int((_dt.datetime.now(_dt.UTC) - created).total_seconds()))
    if secs < 120:
        return f"{secs}s"
    if secs < 7200:
        return f"{secs // 60}m"
    if secs < 172800:
        return f"{secs // 3600}h"
    return f"{secs // 86400}d"


def _name(obj: dict[str, Any]) -> str:
    return obj["metadata"]["name"]


def _pod_ready(obj: dict[str, Any]) -> str:
    statuses = (obj.get("status") or {}).get("containerStatuses") or []
    total = len((obj.get("spec") or {}).get("containers") or [])
    return f"{sum(1 for s in statuses if s.get('ready'))}/{total}"


def _pod_status(obj: dict[str, Any]) -> str:
    if obj["metadata"].get("deletionTimestamp"):
        return "Terminating"
    status = obj.get("status") or {}
    for s in status.get("containerStatuses") or []:
        waiting = (s.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason"):
            return waiting["reason"]
    return status.get("reason") or status.get("phase") or "Unknown"


def _restarts(obj: dict[str, Any]) -> int:
    return sum(s.get("restartCount", 0) for s in (obj.get("status") or {}).get("containerStatuses") or [])


def _node_status(obj: dict[str, Any]) -> str:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return "Ready" if c.get("status") == "True" else "NotReady"
    return "Unknown"


def _claim_state(obj: dict[str, Any]) -> str:
    status = obj.get("status") or {}
    parts = []
    if obj["metadata"].get("deletionTimestamp"):
        parts.append("deleted")
    if status.get("allocation"):
        parts.append("allocated")
    if status.get("reservedFor"):
        parts.append("reserved")
    return ",".join(parts) or "pending"


def _involved(obj: dict[str, Any]) -> str:
    io = obj.get("involvedObject") or {}
    return f"{(io.get('kind') or '').lower()}/{io.get('name', '')}"


_NAME: Column = ("Name", "string", 0, _name)
_AGE: Column = ("Age", "string", 0, _age)

_COLUMNS: dict[str, list[Column]] = {
    "pods": [
        _NAME,
        ("Ready", "string", 0, _pod_ready),
        ("Status", "string", 0, _pod_status),
        ("Restarts", "integer", 0, _restarts),
        _AGE,
        ("IP", "string", 1, lambda o: (o.get("status") or {}).get("podIP") or "<none>"),
        ("Node", "string", 1, lambda o: (o.get("spec") or {}).get("nodeName") or "<none>"),
    ],
    "nodes": [
        _NAME,
        ("Status", "string", 0, _node_status),
        ("Roles", "string", 0, lambda o: "<none>"),
        _AGE,
        (
            "Version",
            "string",
            0,
            lambda o: ((o.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion", ""),
        ),
    ],
    "namespaces": [_NAME, ("Status", "string", 0, lambda o: (o.get("status") or {}).get("phase", "")), _AGE],
    "resourceslices.resource.k8s.io": [
        _NAME,
        ("Node", "string", 0, lambda o: (o.get("spec") or {}).get("nodeName") or "<none>"),
        ("Driver", "string", 0, lambda o: (o.get("spec") or {}).get("driver", "")),
        ("Pool", "string", 0, lambda o: ((o.get("spec") or {}).get("pool") or {}).get("name", "")),
        _AGE,
    ],
    "resourceclaims.resource.k8s.io": [_NAME, ("State", "string", 0, _claim_state), _AGE],
    "events": [
        ("Last Seen", "string", 0, _last_seen),
        ("Type", "string", 0, lambda o: o.get("type", "")),
        ("Reason", "string", 0, lambda o: o.get("reason", "")),
        ("Object", "string", 0, _involved),
        ("Message", "string", 0, lambda o: o.get("message", "")),
    ],
}


def table(rt: ResourceType, items: list[dict[str, Any]], rv: int | None) -> dict[str, Any]:
    columns = _COLUMNS.get(rt.name, [_NAME, _AGE])
    defs = [
        {"name": n, "type": t, "format": "name" if n == "Name" else "", "description": n, "priority": p}
        for n, t, p, _ in columns
    ]
    rows = []
    for obj in items:
        rows.append(
            {
                "cells": [f(obj) for _, _, _, f in columns],
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": obj["metadata"],
                },
            }
        )
    meta = {"resourceVersion": str(rv)} if rv is not None else {}
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": defs,
        "rows": rows,
    }
