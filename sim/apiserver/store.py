"""Store: the in-memory, thread-safe object store behind the simulated apiserver.

Every write (in-process or HTTP) goes through the same path: body checks, gate dropping, strict schema
validation, DRA rules, defaulting, resourceVersion bookkeeping and watch fan-out. Objects are plain JSON
dicts exactly as served over HTTP. Stored objects are never mutated in place (each write stores a new
dict), so readers can share references; the public methods hand out copies.
"""

from __future__ import annotations

import datetime as _dt
import random
import string
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from drakit.timeutil import now_rfc3339

from ..config import SimConfig
from . import strategy
from .errors import ApiError, already_exists, bad_request, conflict, field_cause, invalid, not_found
from .objects import clone
from .patch import (
    APPLY,
    JSON_PATCH,
    MERGE,
    STRATEGIC,
    apply_merge,
    apply_prune,
    json_patch,
    merge_patch,
    normalize_patch_type,
    strategic_merge,
)
from .resources import RESOURCES, ResourceType, lookup
from .schema import canonicalize_quantities, schemas_for
from .selectors import make_predicate
from .watch import Event, Record, Watch

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
DEFAULT_HISTORY = 50_000
# LogProvider(namespace, pod, container[, previous=True]) -> bytes; registered by the kubelet
# (Cluster.set_log_provider). `previous=True` is passed only for GET pods/<p>/log?previous=true.
LogProvider = Callable[..., bytes]


@dataclass
class WriteResult:
    object: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    created: bool = False


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    m = obj.get("metadata")
    if m is None:
        m = obj["metadata"] = {}
    if not isinstance(m, dict):
        raise bad_request("metadata must be an object")
    return m


class Store:
    """The in-memory API state. See docs/architecture.md "Store" for the contract."""

    def __init__(self, config: SimConfig | None = None, history: int = DEFAULT_HISTORY) -> None:
        self.config = config or SimConfig()
        self.schemas = schemas_for(self.config.kube_version)
        self._lock = threading.RLock()
        self._rv = 0
        self._objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {r.name: {} for r in RESOURCES}
        self._history: deque[Record] = deque()
        self._history_max = history
        self._floor = 0  # every event with rv <= _floor has left the history window
        self._watches: set[Watch] = set()
        self._uids: dict[str, tuple[str, str, str]] = {}
        self._dependents: dict[str, set[tuple[str, str, str]]] = {}
        self._kubelet_nodes: set[str] = set()
        self._applied: dict[str, dict[str, Any]] = {}  # uid -> field manager -> last applied config
        # Hook for the kubelet: returns a container's log; used by GET pods/<name>/log.
        self.log_provider: LogProvider | None = None
        for ns in SYSTEM_NAMESPACES:
            self.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})

    # ---- public contract (copies in and out) ----

    @property
    def resource_version(self) -> int:
        return self._rv

    def create(
        self, resource: str, obj: dict[str, Any], namespace: str | None = None, **opts: Any
    ) -> dict[str, Any]:
        return clone(self.create_ex(resource, obj, namespace, **opts).object)

    def get(self, resource: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        return clone(self.get_raw(resource, name, namespace))

    def list(
        self,
        resource: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        items, rv = self.list_raw(resource, namespace, label_selector, field_selector)
        return [clone(o) for o in items], rv

    def update(
        self,
        resource: str,
        obj: dict[str, Any],
        subresource: str | None = None,
        namespace: str | None = None,
        **opts: Any,
    ) -> dict[str, Any]:
        return clone(self.update_ex(resource, obj, subresource, namespace, **opts).object)

    def patch(
        self,
        resource: str,
        name: str,
        patch: Any,
        patch_type: str,
        namespace: str | None = None,
        subresource: str | None = None,
        **opts: Any,
    ) -> dict[str, Any]:
        return clone(self.patch_ex(resource, name, patch, patch_type, namespace, subresource, **opts).object)

    def delete(
        self,
        resource: str,
        name: str,
        namespace: str | None = None,
        grace_period_seconds: int | None = None,
        **opts: Any,
    ) -> dict[str, Any]:
        return clone(self.delete_ex(resource, name, namespace, grace_period_seconds, **opts))

    def watch(
        self,
        resources: list[str] | str,
        since: int | None = None,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        send_initial: bool = False,
    ) -> Watch:
        """Events after resourceVersion `since` (replayed from history; 410 Expired when too old),
        or from now when since is None. send_initial=True first yields a synthetic ADDED per
        current object (what an HTTP watch with resourceVersion 0 or unset does)."""
        if isinstance(resources, str):
            resources = [resources]
        rts = [lookup(r) for r in resources]
        preds = {rt.name: make_predicate(rt, label_selector, field_selector) for rt in rts}
        w = Watch(self._unregister, {rt.name for rt in rts}, preds, namespace)
        with self._lock:
            if since is not None and since < self._floor:
                raise ApiError(410, "Expired", f"too old resource version: {since} ({self._floor + 1})")
            if send_initial:
                for rt in rts:
                    for key in sorted(self._objects[rt.name]):
                        obj = self._objects[rt.name][key]
                        if w._matches(rt.name, obj):
                            w._queue.put(Event("ADDED", rt.name, obj))
            elif since is not None:
                for rec in self._history:
                    if rec.rv > since:
                        w._offer(rec)
            w.last_rv = self._rv
            self._watches.add(w)
        return w

    def history(self, resource: str, since: int, field_selector: str | None = None) -> list[Event]:
        """The events after ``since`` that are still in the history (410 Expired when it is gone)."""
        w = self.watch([resource], since, field_selector=field_selector)
        try:
            out = []
            while (ev := w.get(timeout=0)) is not None:
                out.append(ev)
            return out
        finally:
            w.close()

    # ---- kubelet hooks ----

    def register_kubelet(self, node_name: str) -> None:
        """Pods bound to this node are deleted gracefully: DELETE only sets deletionTimestamp and the
        kubelet removes the object (delete with grace_period_seconds=0) once the pod has stopped."""
        with self._lock:
            self._kubelet_nodes.add(node_name)

    def unregister_kubelet(self, node_name: str) -> None:
        with self._lock:
            self._kubelet_nodes.discard(node_name)

    def has_kubelet(self, node_name: str) -> bool:
        return node_name in self._kubelet_nodes

    def bind(self, name: str, namespace: str, node_name: str) -> dict[str, Any]:
        """POST pods/<name>/binding: assign a pending pod to a node (409 when already bound)."""
        return clone(bind_pod(self, name, namespace, node_name))

    def close_watches(self) -> None:
        with self._lock:
            watches = list(self._watches)
        for w in watches:
            w.close()

    # ---- internal API used by the HTTP layer (no copies; objects must not be mutated) ----

    def get_raw(self, resource: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        rt = lookup(resource)
        key = (namespace or "" if rt.namespaced else "", name)
        obj = self._objects[rt.name].get(key)
        if obj is None:
            raise not_found(rt.plural, name, rt.group)
        return obj

    def list_raw(
        self,
        resource: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        rt = lookup(resource)
        pred = make_predicate(rt, label_selector, field_selector, namespace if rt.namespaced else None)
        with self._lock:
            objs = self._objects[rt.name]
            keys = sorted(objs)
            items = [objs[k] for k in keys]
            rv = self._rv
        if pred is not None:
            items = [o for o in items if pred(o)]
        return items, rv

    def create_ex(
        self,
        resource: str,
        obj: dict[str, Any],
        namespace: str | None = None,
        *,
        dry_run: bool = False,
        field_validation: str = "Strict",
        field_manager: str | None = None,
    ) -> WriteResult:
        rt = lookup(resource)
        obj = clone(obj)
        with self._lock:
            return self._create(rt, obj, namespace, dry_run, field_validation)

    def update_ex(
        self,
        resource: str,
        obj: dict[str, Any],
        subresource: str | None = None,
        namespace: str | None = None,
        *,
        dry_run: bool = False,
        field_validation: str = "Strict",
        field_manager: str | None = None,
    ) -> WriteResult:
        rt = lookup(resource)
        obj = clone(obj)
        if not isinstance(obj, dict):
            raise bad_request("the body of an update must be a JSON object")
        self._check_type(rt, obj)
        meta = _meta(obj)
        name = meta.get("name")
        if not name:
            raise invalid(
                rt.kind,
                "",
                rt.group,
                [field_cause("metadata.name", "Required value: name is required", "FieldValueRequired")],
            )
        ns = self._namespace_of(rt, meta, namespace)
        with self._lock:
            old = self._objects[rt.name].get((ns, name))
            if old is None:
                raise not_found(rt.plural, name, rt.group)
            rv = meta.get("resourceVersion")
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise conflict(rt.plural, name, rt.group)
            new = self._merge_for_update(rt, old, obj, subresource)
            return self._commit_update(rt, old, new, subresource, dry_run, field_validation)

    def patch_ex(
        self,
        resource: str,
        name: str,
        patch: Any,
        patch_type: str,
        namespace: str | None = None,
        subresource: str | None = None,
        *,
        dry_run: bool = False,
        field_validation: str = "Strict",
        field_manager: str | None = None,
        force: bool = False,
    ) -> WriteResult:
        rt = lookup(resource)
        ptype = normalize_patch_type(patch_type)
        ns = namespace or "" if rt.namespaced else ""
        if rt.namespaced and not ns:
            raise bad_request(f"{rt.name} is namespaced: a patch needs a namespace")
        if ptype != JSON_PATCH and not isinstance(patch, dict):
            raise bad_request(f"the body of a {ptype} patch must be a JSON object")
        with self._lock:
            old = self._objects[rt.name].get((ns, name))
            if old is None:
                if ptype == APPLY and subresource is None:
                    body = clone(patch)
                    self._check_type(rt, body)
                    _meta(body).setdefault("name", name)
                    if body["metadata"]["name"] != name:
                        raise bad_request(
                            f"the name of the object ({body['metadata']['name']}) does not "
                            f"match the name on the URL ({name})"
                        )
                    result = self._create(rt, body, ns or None, dry_run, field_validation)
                    if not dry_run:
                        self._remember_apply(result.object, field_manager, patch)
                    return result
                raise not_found(rt.plural, name, rt.group)
            root = self.schemas.root(rt)
            if ptype == MERGE:
                patched = merge_patch(old, patch)
            elif ptype == JSON_PATCH:
                patched = json_patch(old, patch)
            elif ptype == STRATEGIC:
                patched = strategic_merge(old, patch, root)
            else:
                self._check_type(rt, clone(patch))
                patched = apply_merge(old, patch, root)
            if not isinstance(patched, dict):
                raise bad_request("the patch did not produce an object")
            # patch helpers share untouched subtrees with the stored object: copy before any mutation
            patched = clone(patched)
            previous = self._applied.get(old["metadata"]["uid"], {}).get(field_manager or "")
            if ptype == APPLY and previous is not None:
                patched = apply_prune(patched, previous, patch, root)
            pmeta = _meta(patched)
            if pmeta.get("name") != name or (rt.namespaced and pmeta.get("namespace") != ns):
                raise bad_request("a patch cannot change metadata.name or metadata.namespace")
            rv = pmeta.get("resourceVersion")
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise conflict(rt.plural, name, rt.group)
            self._check_type(rt, patched)
            new = self._merge_for_update(rt, old, patched, subresource)
            result = self._commit_update(rt, old, new, subresource, dry_run, field_validation)
            if ptype == APPLY and not dry_run:
                self._remember_apply(result.object, field_manager, patch)
            return result

    def _remember_apply(self, obj: dict[str, Any], manager: str | None, applied: Any) -> None:
        """Server-side apply bookkeeping: what each field manager applied last, so fields it stops
        applying are removed on its next apply (instead of managedFields)."""
        self._applied.setdefault(obj["metadata"]["uid"], {})[manager or ""] = clone(applied)

    def delete_ex(
        self,
        resource: str,
        name: str,
        namespace: str | None = None,
        grace_period_seconds: int | None = None,
        *,
        propagation_policy: str | None = None,
        preconditions: dict[str, str] | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        rt = lookup(resource)
        ns = namespace or "" if rt.namespaced else ""
        if propagation_policy not in (None, "Orphan", "Background", "Foreground"):
            raise bad_request(
                f"propagationPolicy {propagation_policy!r} must be Orphan, Background or Foreground"
            )
        with self._lock:
            old = self._objects[rt.name].get((ns, name))
            if old is None:
                raise not_found(rt.plural, name, rt.group)
            for key, value in (preconditions or {}).items():
                if value and old["metadata"].get(key) != value:
                    raise conflict(
                        rt.plural,
                        name,
                        rt.group,
                        f"Precondition failed: {key} in precondition: {value}, "
                        f"{key} in object meta: {old['metadata'].get(key)}",
                    )
            if dry_run:
                return old
            return self._delete(rt, old, grace_period_seconds, propagation_policy)

    def delete_collection(
        self,
        resource: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        grace_period_seconds: int | None = None,
        **opts: Any,
    ) -> list[dict[str, Any]]:
        items, _ = self.list_raw(resource, namespace, label_selector, field_selector)
        out = []
        for obj in items:
            m = obj["metadata"]
            try:
                out.append(
                    self.delete_ex(resource, m["name"], m.get("namespace"), grace_period_seconds, **opts)
                )
            except ApiError as e:
                if e.code != 404:  # deleted meanwhile: fine
                    raise
        return out

    # ---- write internals (caller holds the lock) ----

    def _check_type(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        api_version = obj.setdefault("apiVersion", rt.api_version)
        kind = obj.setdefault("kind", rt.kind)
        if api_version != rt.api_version or kind != rt.kind:
            raise bad_request(
                f"the body of the request was for {api_version}, Kind={kind} but the URL names "
                f"{rt.api_version}, Kind={rt.kind} ({rt.name}); send the object to its own resource"
            )

    def _namespace_of(self, rt: ResourceType, meta: dict[str, Any], namespace: str | None) -> str:
        if not rt.namespaced:
            meta.pop("namespace", None)  # a real apiserver ignores it on cluster-scoped objects
            return ""
        in_body = meta.get("namespace")
        if namespace and in_body and in_body != namespace:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the "
                f"request ({in_body!r} vs {namespace!r})"
            )
        ns = namespace or in_body
        if not ns:
            raise bad_request(f"{rt.name} is namespaced: pass a namespace or set metadata.namespace")
        meta["namespace"] = ns
        return ns

    def _create(
        self,
        rt: ResourceType,
        obj: dict[str, Any],
        namespace: str | None,
        dry_run: bool,
        field_validation: str,
    ) -> WriteResult:
        if not isinstance(obj, dict):
            raise bad_request("the body of a create must be a JSON object")
        self._check_type(rt, obj)
        meta = _meta(obj)
        ns = self._namespace_of(rt, meta, namespace)
        if not meta.get("name"):
            prefix = meta.get("generateName")
            if not prefix:
                raise invalid(
                    rt.kind,
                    "",
                    rt.group,
                    [
                        field_cause(
                            "metadata.name",
                            "Required value: name or generateName is required",
                            "FieldValueRequired",
                        )
                    ],
                )
            meta["name"] = prefix + "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        name = meta["name"]
        if rt.namespaced:
            ns_obj = self._objects["namespaces"].get(("", ns))
            if ns_obj is None:
                raise not_found("namespaces", ns)
            if ns_obj["metadata"].get("deletionTimestamp"):
                raise ApiError(
                    403,
                    "Forbidden",
                    f'{rt.plural} "{name}" is forbidden: unable to create new content '
                    f"in namespace {ns} because it is being terminated",
                )
        if (ns, name) in self._objects[rt.name]:
            raise already_exists(rt.plural, name, rt.group)
        for k in ("resourceVersion", "uid", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(k, None)
        strategy.prepare_create(rt, obj, self.config)
        warnings = self.schemas.validate(rt, obj, unknown_fields=field_validation)
        canonicalize_quantities(self.schemas, rt, obj)
        causes = strategy.validate(rt, obj, None, self.config)
        if causes:
            raise invalid(rt.kind, name, rt.group, causes)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        if dry_run:
            meta["resourceVersion"] = str(self._rv)
            return WriteResult(obj, warnings, True)
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        self._objects[rt.name][(ns, name)] = obj
        self._index(rt, obj)
        self._record("ADDED", rt, obj, None)
        return WriteResult(obj, warnings, True)

    def _merge_for_update(
        self, rt: ResourceType, old: dict[str, Any], obj: dict[str, Any], subresource: str | None
    ) -> dict[str, Any]:
        if subresource not in (None, "status"):
            raise ApiError(
                405, "MethodNotAllowed", f"subresource {subresource!r} of {rt.name} cannot be updated"
            )
        if subresource == "status":
            if not rt.has_status:
                raise not_found(rt.plural + "/status", old["metadata"]["name"], rt.group)
            new = clone(old)
            if obj.get("status") is None:
                new.pop("status", None)
            else:
                new["status"] = clone(obj["status"])
            return new
        new = obj
        meta = _meta(new)
        old_meta = old["metadata"]
        for k in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
            "name",
        ):
            if k in old_meta:
                meta[k] = old_meta[k]
            else:
                meta.pop(k, None)
        if rt.has_status:
            if "status" in old:
                new["status"] = clone(old["status"])
            else:
                new.pop("status", None)
        return new

    def _commit_update(
        self,
        rt: ResourceType,
        old: dict[str, Any],
        new: dict[str, Any],
        subresource: str | None,
        dry_run: bool,
        field_validation: str,
    ) -> WriteResult:
        meta = new["metadata"]
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        strategy.prepare_update(rt, new, old, self.config, subresource)
        warnings = self.schemas.validate(rt, new, unknown_fields=field_validation)
        canonicalize_quantities(self.schemas, rt, new)
        causes = strategy.validate(rt, new, old, self.config)
        if causes:
            raise invalid(rt.kind, meta["name"], rt.group, causes)
        if old.get("metadata", {}).get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(old["metadata"].get("finalizers") or [])
            if added:
                raise invalid(
                    rt.kind,
                    meta["name"],
                    rt.group,
                    [
                        field_cause(
                            "metadata.finalizers",
                            f"Forbidden: no new finalizers can be added if the object is being "
                            f"deleted, found new finalizers {sorted(added)}",
                            "FieldValueForbidden",
                        )
                    ],
                )
        if new == old:
            return WriteResult(old, warnings)  # a no-op write keeps the resourceVersion, as upstream does
        if strategy.spec_changed(new, old):
            meta["generation"] = int(old["metadata"].get("generation") or 1) + 1
        if dry_run:
            return WriteResult(new, warnings)
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        key = (meta.get("namespace", "") if rt.namespaced else "", meta["name"])
        self._unindex(rt, old)
        self._objects[rt.name][key] = new
        self._index(rt, new)
        self._record("MODIFIED", rt, new, old)
        if (
            meta.get("deletionTimestamp")
            and not meta.get("finalizers")
            and not meta.get("deletionGracePeriodSeconds")
        ):
            self._remove(rt, new)
        return WriteResult(new, warnings)

    def _delete(
        self, rt: ResourceType, old: dict[str, Any], grace: int | None, propagation: str | None
    ) -> dict[str, Any]:
        meta = old["metadata"]
        if rt.name == "namespaces":
            return self._delete_namespace(old)
        grace_s = 0
        if rt.name == "pods":
            node = (old.get("spec") or {}).get("nodeName")
            if node and node in self._kubelet_nodes:
                default = (old.get("spec") or {}).get("terminationGracePeriodSeconds")
                grace_s = grace if grace is not None else (30 if default is None else int(default))
        finalizers = meta.get("finalizers") or []
        if propagation == "Orphan":
            finalizers = list(finalizers)  # dependents keep living: nothing else to do here
        if meta.get("deletionTimestamp"):
            if not finalizers and grace_s == 0:
                return self._remove(rt, old, propagation)
            if grace_s == 0 and meta.get("deletionGracePeriodSeconds"):
                # the kubelet is done: only the finalizers hold the object now
                new = clone(old)
                new["metadata"]["deletionGracePeriodSeconds"] = 0
                self._rv += 1
                new["metadata"]["resourceVersion"] = str(self._rv)
                self._objects[rt.name][self._key(rt, new)] = new
                self._record("MODIFIED", rt, new, old)
                return new
            return old  # deletion already under way
        if finalizers or grace_s > 0:
            new = clone(old)
            ts = _dt.datetime.now(_dt.UTC) + _dt.timedelta(seconds=grace_s)
            new["metadata"]["deletionTimestamp"] = ts.strftime("%Y-%m-%dT%H:%M:%SZ")
            new["metadata"]["deletionGracePeriodSeconds"] = grace_s
            self._rv += 1
            new["metadata"]["resourceVersion"] = str(self._rv)
            self._objects[rt.name][self._key(rt, new)] = new
            self._record("MODIFIED", rt, new, old)
            return new
        return self._remove(rt, old, propagation)

    def _remove(
        self, rt: ResourceType, obj: dict[str, Any], propagation: str | None = None
    ) -> dict[str, Any]:
        key = self._key(rt, obj)
        if self._objects[rt.name].get(key) is None:
            return obj
        del self._objects[rt.name][key]
        self._unindex(rt, obj)
        gone = clone(obj)
        self._rv += 1
        gone["metadata"]["resourceVersion"] = str(self._rv)
        self._record("DELETED", rt, gone, None)
        uid = obj["metadata"].get("uid")
        if propagation != "Orphan" and uid:
            self._collect_dependents(uid)
        if rt.namespaced:
            self._maybe_finish_namespace(key[0])
        return gone

    def _collect_dependents(self, owner_uid: str) -> None:
        """Background garbage collection: delete objects whose owners are all gone."""
        for res, ns, name in sorted(self._dependents.pop(owner_uid, set())):
            drt = lookup(res)
            obj = self._objects[res].get((ns, name))
            if obj is None:
                continue
            owners = [r.get("uid") for r in obj["metadata"].get("ownerReferences") or []]
            if any(u in self._uids for u in owners):
                continue
            self._delete(drt, obj, None, "Background")

    def _delete_namespace(self, ns_obj: dict[str, Any]) -> dict[str, Any]:
        name = ns_obj["metadata"]["name"]
        if name in SYSTEM_NAMESPACES:
            raise ApiError(
                403, "Forbidden", f'namespaces "{name}" is forbidden: this namespace may not be deleted'
            )
        if not ns_obj["metadata"].get("deletionTimestamp"):
            new = clone(ns_obj)
            new["metadata"]["deletionTimestamp"] = now_rfc3339()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            new.setdefault("status", {})["phase"] = "Terminating"
            self._rv += 1
            new["metadata"]["resourceVersion"] = str(self._rv)
            self._objects["namespaces"][("", name)] = new
            self._record("MODIFIED", lookup("namespaces"), new, ns_obj)
            for rt in RESOURCES:
                if not rt.namespaced:
                    continue
                for (ons, _), obj in sorted(self._objects[rt.name].items()):
                    if ons == name and (ons, obj["metadata"]["name"]) in self._objects[rt.name]:
                        self._delete(rt, obj, None, "Background")
        current = self._objects["namespaces"].get(("", name))
        self._maybe_finish_namespace(name)
        return self._objects["namespaces"].get(("", name)) or current or ns_obj

    def _maybe_finish_namespace(self, ns: str) -> None:
        ns_obj = self._objects["namespaces"].get(("", ns))
        if ns_obj is None or not ns_obj["metadata"].get("deletionTimestamp"):
            return
        for rt in RESOURCES:
            if rt.namespaced and any(k[0] == ns for k in self._objects[rt.name]):
                return
        self._remove(lookup("namespaces"), ns_obj)

    def _key(self, rt: ResourceType, obj: dict[str, Any]) -> tuple[str, str]:
        m = obj["metadata"]
        return (m.get("namespace", "") if rt.namespaced else "", m["name"])

    def _index(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        m = obj["metadata"]
        ident = (rt.name, m.get("namespace", "") if rt.namespaced else "", m["name"])
        self._uids[m["uid"]] = ident
        for ref in m.get("ownerReferences") or []:
            if ref.get("uid"):
                self._dependents.setdefault(ref["uid"], set()).add(ident)

    def _unindex(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        m = obj["metadata"]
        ident = (rt.name, m.get("namespace", "") if rt.namespaced else "", m["name"])
        self._uids.pop(m.get("uid", ""), None)
        if self._objects[rt.name].get(ident[1:]) is None:  # gone for good, not replaced by a newer version
            self._applied.pop(m.get("uid", ""), None)
        for ref in m.get("ownerReferences") or []:
            deps = self._dependents.get(ref.get("uid", ""))
            if deps is not None:
                deps.discard(ident)

    def _record(self, kind: str, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        rec = Record(self._rv, kind, rt.name, obj, old)
        self._history.append(rec)
        if len(self._history) > self._history_max:
            self._floor = self._history.popleft().rv
        for w in self._watches:
            w._offer(rec)

    def _unregister(self, w: Watch) -> None:
        with self._lock:
            self._watches.discard(w)


def bind_pod(
    store: Store, name: str, namespace: str, node_name: str, *, dry_run: bool = False
) -> dict[str, Any]:
    """The pods/binding subresource: set spec.nodeName once and mark PodScheduled=True."""
    if not node_name:
        raise invalid(
            "Binding", name, "", [field_cause("target.name", "Required value", "FieldValueRequired")]
        )
    with store._lock:
        pod = store.get_raw("pods", name, namespace)
        current = (pod.get("spec") or {}).get("nodeName")
        if current:
            raise conflict("pods/binding", name, "", f"pod {name} is already assigned to node {current!r}")
        if pod["metadata"].get("deletionTimestamp"):
            raise conflict(
                "pods/binding", name, "", f"pod {name} is being deleted, cannot be assigned to a host"
            )
        new = clone(pod)
        new.setdefault("spec", {})["nodeName"] = node_name
        conditions = [
            c
            for c in (new.setdefault("status", {}).get("conditions") or [])
            if c.get("type") != "PodScheduled"
        ]
        conditions.append(
            {
                "type": "PodScheduled",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": now_rfc3339(),
            }
        )
        new["status"]["conditions"] = conditions
        rt = lookup("pods")
        if dry_run:
            return new
        store._rv += 1
        new["metadata"]["resourceVersion"] = str(store._rv)
        store._objects["pods"][(namespace, name)] = new
        store._record("MODIFIED", rt, new, pod)
        return new
