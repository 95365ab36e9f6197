"""The kubelet's DRA manager: which claims a pod uses, preparing them once per node, CDI ids per container."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from drakit.draclient import ClaimRef, DRACallError, PreparedDevice
from drakit.names import CLAIMS
from sim.kubelet.containers import ContainerConfigError
from sim.kubelet.registration import PluginManager

log = logging.getLogger(__name__)


class PrepareError(Exception):
    """Why the pod's dynamic resources are not ready; the text follows the kubelet's wording."""


@dataclass
class PodClaim:
    pod_claim_name: str  # the name in pod.spec.resourceClaims
    ref: ClaimRef
    drivers: tuple[str, ...]
    requests: tuple[str, ...]  # request names in the claim spec


@dataclass
class PreparedClaim:
    ref: ClaimRef
    driver: str
    devices: list[PreparedDevice]
    pods: set[str] = field(default_factory=set)


def pod_claims(store: Any, pod: dict[str, Any]) -> list[PodClaim]:
    """The allocated claims of ``pod``, checked as the kubelet checks them before prepare."""
    meta, spec = pod["metadata"], pod.get("spec", {})
    ns = meta.get("namespace", "default")
    claim_statuses = pod.get("status", {}).get("resourceClaimStatuses") or []
    statuses = {s["name"]: s.get("resourceClaimName") for s in claim_statuses}
    out: list[PodClaim] = []
    for entry in spec.get("resourceClaims") or []:
        pname = entry["name"]
        if entry.get("resourceClaimName"):
            claim_name = entry["resourceClaimName"]
        elif pname in statuses:
            claim_name = statuses[pname]
            if claim_name is None:
                continue  # the controller decided no claim is needed
        else:
            raise PrepareError(
                f"waiting for the ResourceClaim of pod claim {pname!r} to be created "
                "(not yet in status.resourceClaimStatuses)"
            )
        try:
            claim = store.get(CLAIMS, claim_name, namespace=ns)
        except Exception as e:
            if getattr(e, "code", None) == 404:
                raise PrepareError(
                    f"fetch ResourceClaim {claim_name}: resourceclaims.resource.k8s.io "
                    f'"{claim_name}" not found'
                ) from e
            raise
        allocation = (claim.get("status") or {}).get("allocation")
        if not allocation:
            raise PrepareError(f"ResourceClaim {claim_name} is not allocated")
        reserved = {r.get("uid") for r in (claim.get("status") or {}).get("reservedFor") or []}
        if meta["uid"] not in reserved:
            raise PrepareError(
                f"pod {meta['name']} ({meta['uid']}) is not allowed to use ResourceClaim "
                f"{claim_name} ({claim['metadata']['uid']})"
            )
        drivers = tuple(sorted({r["driver"] for r in allocation.get("devices", {}).get("results") or []}))
        requests = tuple(r["name"] for r in claim.get("spec", {}).get("devices", {}).get("requests") or [])
        out.append(PodClaim(pname, ClaimRef(ns, claim["metadata"]["uid"], claim_name), drivers, requests))
    return out


class ClaimCache:
    """Claims prepared on this node, shared by the pods that use them (the kubelet's claimInfo cache)."""

    def __init__(self, plugins: PluginManager):
        self._plugins = plugins
        self._lock = threading.Lock()
        self._prepared: dict[str, dict[str, PreparedClaim]] = {}  # claim uid -> driver -> prepared

    def prepared(self, claim_uid: str) -> list[PreparedDevice]:
        with self._lock:
            return [d for p in self._prepared.get(claim_uid, {}).values() for d in p.devices]

    def prepare(self, pod_uid: str, claims: list[PodClaim]) -> None:
        """NodePrepareResources once per driver with all of the pod's claims for it that are not prepared."""
        by_driver: dict[str, list[ClaimRef]] = {}
        with self._lock:
            for c in claims:
                for driver in c.drivers:
                    done = self._prepared.get(c.ref.uid, {}).get(driver)
                    if done is not None:
                        done.pods.add(pod_uid)
                    else:
                        by_driver.setdefault(driver, []).append(c.ref)
        for driver, refs in sorted(by_driver.items()):
            client = self._plugins.client(driver)
            if client is None:
                raise PrepareError(f"DRA driver {driver} is not registered")
            try:
                results = client.prepare(refs)
            except DRACallError as e:
                raise PrepareError(f"NodePrepareResources: {e}") from e
            # Worded as the kubelet's DRA manager words it (pkg/kubelet/cm/dra/manager.go): the first
            # claim the driver refused, else how many it left unanswered.
            failures, skipped = [], 0
            for ref in refs:
                result = results.get(ref.uid)
                if result is None:
                    skipped += 1
                elif result.error:
                    failures.append(
                        f"NodePrepareResources failed for ResourceClaim {ref.name}: {result.error}"
                    )
                else:
                    with self._lock:
                        # Referenced at once, so that a pod that fails later still unprepares it.
                        prepared = PreparedClaim(ref, driver, result.devices, pods={pod_uid})
                        self._prepared.setdefault(ref.uid, {})[driver] = prepared
            if failures:
                raise PrepareError(failures[0])
            if skipped:
                raise PrepareError(f"NodePrepareResources skipped {skipped} ResourceClaims")

    def release(self, pod_uid: str) -> None:
        """Drop the pod's references and NodeUnprepareResources the claims no pod on this node uses."""
        by_driver: dict[str, list[ClaimRef]] = {}
        with self._lock:
            for per_driver in self._prepared.values():
                for driver, p in per_driver.items():
                    if pod_uid in p.pods:
                        p.pods.discard(pod_uid)
                        if not p.pods:
                            by_driver.setdefault(driver, []).append(p.ref)
        errors = []
        for driver, refs in sorted(by_driver.items()):
            client = self._plugins.client(driver)
            if client is None:
                errors.append(f"DRA driver {driver} is not registered")
                continue
            try:
                results = client.unprepare(refs)
            except DRACallError as e:
                errors.append(f"NodeUnprepareResources failed: {e}")
                continue
            for ref in refs:
                err = results.get(ref.uid)
                if err is None or err:
                    errors.append(
                        f"NodeUnprepareResources failed for ResourceClaim {ref.name}: {err or 'no response'}"
                    )
                    continue
                with self._lock:
                    per_driver = self._prepared.get(ref.uid, {})
                    if not per_driver.get(driver, PreparedClaim(ref, driver, [])).pods:
                        per_driver.pop(driver, None)
                    if not per_driver:
                        self._prepared.pop(ref.uid, None)
        if errors:
            with self._lock:  # keep the reference so that a retry unprepares again
                for per_driver in self._prepared.values():
                    for p in per_driver.values():
                        if not p.pods:
                            p.pods.add(pod_uid)
            raise PrepareError("; ".join(errors))


def container_cdi_ids(
    pod: dict[str, Any], container: dict[str, Any], claims: list[PodClaim], cache: ClaimCache
) -> list[str]:
    """CDI ids for one container, filtered by ``resources.claims[].request`` as the kubelet does."""
    by_name = {c.pod_claim_name: c for c in claims}
    declared = {e["name"] for e in pod.get("spec", {}).get("resourceClaims") or []}
    ids: list[str] = []
    for i, use in enumerate((container.get("resources") or {}).get("claims") or []):
        where = f"spec.containers[{container['name']}].resources.claims[{i}]"
        name = use.get("name", "")
        if name not in declared:
            raise ContainerConfigError(
                f"{where}.name: {name!r} is not one of the pod's resourceClaims {sorted(declared)}"
            )
        claim = by_name.get(name)
        if claim is None:
            continue  # the controller decided no claim is needed for this entry
        request = use.get("request")
        if request and request not in claim.requests:
            raise ContainerConfigError(
                f"{where}.request: ResourceClaim {claim.ref.name} has no request "
                f"{request!r} (requests: {list(claim.requests)})"
            )
        for d in cache.prepared(claim.ref.uid):
            if not request or not d.request_names or request in d.request_names:
                ids.extend(i for i in d.cdi_device_ids if i not in ids)
    return ids
