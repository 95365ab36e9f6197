"""A kube-scheduler for the sim: node filters plus the DynamicResources plugin (issue 3, item 2).

One thread, fed by a store watch. Pending pods sit in an active queue, a backoff heap or the
unschedulable set; events that could help (a claim deallocated or deleted, a slice, class, node or
namespace change, a pod deleted) move unschedulable pods back, respecting backoff. Claims are
"assumed" in the incremental allocated state the moment they are allocated, so the next pod never
sees stale capacity, and rolled back if any write fails.

Deviations from kube-scheduler (documented in docs/notes/scheduler.md): the first feasible node in
a rotating order wins (no scoring); there is no preemption, so the PostFilter text is fixed.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

from drakit.names import CLAIMS, CLASSES, SLICES
from drakit.timeutil import now_rfc3339
from sim.allocator import AllocatorError, Features, SelectorCache, allocate, claim_ref, pool_devices
from sim.allocator_pools import gather_pools, node_selector_matches
from sim.allocator_state import AllocatedState
from sim.apiserver.errors import ApiError
from sim.apiserver.store import Store
from sim.controller import (
    DELETE_PROTECTION,
    NAMESPACES,
    NODES,
    PODS,
    Key,
    WatchLoop,
    key_of,
    record_event,
)

log = logging.getLogger(__name__)

SCHEDULER_NAME = "default-scheduler"
ADMIN_LABEL = "resource.kubernetes.io/admin-access"
MAX_RESERVED_FOR = 256
REASON_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
REASON_UNSCHEDULABLE_NODE = "node(s) were unschedulable"
REASON_CLAIM_NOT_ON_NODE = "resourceclaim not available on the node"
UNSCHEDULABLE_FLUSH_S = 300.0  # upstream podMaxInUnschedulablePodsDuration


class _PreFilterFailure(Exception):
    pass


class _Wait(Exception):
    """PreEnqueue: the pod cannot be tried yet (claim not created); it waits without a status."""


def fit_error(
    num_nodes: int, reasons: dict[str, int] | None, prefilter: str = "", has_claims: bool = True
) -> str:
    """kube-scheduler's FitError text (allocator-rules.md section 14) plus the PostFilter text."""
    msg = f"0/{num_nodes} nodes are available:"
    if prefilter:
        msg += f" {prefilter}."
    elif reasons:
        msg += " " + ", ".join(sorted(f"{n} {r}" for r, n in reasons.items())) + "."
    dra = "still not schedulable" if has_claims else "no new claims to deallocate"
    preemption = (
        f"preemption: 0/{num_nodes} nodes are available: {num_nodes} Preemption is not helpful "
        "for scheduling."
    )
    return f"{msg} {dra}, {preemption}"


def _tolerates(tolerations: list[dict[str, Any]], taint: dict[str, Any]) -> bool:
    for t in tolerations:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        op = t.get("operator") or "Equal"
        if op == "Exists":
            if not t.get("key") or t.get("key") == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def node_filter_reason(pod: dict[str, Any], node: dict[str, Any]) -> str | None:
    """The non-DRA filters in kube-scheduler's order; the first failing plugin's reason."""
    spec = node.get("spec") or {}
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    if spec.get("unschedulable") and not _tolerates(
        tolerations, {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
    ):
        return REASON_UNSCHEDULABLE_NODE
    taints = list(spec.get("taints") or [])
    ready = next(
        (c for c in (node.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), None
    )
    if (
        ready is not None
        and ready.get("status") != "True"
        and not any(t.get("key") == "node.kubernetes.io/not-ready" for t in taints)
    ):
        # What the node lifecycle controller would add for a NotReady node.
        taints.append({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"})
    for taint in taints:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not _tolerates(tolerations, taint):
            return f"node(s) had untolerated taint {{{taint.get('key', '')}: {taint.get('value', '')}}}"
    pod_spec = pod.get("spec") or {}
    labels = (node.get("metadata") or {}).get("labels") or {}
    for k, v in (pod_spec.get("nodeSelector") or {}).items():
        if labels.get(k) != v:
            return REASON_AFFINITY
    required = ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if required is not None and not node_selector_matches(required, node):
        return REASON_AFFINITY
    return None


def _schedulable_view(node: dict[str, Any]) -> tuple:
    """What of a node can change a filter's answer: labels, spec (taints, unschedulable), readiness."""
    conditions = (node.get("status") or {}).get("conditions") or []
    ready = [c.get("status") for c in conditions if c.get("type") == "Ready"]
    return (node["metadata"].get("labels"), node.get("spec"), ready)


class Scheduler(WatchLoop):
    name = "scheduler"
    resources = (PODS, NODES, CLAIMS, SLICES, CLASSES, NAMESPACES)

    def __init__(self, store: Store, initial_backoff: float = 1.0, max_backoff: float = 10.0) -> None:
        super().__init__(store)
        cfg = store.config
        self.features = Features(
            consumable_capacity=cfg.gate("DRAConsumableCapacity"),
            prioritized_list=cfg.gate("DRAPrioritizedList"),
            admin_access=cfg.gate("DRAAdminAccess"),
            partitionable_devices=cfg.gate("DRAPartitionableDevices"),
        )
        self.state = AllocatedState(self.features.consumable_capacity)
        self.selector_cache = SelectorCache()
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self._active: deque[Key] = deque()
        self._queued: set[Key] = set()
        self._unschedulable: set[Key] = set()
        self._attempts: dict[str, int] = {}  # pod uid -> failed attempts
        self._not_before: dict[str, float] = {}  # pod uid -> backoff expiry (monotonic)
        self._waiting_for_claim: dict[Key, set[Key]] = {}
        self._node_slices: dict[str, set[Key]] = {}
        self._global_slices: set[Key] = set()
        self._pools_cache: dict[str, tuple[list, list]] = {}
        self._next_node = 0
        self._flush_armed = False
        self.scheduled = 0  # pods bound (for benchmarks and tests)

    # ---- queueing ----
    def _enqueue(self, k: Key) -> None:
        pod = self.cache[PODS].get(k)
        if pod is None or not self._wants(pod):
            return
        self._unschedulable.discard(k)
        if k in self._queued:
            return
        delay = self._not_before.get(pod["metadata"].get("uid", ""), 0.0) - time.monotonic()
        if delay > 0:
            self._unschedulable.add(k)
            self.after(delay, ("backoff", k))
            return
        self._queued.add(k)
        self._active.append(k)

    def _wake_all(self) -> None:
        for k in list(self._unschedulable):
            self._enqueue(k)

    def _wants(self, pod: dict[str, Any]) -> bool:
        spec = pod.get("spec") or {}
        return (
            not spec.get("nodeName")
            and not pod["metadata"].get("deletionTimestamp")
            and (spec.get("schedulerName") or SCHEDULER_NAME) == SCHEDULER_NAME
            and not spec.get("schedulingGates")
            and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        )

    def on_timer(self, item: Any) -> None:
        kind, k = item
        if kind == "backoff" and k in self._unschedulable:
            self._enqueue(k)
        elif kind == "flush":
            self._flush_armed = False
            self._wake_all()

    # ---- cache maintenance ----
    def handle(self, kind: str, resource: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        k = key_of(obj)
        if resource == PODS:
            self._on_pod(kind, k, obj, old)
        elif resource == CLAIMS:
            self._on_claim(kind, k, obj, old)
        elif resource == SLICES:
            self._on_slice(kind, k, obj, old)
        elif resource in (CLASSES, NAMESPACES):
            if (
                kind == "DELETED"
                or old is None
                or old.get("spec") != obj.get("spec")
                or old["metadata"].get("labels") != obj["metadata"].get("labels")
            ):
                self._wake_all()
        elif resource == NODES:
            self._pools_cache.pop(k[1], None)
            if kind != "DELETED" and (old is None or _schedulable_view(old) != _schedulable_view(obj)):
                self._wake_all()  # heartbeats alone change nothing a pod could use

    def _on_pod(self, kind: str, k: Key, pod: dict[str, Any], old: dict[str, Any] | None) -> None:
        uid = pod["metadata"].get("uid", "")
        if kind == "DELETED" or not self._wants(pod):
            self._unschedulable.discard(k)
            self._queued.discard(k)  # stale entries in _active are skipped when popped
            if kind == "DELETED":
                self._attempts.pop(uid, None)
                self._not_before.pop(uid, None)
                if (pod.get("spec") or {}).get("nodeName"):
                    self._wake_all()  # an assigned pod went away (upstream AssignedPodDelete)
            return
        if (
            old is not None
            and old.get("spec") == pod.get("spec")
            and (old.get("status") or {}).get("resourceClaimStatuses")
            == (pod.get("status") or {}).get("resourceClaimStatuses")
            and old["metadata"].get("labels") == pod["metadata"].get("labels")
        ):
            return  # our own condition updates must not requeue the pod
        self._enqueue(k)

    def _on_claim(self, kind: str, k: Key, claim: dict[str, Any], old: dict[str, Any] | None) -> None:
        uid = claim["metadata"].get("uid", "")
        allocation = None if kind == "DELETED" else (claim.get("status") or {}).get("allocation")
        had = old is not None and (old.get("status") or {}).get("allocation") is not None
        self.state.set_claim(uid, allocation)
        for pk in self._waiting_for_claim.pop(k, set()):
            self._enqueue(pk)
        if (had and allocation is None) or kind == "DELETED":
            self._wake_all()  # devices were released

    def _on_slice(self, kind: str, k: Key, s: dict[str, Any], old: dict[str, Any] | None) -> None:
        for obj in (old, s):
            if obj is None:
                continue
            spec = obj.get("spec") or {}
            pool_key = (spec.get("driver", ""), (spec.get("pool") or {}).get("name", ""))
            for cached_node, (cached_pools, _) in list(self._pools_cache.items()):
                # A node whose view of this pool was judged from other nodes' slices depends on it too.
                if any(p.cross_node and (p.driver, p.name) == pool_key for p in cached_pools):
                    self._pools_cache.pop(cached_node, None)
            node = spec.get("nodeName")
            if node:
                self._node_slices.setdefault(node, set()).discard(k)
                self._pools_cache.pop(node, None)
            else:
                self._global_slices.discard(k)
                self._pools_cache.clear()
        if kind != "DELETED":
            node = (s.get("spec") or {}).get("nodeName")
            if node:
                self._node_slices.setdefault(node, set()).add(k)
            else:
                self._global_slices.add(k)
        else:
            self.selector_cache.clear()  # bound memory: entries of deleted slices are never hit again
        self._wake_all()

    def _pools_for(self, node: dict[str, Any]) -> tuple[list, list]:
        name = node["metadata"]["name"]
        hit = self._pools_cache.get(name)
        if hit is None:
            slices = [
                self.cache[SLICES][sk]
                for sk in sorted(self._node_slices.get(name, set()) | self._global_slices)
                if sk in self.cache[SLICES]
            ]
            # Every slice of the cluster, for a pool that looks incomplete from this node.
            pools = gather_pools(
                slices, node, self.features.partitionable_devices, all_slices=self.cache[SLICES].values()
            )
            hit = self._pools_cache[name] = (pools, pool_devices(pools, node))
        return hit

    # ---- the scheduling cycle ----
    def idle(self) -> float | None:
        while self._active:
            k = self._active.popleft()
            if k not in self._queued:
                continue
            self._queued.discard(k)
            try:
                self.schedule_one(k)
            except Exception as exc:  # a bug or an API failure must not lose the pod or stop the loop
                log.exception("scheduler: attempt for %s/%s failed", *k)
                self.errors.append(f"schedule {k}: {exc!r}")
                pod = self.cache[PODS].get(k)
                if pod is not None:
                    self._backoff(pod, retry=True)
            return 0  # drain the events our writes caused before the next pod
        if self._unschedulable and not self._flush_armed:
            self._flush_armed = True
            self.after(UNSCHEDULABLE_FLUSH_S, ("flush", None))
        return None

    def _pod_claims(self, pod: dict[str, Any]) -> list[dict[str, Any]]:
        ns = pod["metadata"].get("namespace") or ""
        statuses = {
            s.get("name"): s.get("resourceClaimName")
            for s in (pod.get("status") or {}).get("resourceClaimStatuses") or []
        }
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        for entry in (pod.get("spec") or {}).get("resourceClaims") or []:
            name = entry.get("resourceClaimName")
            if not name and entry.get("resourceClaimTemplateName"):
                name = statuses.get(entry.get("name"))
                if not name:
                    raise _Wait(f"pod {ns}/{pod['metadata']['name']}: ResourceClaim not created yet")
            if not name or name in seen:
                continue
            seen.add(name)
            claim = self.cache[CLAIMS].get((ns, name))
            if claim is None:
                self._waiting_for_claim.setdefault((ns, name), set()).add(key_of(pod))
                raise _Wait(f'resourceclaim "{name}" not found')
            if claim["metadata"].get("deletionTimestamp"):
                self._waiting_for_claim.setdefault((ns, name), set()).add(key_of(pod))
                raise _Wait(f'resourceclaim "{name}" is being deleted')
            if entry.get("resourceClaimTemplateName"):
                owners = [
                    r.get("uid")
                    for r in claim["metadata"].get("ownerReferences") or []
                    if r.get("controller")
                ]
                if pod["metadata"].get("uid") not in owners:
                    raise _PreFilterFailure(
                        f"ResourceClaim {name} was not created for pod "
                        f"{ns}/{pod['metadata']['name']} (pod is not owner)"
                    )
            out.append(claim)
        return out

    def _prefilter(self, pod: dict[str, Any], claims: list[dict[str, Any]]) -> None:
        uid = pod["metadata"].get("uid")
        classes = self.cache[CLASSES]
        for claim in claims:
            status = claim.get("status") or {}
            reserved = status.get("reservedFor") or []
            if status.get("allocation") is not None:
                if not any(r.get("uid") == uid for r in reserved) and len(reserved) >= MAX_RESERVED_FOR:
                    raise _PreFilterFailure("resourceclaim in use")
                continue
            ref = claim_ref(claim)
            ns_labels = (
                (self.cache[NAMESPACES].get(("", claim["metadata"].get("namespace", ""))) or {}).get(
                    "metadata"
                )
                or {}
            ).get("labels") or {}
            for request in ((claim.get("spec") or {}).get("devices") or {}).get("requests") or []:
                name = request.get("name", "")
                if request.get("firstAvailable"):
                    if not self.features.prioritized_list:
                        raise _PreFilterFailure(
                            f"resource claim {ref}, request {name}: has subrequests, but "
                            "the DRAPrioritizedList feature is disabled"
                        )
                    specs = [(f"{name}/{s.get('name')}", s) for s in request["firstAvailable"]]
                else:
                    specs = [(name, request.get("exactly") or {})]
                for label, spec in specs:
                    cls = spec.get("deviceClassName", "")
                    if ("", cls) not in classes:
                        raise _PreFilterFailure(f"request {label}: device class {cls} does not exist")
                    if spec.get("adminAccess") and ns_labels.get(ADMIN_LABEL) != "true":
                        raise _PreFilterFailure(
                            f"claim {ref}, request {label}: admin access to devices requires the "
                            f"`{ADMIN_LABEL}: true` label on the containing namespace"
                        )

    def schedule_one(self, k: Key) -> None:
        pod = self.cache[PODS].get(k)
        if pod is None or not self._wants(pod):
            return
        nodes = [self.cache[NODES][nk] for nk in sorted(self.cache[NODES])]
        try:
            claims = self._pod_claims(pod)
        except _Wait:
            return  # woken when the claim shows up
        except _PreFilterFailure as exc:
            self._fail(pod, fit_error(len(nodes), None, str(exc)))
            return
        if not nodes:
            self._fail(pod, "no nodes available to schedule pods", reason="SchedulerError")
            return
        try:
            self._prefilter(pod, claims)
        except _PreFilterFailure as exc:
            self._fail(pod, fit_error(len(nodes), None, str(exc), bool(claims)))
            return
        pending = [c for c in claims if (c.get("status") or {}).get("allocation") is None]
        allocated = [c for c in claims if (c.get("status") or {}).get("allocation") is not None]
        classes = {ck[1]: c for ck, c in self.cache[CLASSES].items()}
        reasons: dict[str, int] = {}
        n = len(nodes)
        start = self._next_node % n
        for i in range(n):
            node = nodes[(start + i) % n]
            reason = node_filter_reason(pod, node)
            if reason is None:
                for c in allocated:
                    selector = c["status"]["allocation"].get("nodeSelector")
                    if selector is not None and not node_selector_matches(selector, node):
                        reason = REASON_CLAIM_NOT_ON_NODE
                        break
            allocations: list[dict[str, Any]] = []
            if reason is None and pending:
                pools, devices = self._pools_for(node)
                try:
                    outcome = allocate(
                        pending,
                        node,
                        [],
                        classes,
                        self.state,
                        self.features,
                        self.selector_cache,
                        pools=pools,
                        devices=devices,
                    )
                except AllocatorError as exc:
                    # A fatal allocator error aborts the attempt (Filter returns an Error status).
                    self._fail(
                        pod, f'running "DynamicResources" filter plugin: {exc}', reason="SchedulerError"
                    )
                    return
                if outcome.allocations is None:
                    reason = outcome.reason
                else:
                    allocations = outcome.allocations
            if reason is not None:
                reasons[reason] = reasons.get(reason, 0) + 1
                continue
            self._next_node = (start + i + 1) % n
            self._commit(
                pod,
                node,
                claims,
                dict(zip((c["metadata"]["uid"] for c in pending), allocations, strict=True)),
            )
            return
        self._fail(pod, fit_error(n, reasons, has_claims=bool(claims)))

    # ---- outcomes ----
    def _commit(
        self,
        pod: dict[str, Any],
        node: dict[str, Any],
        claims: list[dict[str, Any]],
        allocations: dict[str, dict[str, Any]],
    ) -> None:
        node_name = node["metadata"]["name"]
        md = pod["metadata"]
        consumer = {"resource": "pods", "name": md["name"], "uid": md["uid"]}
        for uid, allocation in allocations.items():
            self.state.set_claim(uid, allocation)  # assume: the next pod must see this at once
        written: list[tuple[dict[str, Any], bool]] = []
        try:
            for claim in claims:
                uid = claim["metadata"]["uid"]
                allocation = allocations.get(uid)
                status = claim.get("status") or {}
                if any(r.get("uid") == md["uid"] for r in status.get("reservedFor") or []):
                    continue
                current = claim
                finalizers = current["metadata"].get("finalizers") or []
                if allocation is not None and DELETE_PROTECTION not in finalizers:
                    current = self.store.update(
                        CLAIMS,
                        {
                            **current,
                            "metadata": {
                                **current["metadata"],
                                "finalizers": [*finalizers, DELETE_PROTECTION],
                            },
                        },
                    )
                new_status = dict(current.get("status") or {})
                if allocation is not None:
                    new_status["allocation"] = allocation
                new_status["reservedFor"] = [*(new_status.get("reservedFor") or []), consumer]
                self.store.update(CLAIMS, {**current, "status": new_status}, subresource="status")
                written.append((claim, allocation is not None))
            self.store.bind(md["name"], md.get("namespace") or "", node_name)
        except ApiError as exc:
            self._unreserve(md, written, allocations)
            log.info(
                "scheduler: binding %s/%s to %s failed: %s", md.get("namespace"), md["name"], node_name, exc
            )
            self._backoff(pod, retry=True)
            return
        self.scheduled += 1
        self._attempts.pop(md["uid"], None)
        self._not_before.pop(md["uid"], None)
        record_event(
            self.store,
            pod,
            "Normal",
            "Scheduled",
            f"Successfully assigned {md.get('namespace')}/{md['name']} to {node_name}",
        )

    def _unreserve(
        self,
        md: dict[str, Any],
        written: list[tuple[dict[str, Any], bool]],
        allocations: dict[str, dict[str, Any]],
    ) -> None:
        """Undo what this attempt wrote, so nothing half-applied is left."""
        for uid in allocations:
            cached = next((c for c in self.cache[CLAIMS].values() if c["metadata"].get("uid") == uid), None)
            self.state.set_claim(uid, ((cached or {}).get("status") or {}).get("allocation"))
        for claim, allocated_here in written:
            for _ in range(5):  # conflicts come from concurrent writers; re-read and retry
                try:
                    fresh = self.store.get(CLAIMS, claim["metadata"]["name"], claim["metadata"]["namespace"])
                    status = fresh.get("status") or {}
                    status["reservedFor"] = [
                        r for r in status.get("reservedFor") or [] if r.get("uid") != md["uid"]
                    ]
                    if not status["reservedFor"]:
                        del status["reservedFor"]
                        if allocated_here:
                            status.pop("allocation", None)
                    fresh["status"] = status
                    self.store.update(CLAIMS, fresh, subresource="status")
                    break
                except ApiError as exc:
                    if exc.code == 404:
                        break
                    if exc.code != 409:
                        raise

    def _backoff(self, pod: dict[str, Any], retry: bool) -> None:
        """Count a failed attempt. With `retry` (errors) the pod is tried again when the backoff
        expires; otherwise (Unschedulable) it waits for an event that could help, and the backoff
        only delays that retry, as upstream's unschedulable pool does."""
        uid = pod["metadata"]["uid"]
        attempts = self._attempts.get(uid, 0) + 1
        self._attempts[uid] = attempts
        delay = min(self.initial_backoff * 2 ** (attempts - 1), self.max_backoff)
        self._not_before[uid] = time.monotonic() + delay
        k = key_of(pod)
        self._unschedulable.add(k)
        if retry:
            self.after(delay, ("backoff", k))

    def _fail(self, pod: dict[str, Any], message: str, reason: str = "Unschedulable") -> None:
        self._backoff(pod, retry=reason != "Unschedulable")
        record_event(self.store, pod, "Warning", "FailedScheduling", message)
        conditions = list((pod.get("status") or {}).get("conditions") or [])
        current = next((c for c in conditions if c.get("type") == "PodScheduled"), None)
        if (
            current
            and current.get("status") == "False"
            and current.get("reason") == reason
            and current.get("message") == message
        ):
            return
        cond = {
            "type": "PodScheduled",
            "status": "False",
            "reason": reason,
            "message": message,
            "lastProbeTime": None,
            "lastTransitionTime": current.get("lastTransitionTime")
            if current and current.get("status") == "False"
            else now_rfc3339(),
        }
        conditions = [c for c in conditions if c.get("type") != "PodScheduled"] + [cond]
        try:
            self.store.patch(
                PODS,
                pod["metadata"]["name"],
                {
                    "metadata": {"resourceVersion": pod["metadata"]["resourceVersion"]},
                    "status": {"conditions": conditions},
                },
                "application/merge-patch+json",
                pod["metadata"].get("namespace"),
                subresource="status",
            )
        except ApiError as exc:
            if exc.code not in (404, 409):
                raise


def add_control_plane(cluster: Any, **scheduler_opts: Any) -> tuple[Any, Scheduler]:
    """Add the claim controller and the scheduler to a `sim.cluster.Cluster` (python -m sim does this;
    in-process tests pass it as `running_sim(configure=add_control_plane)`)."""
    from sim.controller import ClaimController

    controller = cluster.add(ClaimController(cluster.store))
    scheduler = cluster.add(Scheduler(cluster.store, **scheduler_opts))
    return controller, scheduler
