"""What a failed check carries in the report: the driver's slices and logs, and the scenario's claims,
pods and events at the moment of the failure. Diagnostics never raise: a listing that fails is recorded
as its error, so it cannot hide the failure it was meant to explain."""

from __future__ import annotations

from typing import Any

from conformance.kube import raw
from conformance.session import Suite
from conformance.workloads import Scenario


def collect_diagnostics(sc: Scenario) -> dict[str, Any]:
    """Slices, claims, pods, events and driver logs at the moment of a failure."""
    kube, out = sc.kube, cluster_diagnostics(sc.suite)
    for ns in sc.namespaces:
        out[f"claims {ns}"] = [
            {"name": (c.get("metadata") or {}).get("name"), "status": c.get("status")}
            for c in listing(kube.resource.list_namespaced_resource_claim, ns)
        ]
        out[f"pods {ns}"] = [
            {
                "name": (p.get("metadata") or {}).get("name"),
                "nodeName": (p.get("spec") or {}).get("nodeName"),
                "status": p.get("status"),
            }
            for p in listing(kube.core.list_namespaced_pod, ns)
        ]
        out[f"events {ns}"] = [
            f"{e.get('type')} {(e.get('involvedObject') or {}).get('name')} "
            f"{e.get('reason')}: {e.get('message')}"
            for e in listing(kube.core.list_namespaced_event, ns)
        ]
    return out


def listing(call: Any, *args: Any) -> list[dict[str, Any]]:
    try:
        return raw(call, *args).get("items") or []
    except Exception as exc:  # diagnostics must never hide the failure itself
        return [{"error": f"{type(exc).__name__}: {exc}"}]


def cluster_diagnostics(suite: Suite) -> dict[str, Any]:
    """What every failure carries: the driver's slices and logs."""
    out: dict[str, Any] = {
        "resourceslices": [
            s
            for s in listing(suite.kube.resource.list_resource_slice)
            if (s.get("spec") or {}).get("driver") == suite.profile.driver
        ]
    }
    try:
        for node, text in suite.provider.driver_logs(tail=80).items():
            out[f"driver log {node}"] = text
    except Exception as exc:
        out["driver logs"] = f"unavailable: {type(exc).__name__}: {exc}"
    return out
