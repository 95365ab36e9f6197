"""Preflight: is there anything to test, and is the cluster able to express sharing at all?

Fatal findings (no DRA API) stop the run with one sentence. Other findings are recorded: the
publish capability reports them as failures, and the scenarios that need a shareable GPU skip with
the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from conformance.inventory import Gpu, driver_slices, gpus_from_slices, slice_node
from conformance.kube import Kube, api_message, get_or_none, items, raw
from conformance.observe import WaitTimeout, wait_for
from conformance.profiles import DriverProfile

PROBE_DRIVER = "probe.conformance.gpu-share.dev"


class FatalPreflight(RuntimeError):
    """The run cannot go on; the message is the one sentence the user sees."""


@dataclass
class PreflightResult:
    gate_on: bool | None = None  # None: could not tell
    gate_detail: str = ""
    gpus: list[Gpu] = field(default_factory=list)
    nodes_without_slices: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # why sharing cannot be tested
    busy: list[str] = field(default_factory=list)  # GPUs holding allocations at start
    share_capacities: tuple[str, ...] = ()  # every capacity a sharer asks for (profile)

    @property
    def shareable_gpus(self) -> list[Gpu]:
        return [
            g
            for g in self.gpus
            if g.shareable
            and g.capacity is not None
            and all(c in g.capacities for c in self.share_capacities)
        ]

    def skip_reason(self) -> str | None:
        if self.problems:
            return "preflight failed: " + "; ".join(self.problems)
        if not self.shareable_gpus:
            return "preflight: the driver published no shareable GPU with the profile's capacity"
        return None


def check_dra_api(kube: Kube) -> None:
    try:
        groups = raw(kube.apis.get_api_versions)
    except ApiException as exc:
        raise FatalPreflight(
            f"the cluster's API discovery failed ({exc.status} {api_message(exc)}); check "
            "that the kubeconfig points at a working Kubernetes API server."
        ) from exc
    for group in groups.get("groups") or ():
        if group.get("name") == "resource.k8s.io":
            versions = {v.get("version") for v in group.get("versions") or ()}
            if "v1" in versions:
                return
            raise FatalPreflight(
                f"the cluster serves resource.k8s.io only as {sorted(versions)}, not v1; use Kubernetes "
                "1.34 or later (consumable capacity needs resource.k8s.io/v1)."
            )
    raise FatalPreflight(
        "the cluster does not serve the DRA API (resource.k8s.io/v1); use Kubernetes "
        "1.34 or later with DynamicResourceAllocation enabled."
    )


def probe_consumable_capacity(kube: Kube) -> tuple[bool | None, str]:
    """Dry-run a ResourceSlice using the gated fields and see whether the server keeps them."""
    probe: dict[str, Any] = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": "gpu-share-conformance-gate-probe"},
        "spec": {
            "driver": PROBE_DRIVER,
            "nodeName": "gate-probe-node",
            "pool": {"name": "gate-probe", "generation": 1, "resourceSliceCount": 1},
            "devices": [
                {
                    "name": "probe-0",
                    "allowMultipleAllocations": True,
                    "capacity": {
                        "memory": {
                            "value": "1Gi",
                            "requestPolicy": {"default": "1Gi", "validRange": {"min": "1Mi", "step": "1Mi"}},
                        }
                    },
                }
            ],
        },
    }
    try:
        stored = raw(kube.resource.create_resource_slice, probe, dry_run="All")
    except ApiException as exc:
        return None, f"the dry-run probe was refused ({exc.status} {api_message(exc)})"
    finally:
        # A server that ignored dryRun stored the probe: remove it so nothing is left behind.
        if get_or_none(kube.resource.read_resource_slice, probe["metadata"]["name"]) is not None:
            kube.resource.delete_resource_slice(probe["metadata"]["name"])
    dev = ((stored.get("spec") or {}).get("devices") or [{}])[0]
    kept_amm = dev.get("allowMultipleAllocations") is True
    kept_policy = bool(((dev.get("capacity") or {}).get("memory") or {}).get("requestPolicy"))
    if kept_amm and kept_policy:
        return True, (
            "kube-apiserver keeps allowMultipleAllocations and requestPolicy (DRAConsumableCapacity on)"
        )
    return False, (
        "kube-apiserver dropped allowMultipleAllocations/requestPolicy from a ResourceSlice: the "
        "DRAConsumableCapacity feature gate is off in kube-apiserver; enable it (1.34/1.35) "
        "or use 1.36+"
    )


def wait_for_slices(kube: Kube, profile: DriverProfile, nodes: tuple[str, ...], timeout: float) -> list[str]:
    """Wait until every node has a slice of the driver with devices; return the nodes still missing.

    With no nodes given (the provider cannot tell where the driver runs), any node will do."""

    def missing(state: dict[str, dict[str, Any]]) -> list[str]:
        have = {
            slice_node(s)
            for s in driver_slices(list(state.values()), profile.driver)
            if (s.get("spec") or {}).get("devices")
        }
        if not nodes:
            return [] if have else ["(any node)"]
        return [n for n in nodes if n not in have]

    where = ", ".join(nodes) or "any node"
    try:
        wait_for(
            kube.resource.list_resource_slice,
            lambda st: [] if not missing(st) else None,
            timeout=timeout,
            what=f"ResourceSlices of driver {profile.driver} on {where}",
        )
        return []
    except WaitTimeout:
        slices, _ = items(kube.resource.list_resource_slice)
        return missing({s["metadata"]["name"]: s for s in slices})


def allocated_devices(kube: Kube, driver: str) -> dict[tuple[str, str], list[str]]:
    """(pool, device) -> claims ("ns/name") holding an allocation on it, for this driver."""
    claims, _ = items(kube.resource.list_resource_claim_for_all_namespaces)
    out: dict[tuple[str, str], list[str]] = {}
    for c in claims:
        allocation = (c.get("status") or {}).get("allocation") or {}
        for r in (allocation.get("devices") or {}).get("results") or ():
            if r.get("driver") == driver:
                out.setdefault((r.get("pool", ""), r.get("device", "")), []).append(
                    f"{c['metadata'].get('namespace')}/{c['metadata']['name']}"
                )
    return out


def share_request_problem(profile: DriverProfile, gpus: list[Gpu]) -> str | None:
    """A shareRequests name that no published GPU has: the profile does not fit this driver (bad
    input, not a driver failure). One sentence naming the field and what is published."""
    if not gpus:
        return None
    published = sorted({c for g in gpus for c in g.capacities.names()})
    for name in profile.share_requests:
        if name == profile.shared_capacity or any(name in g.capacities for g in gpus):
            continue
        return (
            f"driver profile {profile.source or profile.name}: 'shareRequests.{name}' names a capacity "
            f"that no device of driver {profile.driver} publishes (published: "
            f"{', '.join(published) or 'none'}); fix the name or remove it."
        )
    return None


def run_preflight(
    kube: Kube,
    profile: DriverProfile,
    nodes: tuple[str, ...],
    slice_timeout: float,
    own_namespace_prefix: str,
) -> PreflightResult:
    result = PreflightResult(share_capacities=tuple(profile.share_requests))
    check_dra_api(kube)
    result.gate_on, result.gate_detail = probe_consumable_capacity(kube)
    # With the gate off the diagnosis is known already: a driver that checks what the server stored
    # never publishes, so waiting out the bound would only delay the verdict.
    wait = slice_timeout if result.gate_on is not False else 0.0
    result.nodes_without_slices = wait_for_slices(kube, profile, nodes, wait)
    slices, _ = items(kube.resource.list_resource_slice)
    result.gpus = gpus_from_slices(slices, profile)
    if result.nodes_without_slices:
        result.problems.append(
            f"no ResourceSlice of driver {profile.driver} on node(s) "
            f"{', '.join(result.nodes_without_slices)} within {slice_timeout:.0f}s"
        )
    if result.gate_on is False:
        result.problems.append(result.gate_detail)
    elif result.gpus and not any(g.shareable for g in result.gpus):
        result.problems.append(
            "no published GPU has allowMultipleAllocations: true (the driver does not offer sharing)"
        )
    if result.gpus and not any(g.capacity for g in result.gpus):
        result.problems.append(f"no published GPU has the capacity {profile.capacity!r}")
    held = allocated_devices(kube, profile.driver)
    for gpu in result.gpus:
        holders = [c for c in held.get((gpu.pool, gpu.device), []) if not c.startswith(own_namespace_prefix)]
        if holders:
            result.busy.append(f"{gpu.label} held by {', '.join(holders)}")
    return result
