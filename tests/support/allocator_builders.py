"""Builders for allocator scenarios (shared by the pure table and the HTTP scenario tests)."""

from __future__ import annotations

from typing import Any

DRIVER = "gpu.example.com"
CLASS = "gpu.example.com"


def device(
    name: str,
    memory: str | None = "24Gi",
    multi: bool = True,
    policy: dict | None = None,
    attrs: dict[str, Any] | None = None,
    extra_caps: dict[str, str] | None = None,
) -> dict[str, Any]:
    d: dict[str, Any] = {"name": name, "attributes": {"uuid": {"string": f"uuid-{name}"}}}
    for k, v in (attrs or {}).items():
        d["attributes"][k] = v
    caps: dict[str, Any] = {}
    if memory is not None:
        caps["memory"] = {"value": memory}
        if policy:
            caps["memory"]["requestPolicy"] = policy
    for k, v in (extra_caps or {}).items():
        caps[k] = {"value": v}
    if caps:
        d["capacity"] = caps
    if multi:
        d["allowMultipleAllocations"] = True
    return d


def slice_(
    name: str,
    devices: list[dict],
    node: str | None = "node-1",
    pool: str | None = None,
    generation: int = 1,
    count: int = 1,
    driver: str = DRIVER,
    **spec: Any,
) -> dict[str, Any]:
    s: dict[str, Any] = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": name},
        "spec": {
            "driver": driver,
            "pool": {"name": pool or node or "pool", "generation": generation, "resourceSliceCount": count},
            "devices": devices,
            **spec,
        },
    }
    if node and "allNodes" not in spec and "nodeSelector" not in spec:
        s["spec"]["nodeName"] = node
    return s


def device_class(name: str = CLASS, selectors: list[str] | None = None) -> dict[str, Any]:
    sels = selectors if selectors is not None else [f'device.driver == "{DRIVER}"']
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": name},
        "spec": {"selectors": [{"cel": {"expression": e}} for e in sels]},
    }


def exactly(
    memory: str | None = None,
    count: int | None = None,
    selectors: list[str] | None = None,
    mode: str | None = None,
    admin: bool | None = None,
    cls: str = CLASS,
    capacity: dict[str, str] | None = None,
    empty_capacity: bool = False,
) -> dict[str, Any]:
    e: dict[str, Any] = {"deviceClassName": cls}
    caps = dict(capacity or {})
    if memory is not None:
        caps["memory"] = memory
    if caps:
        e["capacity"] = {"requests": caps}
    elif empty_capacity:
        e["capacity"] = {"requests": {}}
    if count is not None:
        e["count"] = count
    if mode:
        e["allocationMode"] = mode
    if selectors:
        e["selectors"] = [{"cel": {"expression": s}} for s in selectors]
    if admin:
        e["adminAccess"] = True
    return e


def claim(
    name: str,
    *requests: tuple[str, dict],
    constraints: list[dict] | None = None,
    namespace: str = "default",
    first_available: dict[str, list[dict]] | None = None,
) -> dict[str, Any]:
    reqs: list[dict[str, Any]] = [{"name": n, "exactly": e} for n, e in requests]
    for n, subs in (first_available or {}).items():
        reqs.append({"name": n, "firstAvailable": subs})
    c: dict[str, Any] = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"devices": {"requests": reqs}},
    }
    if constraints:
        c["spec"]["devices"]["constraints"] = constraints
    return c


def node(name: str = "node-1", labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels or {}}}


RANGE_POLICY = {"default": "2Gi", "validRange": {"min": "2Gi", "step": "2Gi", "max": "8Gi"}}
