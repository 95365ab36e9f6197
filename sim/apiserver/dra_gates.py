"""DRA feature gates on writes: with a gate off, the fields it guards are silently dropped unless the
stored object already used them, as upstream registry strategies do (dra-facts.md §3.4)."""

from __future__ import annotations

from typing import Any

from ..config import SimConfig
from .resources import ResourceType


def _slice_uses(obj: dict[str, Any] | None) -> bool:
    for dev in ((obj or {}).get("spec") or {}).get("devices") or []:
        if not isinstance(dev, dict):
            continue
        if dev.get("allowMultipleAllocations") is not None:
            return True
        if any(
            isinstance(c, dict) and c.get("requestPolicy") is not None
            for c in (dev.get("capacity") or {}).values()
        ):
            return True
    return False


def _claim_spec(obj: dict[str, Any] | None, template: bool) -> dict[str, Any]:
    spec = (obj or {}).get("spec") or {}
    if template:
        spec = spec.get("spec") or {}
    return spec if isinstance(spec, dict) else {}


def _spec_targets(spec: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for req in (spec.get("devices") or {}).get("requests") or []:
        if isinstance(req, dict):
            out += [
                t for t in [req.get("exactly"), *(req.get("firstAvailable") or [])] if isinstance(t, dict)
            ]
    return out


def _spec_uses(spec: dict[str, Any]) -> bool:
    if any(t.get("capacity") is not None for t in _spec_targets(spec)):
        return True
    return any(
        isinstance(c, dict) and c.get("distinctAttribute") is not None
        for c in (spec.get("devices") or {}).get("constraints") or []
    )


def _status_uses(status: dict[str, Any]) -> bool:
    results = (((status.get("allocation") or {}).get("devices") or {}).get("results")) or []
    if any(
        isinstance(r, dict) and (r.get("shareID") is not None or r.get("consumedCapacity") is not None)
        for r in results
    ):
        return True
    return any(isinstance(d, dict) and d.get("shareID") is not None for d in status.get("devices") or [])


def drop_disabled_fields(
    rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None, config: SimConfig
) -> None:
    """With a DRA feature gate off, silently drop its fields unless the old object already used them
    (upstream strategy.go behaviour, dra-facts §3.4): DRAConsumableCapacity, and for explicit
    --feature-gates overrides DRAPrioritizedList (firstAvailable), DRAAdminAccess (adminAccess) and
    DRAResourceClaimDeviceStatus (status.devices)."""
    _drop_other_gated_fields(rt, obj, old, config)
    if config.gate("DRAConsumableCapacity"):
        return
    if rt.kind == "ResourceSlice":
        if _slice_uses(old):
            return
        for dev in (obj.get("spec") or {}).get("devices") or []:
            if not isinstance(dev, dict):
                continue
            dev.pop("allowMultipleAllocations", None)
            for cap in (dev.get("capacity") or {}).values():
                if isinstance(cap, dict):
                    cap.pop("requestPolicy", None)
    elif rt.kind in ("ResourceClaim", "ResourceClaimTemplate"):
        template = rt.kind == "ResourceClaimTemplate"
        spec = _claim_spec(obj, template)
        if not _spec_uses(_claim_spec(old, template)):
            for t in _spec_targets(spec):
                t.pop("capacity", None)
            for c in (spec.get("devices") or {}).get("constraints") or []:
                if isinstance(c, dict):
                    c.pop("distinctAttribute", None)
        status = obj.get("status")
        if isinstance(status, dict) and not _status_uses((old or {}).get("status") or {}):
            results = (((status.get("allocation") or {}).get("devices") or {}).get("results")) or []
            for r in results:
                if isinstance(r, dict):
                    r.pop("shareID", None)
                    r.pop("consumedCapacity", None)
            for d in status.get("devices") or []:
                if isinstance(d, dict):
                    d.pop("shareID", None)


def _drop_other_gated_fields(
    rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None, config: SimConfig
) -> None:
    if rt.kind not in ("ResourceClaim", "ResourceClaimTemplate"):
        return
    template = rt.kind == "ResourceClaimTemplate"
    spec, old_spec = _claim_spec(obj, template), _claim_spec(old, template)
    old_requests = (old_spec.get("devices") or {}).get("requests") or []
    requests = [r for r in (spec.get("devices") or {}).get("requests") or [] if isinstance(r, dict)]
    if not config.gate("DRAPrioritizedList") and not any(
        isinstance(r, dict) and r.get("firstAvailable") for r in old_requests
    ):
        for r in requests:
            r.pop("firstAvailable", None)
    if not config.gate("DRAAdminAccess") and not any(
        isinstance(r, dict) and (r.get("exactly") or {}).get("adminAccess") is not None for r in old_requests
    ):
        for r in requests:
            if isinstance(r.get("exactly"), dict):
                r["exactly"].pop("adminAccess", None)
    status = obj.get("status")
    old_devices = ((old or {}).get("status") or {}).get("devices")
    if isinstance(status, dict) and not config.gate("DRAResourceClaimDeviceStatus") and not old_devices:
        status.pop("devices", None)
