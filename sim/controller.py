"""The resourceclaim controller (as kube-controller-manager's) and the watch loop it shares with the
scheduler.

Controller duties (issue 3, item 1):
* a pod entry with `resourceClaimTemplateName` gets a claim: generateName `<pod>-<entry>-`, an owner
  reference to the pod (controller=true), the `resource.kubernetes.io/pod-claim-name` annotation;
  the name goes into `pod.status.resourceClaimStatuses`;
* finished or deleted pods leave `status.reservedFor`; a claim whose last consumer left is deallocated
  (allocation cleared, delete-protection finalizer removed), as upstream does only on that transition;
* generated claims are deleted once their pod is done or gone (the store's GC also does it on pod
  removal; doing it here covers pods that finish without being deleted).
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
import weakref
from typing import Any

from drakit.names import CLAIMS, TEMPLATES
from drakit.timeutil import now_rfc3339
from sim.apiserver.errors import ApiError
from sim.apiserver.store import Store

log = logging.getLogger(__name__)

PODS = "pods"
NODES = "nodes"
NAMESPACES = "namespaces"
EVENTS = "events"
POD_CLAIM_ANNOTATION = "resource.kubernetes.io/pod-claim-name"
DELETE_PROTECTION = "resource.kubernetes.io/delete-protection"

Key = tuple[str, str]  # (namespace, name)


def key_of(obj: dict[str, Any]) -> Key:
    md = obj["metadata"]
    return (md.get("namespace") or "", md["name"])


def pod_done(pod: dict[str, Any]) -> bool:
    """Upstream `isPodDone`: terminal phase, or deleted before it ever reached a node."""
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed"):
        return True
    return bool(pod["metadata"].get("deletionTimestamp")) and not (pod.get("spec") or {}).get("nodeName")


def owning_pod(claim: dict[str, Any]) -> tuple[str, str] | None:
    for ref in claim["metadata"].get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == "Pod" and ref.get("apiVersion") == "v1":
            return ref.get("name", ""), ref.get("uid", "")
    return None


class WatchLoop:
    """A thread fed by one store watch: keeps a cache of the watched resources (objects as the store
    holds them; never mutated here), runs `handle()` per event and due timers, and blocks on the
    watch when idle so an idle loop uses no CPU."""

    name = "watchloop"
    resources: tuple[str, ...] = ()

    def __init__(self, store: Store) -> None:
        self.store = store
        self.cache: dict[str, dict[Key, dict[str, Any]]] = {r: {} for r in self.resources}
        self._timers: list[tuple[float, int, Any]] = []
        self._seq = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch = None
        self.synced = threading.Event()
        self.errors: list[str] = []
        self._parked = False  # blocked on the watch with nothing due (see wait_idle)
        self._park_cond = threading.Condition()
        self.wakeups = 0  # loop iterations that found work or a timer (an idle loop adds none)

    # -- lifecycle --
    def start(self) -> None:
        # The initial ADDED events are queued before any live event, and the loop drains the queue
        # before doing work, so the first idle() already sees the whole current state.
        self._watch = self.store.watch(list(self.resources), send_initial=True)
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.close()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"{self.name} thread did not stop within {timeout}s")

    def __enter__(self) -> WatchLoop:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def busy(self) -> bool:
        """Work is queued or due soon: undelivered events, or a timer other than long housekeeping."""
        watch = self._watch
        pending = watch is not None and watch._queue.qsize() > 0  # the Watch has no public "pending" call
        soon = any(when - time.monotonic() < 60 for when, _, _ in self._timers)
        return not self._parked or pending or soon

    def wait_idle(self, timeout: float) -> None:
        """Block until the loop is parked with nothing to do (for tests and benchmarks)."""
        deadline = time.monotonic() + timeout
        with self._park_cond:
            while self.busy():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{self.name} still busy after {timeout}s "
                        f"(parked={self._parked}, timers={len(self._timers)})"
                    )
                self._park_cond.wait(left)  # every park notifies, so each change is seen

    # -- timers --
    def after(self, delay: float, item: Any) -> None:
        self._seq += 1
        heapq.heappush(self._timers, (time.monotonic() + delay, self._seq, item))

    # -- hooks --
    def handle(self, kind: str, resource: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        raise NotImplementedError

    def on_timer(self, item: Any) -> None:
        raise NotImplementedError

    def idle(self) -> float | None:
        """Work to do once the event queue is drained; returns the seconds until more work (None = none)."""
        return None

    # -- loop --
    def _apply(self, ev: Any) -> None:
        kind, resource, obj = ev
        bucket = self.cache[resource]
        k = key_of(obj)
        old = bucket.get(k)
        if kind == "DELETED":
            bucket.pop(k, None)
        else:
            bucket[k] = obj
        try:
            self.handle(kind, resource, obj, old)
        except Exception as exc:  # one bad object must never stop the loop
            log.exception("%s: handling %s %s %s failed", self.name, kind, resource, k)
            self.errors.append(f"{kind} {resource} {k}: {exc!r}")

    def _run(self) -> None:
        watch = self._watch
        assert watch is not None
        while not self._stop.is_set():
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                _, _, item = heapq.heappop(self._timers)
                try:
                    self.on_timer(item)
                except Exception as exc:
                    log.exception("%s: timer %r failed", self.name, item)
                    self.errors.append(f"timer {item!r}: {exc!r}")
            # Drain what is queued before doing work, so decisions see the newest state.
            ev = watch.get_raw(0)
            if ev is not None:
                self._apply(ev)
                continue
            if watch.closed:
                return
            self.synced.set()
            try:
                more = self.idle()
            except Exception as exc:
                log.exception("%s: idle work failed", self.name)
                self.errors.append(f"idle: {exc!r}")
                more = None
            if more == 0:
                continue
            deadlines = [
                d
                for d in (more, (self._timers[0][0] - time.monotonic()) if self._timers else None)
                if d is not None
            ]
            with self._park_cond:
                self._parked = True
                self._park_cond.notify_all()
            # Block on the watch: wakes on the next event, the next timer, or close().
            ev = watch.get_raw(max(0.0, min(deadlines)) if deadlines else None)
            with self._park_cond:
                self._parked = False
            self.wakeups += 1
            if ev is not None:
                self._apply(ev)


class ClaimController(WatchLoop):
    name = "resourceclaim-controller"
    resources = (PODS, CLAIMS, TEMPLATES)
    retry_delay = 0.2

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self._dirty_pods: set[Key] = set()
        self._dirty_claims: set[Key] = set()
        self._claims_by_pod_uid: dict[str, set[Key]] = {}
        self._claims_by_reserved_uid: dict[str, set[Key]] = {}
        self._pods_by_template: dict[Key, set[Key]] = {}

    # -- indexes --
    def _index_claim(self, claim: dict[str, Any] | None, add: bool) -> None:
        if claim is None:
            return
        k = key_of(claim)
        owner = owning_pod(claim)
        uids = [owner[1]] if owner else []
        for uid in uids:
            bucket = self._claims_by_pod_uid.setdefault(uid, set())
            bucket.add(k) if add else bucket.discard(k)
        for ref in (claim.get("status") or {}).get("reservedFor") or []:
            bucket = self._claims_by_reserved_uid.setdefault(ref.get("uid", ""), set())
            bucket.add(k) if add else bucket.discard(k)

    def handle(self, kind: str, resource: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        k = key_of(obj)
        if resource == CLAIMS:
            self._index_claim(old, add=False)
            if kind != "DELETED":
                self._index_claim(obj, add=True)
            self._dirty_claims.add(k)
            owner = owning_pod(obj)
            if owner:
                self._dirty_pods.add((k[0], owner[0]))
        elif resource == PODS:
            self._dirty_pods.add(k)
            uid = obj["metadata"].get("uid", "")
            for ck in self._claims_by_reserved_uid.get(uid, set()) | self._claims_by_pod_uid.get(uid, set()):
                self._dirty_claims.add(ck)
            for entry in (obj.get("spec") or {}).get("resourceClaims") or []:
                t = entry.get("resourceClaimTemplateName")
                if t:
                    self._pods_by_template.setdefault((k[0], t), set()).add(k)
        elif resource == TEMPLATES:
            self._dirty_pods |= self._pods_by_template.get(k, set())

    def on_timer(self, item: Any) -> None:
        kind, k = item
        (self._dirty_pods if kind == "pod" else self._dirty_claims).add(k)

    def idle(self) -> float | None:
        while self._dirty_pods or self._dirty_claims:
            if self._dirty_pods:
                k = self._dirty_pods.pop()
                self._guarded("pod", k, self.sync_pod)
            else:
                k = self._dirty_claims.pop()
                self._guarded("claim", k, self.sync_claim)
        return None

    def _guarded(self, kind: str, k: Key, fn: Any) -> None:
        try:
            fn(k)
        except ApiError as exc:
            if exc.code in (404, 409):
                self.after(self.retry_delay, (kind, k))  # the newer version is on its way to us
            else:
                self.errors.append(f"sync {kind} {k}: {exc}")
                self.after(self.retry_delay * 10, (kind, k))
        except Exception as exc:  # keep the key: retry later rather than forget it
            log.exception("%s: sync %s %s failed", self.name, kind, k)
            self.errors.append(f"sync {kind} {k}: {exc!r}")
            self.after(self.retry_delay * 10, (kind, k))

    # -- pods: templates -> claims --
    def sync_pod(self, k: Key) -> None:
        pod = self.cache[PODS].get(k)
        if pod is None or pod["metadata"].get("deletionTimestamp") or pod_done(pod):
            return
        entries = [
            e
            for e in (pod.get("spec") or {}).get("resourceClaims") or []
            if e.get("resourceClaimTemplateName")
        ]
        if not entries:
            return
        statuses = {s.get("name"): s for s in (pod.get("status") or {}).get("resourceClaimStatuses") or []}
        new_statuses = dict(statuses)
        for entry in entries:
            if entry["name"] in statuses:
                continue
            claim = self._existing_claim(pod, entry["name"]) or self._create_claim(pod, entry)
            if claim is None:
                continue
            new_statuses[entry["name"]] = {
                "name": entry["name"],
                "resourceClaimName": claim["metadata"]["name"],
            }
        if new_statuses != statuses:
            order = [e["name"] for e in (pod.get("spec") or {}).get("resourceClaims") or []]
            ordered = [new_statuses[n] for n in order if n in new_statuses]
            self.store.patch(
                PODS,
                k[1],
                {
                    "metadata": {"resourceVersion": pod["metadata"]["resourceVersion"]},
                    "status": {"resourceClaimStatuses": ordered},
                },
                "application/merge-patch+json",
                k[0],
                subresource="status",
            )

    def _existing_claim(self, pod: dict[str, Any], entry: str) -> dict[str, Any] | None:
        for ck in self._claims_by_pod_uid.get(pod["metadata"]["uid"], ()):
            claim = self.cache[CLAIMS].get(ck)
            if claim and (claim["metadata"].get("annotations") or {}).get(POD_CLAIM_ANNOTATION) == entry:
                return claim
        return None

    def _create_claim(self, pod: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any] | None:
        ns, pod_name = key_of(pod)
        template = self.cache[TEMPLATES].get((ns, entry["resourceClaimTemplateName"]))
        if template is None:
            record_event(
                self.store,
                pod,
                "Warning",
                "FailedResourceClaimCreation",
                f"PodResourceClaim {entry['name']}: resource claim template "
                f'"{entry["resourceClaimTemplateName"]}": resourceclaimtemplate.resource.k8s.io '
                f'"{entry["resourceClaimTemplateName"]}" not found',
                component="resource_claim",
            )
            return None  # retried when the template appears
        tmeta = (template.get("spec") or {}).get("metadata") or {}
        annotations = dict(tmeta.get("annotations") or {})
        annotations[POD_CLAIM_ANNOTATION] = entry["name"]
        claim = {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {
                # upstream truncates both parts so the generated name stays a valid label
                "generateName": f"{pod_name[:28]}-{entry['name'][:28]}-",
                "namespace": ns,
                "labels": dict(tmeta.get("labels") or {}),
                "annotations": annotations,
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "name": pod_name,
                        "uid": pod["metadata"]["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": (template.get("spec") or {}).get("spec") or {},
        }
        if not claim["metadata"]["labels"]:
            del claim["metadata"]["labels"]
        created = self.store.create(CLAIMS, claim, ns)
        # Index at once so a re-sync before the watch event arrives does not create a second claim.
        self.cache[CLAIMS][key_of(created)] = created
        self._index_claim(created, add=True)
        return created

    # -- claims: reservedFor cleanup, deallocation, deletion --
    def _consumer_gone(self, ns: str, ref: dict[str, Any]) -> bool:
        if ref.get("apiGroup") or ref.get("resource") != "pods":
            return False  # other consumers are somebody else's business
        pod = self.cache[PODS].get((ns, ref.get("name", "")))
        return pod is None or pod["metadata"].get("uid") != ref.get("uid") or pod_done(pod)

    def sync_claim(self, k: Key) -> None:
        claim = self.cache[CLAIMS].get(k)
        if claim is None:
            return
        status = claim.get("status") or {}
        reserved = status.get("reservedFor") or []
        valid = [r for r in reserved if not self._consumer_gone(k[0], r)]
        finalizers = claim["metadata"].get("finalizers") or []
        if len(valid) < len(reserved) or (
            not valid and claim["metadata"].get("deletionTimestamp") and DELETE_PROTECTION in finalizers
        ):
            new_status = dict(status)
            new_status["reservedFor"] = valid
            if not valid:
                new_status.pop("reservedFor")
                if DELETE_PROTECTION in finalizers:
                    new_status.pop("allocation", None)
            updated = dict(claim)
            updated["status"] = new_status
            claim = self.store.update(CLAIMS, updated, subresource="status")
            if not valid and DELETE_PROTECTION in finalizers:
                meta = dict(claim["metadata"])
                meta["finalizers"] = [f for f in finalizers if f != DELETE_PROTECTION]
                claim = self.store.update(CLAIMS, {**claim, "metadata": meta})
        if valid:
            return
        owner = owning_pod(claim)
        if owner and not claim["metadata"].get("deletionTimestamp"):
            pod = self.cache[PODS].get((k[0], owner[0]))
            if pod is None or pod["metadata"].get("uid") != owner[1] or pod_done(pod):
                try:
                    self.store.delete(CLAIMS, k[1], k[0])
                except ApiError as exc:
                    if exc.code != 404:
                        raise


# Per store: (object uid, reason, message, component) -> Event name, for counting repeats.
_event_names: weakref.WeakKeyDictionary[Store, dict[tuple[str, str, str, str], str]] = (
    weakref.WeakKeyDictionary()
)
_event_lock = threading.Lock()


def record_event(
    store: Store,
    obj: dict[str, Any],
    type_: str,
    reason: str,
    message: str,
    component: str = "default-scheduler",
) -> None:
    """Record an event; a repeat of the same (object, reason, message) bumps `count` instead of
    creating a new Event, as client-go's event correlator does."""
    md = obj["metadata"]
    ns = md.get("namespace") or "default"
    ident = (md.get("uid", ""), reason, message, component)
    now = now_rfc3339()
    with _event_lock:
        known = _event_names.setdefault(store, {})
        name = known.get(ident)
    if name is not None:
        try:
            ev = store.get_raw(EVENTS, name, ns)
            store.patch(
                EVENTS,
                name,
                {"count": int(ev.get("count") or 1) + 1, "lastTimestamp": now},
                "application/merge-patch+json",
                ns,
            )
            return
        except ApiError:
            pass  # expired or deleted: create a fresh one
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{md['name']}.{time.time_ns():x}", "namespace": ns},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion", "v1"),
            "kind": obj.get("kind", "Pod"),
            "name": md["name"],
            "namespace": ns,
            "uid": md.get("uid", ""),
            "resourceVersion": md.get("resourceVersion", ""),
        },
        "reason": reason,
        "message": message,
        "type": type_,
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": component,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    created = store.create(EVENTS, body, ns)
    with _event_lock:
        known[ident] = created["metadata"]["name"]
