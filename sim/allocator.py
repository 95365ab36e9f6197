"""The DRA structured-parameters allocator with KEP-5075 semantics (allocator-rules.md).

Pure: inputs are plain dicts (slices, device classes, claims), the node, an `AllocatedState` and the
feature gates; output is one `status.allocation` per claim, or the node-level reason why not, or an
`AllocatorError` carrying upstream's fatal text. No I/O, no clock.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sim.allocator_constraints import build_constraints
from sim.allocator_counters import CounterLedger
from sim.allocator_pools import Pool, device_visible, gather_pools
from sim.allocator_state import AllocatedState, DeviceID
from sim.cel import CelCompileError, CelError, compile_selector, device_variable
from sim.quantity import MissingCapacity, Quantity, capacity_key, consumed_capacity, to_json

MAX_RESULTS = 32
CANNOT_ALLOCATE = "cannot allocate all claims"
INVALID_POOLS = "invalid resource pools were encountered"


class AllocatorError(Exception):
    """A fatal allocator error: scheduling of the pod aborts with this text."""


@dataclass(frozen=True)
class Features:
    consumable_capacity: bool = True
    prioritized_list: bool = True
    admin_access: bool = True
    partitionable_devices: bool = True


@dataclass
class Outcome:
    allocations: list[dict[str, Any]] | None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.allocations is not None


def _name(obj: Mapping[str, Any]) -> str:
    return (obj.get("metadata") or {}).get("name", "")


def claim_ref(claim: Mapping[str, Any]) -> str:
    md = claim.get("metadata") or {}
    ns = md.get("namespace") or ""
    return f"{ns}/{md.get('name', '')}" if ns else md.get("name", "")


@dataclass(frozen=True)
class DeviceRef:
    """One device of one slice, with what the search needs precomputed."""

    pool: Pool
    slice: Mapping[str, Any]
    device: Mapping[str, Any]
    id: DeviceID
    key: tuple  # identifies the device's content for caches: (slice uid, resourceVersion, index)
    capacity: Mapping[str, Mapping[str, Any]]  # keys normalised to the driver's domain
    multi: bool


class SelectorCache:
    """Caches `device` CEL variables and selector results per device content.

    Keys include the slice's uid and resourceVersion, so a changed slice is re-evaluated; callers may
    `clear()` when they drop slices to bound memory.
    """

    def __init__(self) -> None:
        self._vars: dict[tuple, Any] = {}
        self._results: dict[tuple, bool | CelError] = {}

    def clear(self) -> None:
        self._vars.clear()
        self._results.clear()

    def matches(self, expression: str, dev: DeviceRef, consumable_capacity: bool) -> bool:
        """True/False, or raises CelError (compile or runtime)."""
        program = compile_selector(expression)
        rkey = (expression, dev.key, consumable_capacity)
        hit = self._results.get(rkey)
        if hit is None:
            try:
                vkey = (dev.key, consumable_capacity)
                var = self._vars.get(vkey)
                if var is None:
                    var = self._vars[vkey] = device_variable(dev.id[0], dev.device, consumable_capacity)
                hit = program.matches(var)
            except CelError as exc:
                hit = exc
            self._results[rkey] = hit
        if isinstance(hit, CelError):
            raise hit
        return hit


def pool_devices(pools: list[Pool], node: Mapping[str, Any]) -> list[DeviceRef]:
    """Devices in search order: pools by driver then name, slices by name, devices in slice order."""
    out: list[DeviceRef] = []
    for pool in pools:
        for s in pool.slices:
            spec = s.get("spec") or {}
            md = s.get("metadata") or {}
            for i, d in enumerate(spec.get("devices") or []):
                if not device_visible(spec, d, node):
                    continue
                caps = {capacity_key(k, pool.driver): v for k, v in (d.get("capacity") or {}).items()}
                out.append(DeviceRef(
                    pool, s, d, (pool.driver, pool.name, d.get("name", "")),
                    (md.get("uid") or md.get("name"), md.get("resourceVersion"), i),
                    caps, bool(d.get("allowMultipleAllocations")),
                ))
    return out


@dataclass
class _Request:
    """One (sub)request to satisfy, with its class and selectors resolved."""

    claim_index: int
    name: str  # the main request name
    sub: str | None
    spec: Mapping[str, Any]
    cls: Mapping[str, Any]
    admin: bool
    count: int = 1
    all_devices: list[DeviceRef] | None = None
    capacity_requests: dict[str, Any] | None = None

    @property
    def result_name(self) -> str:
        return f"{self.name}/{self.sub}" if self.sub else self.name


@dataclass
class _Result:
    request: _Request
    dev: DeviceRef
    consumed: dict[str, Quantity] | None
    share_id: str | None


@dataclass
class _Search:
    claims: list[Mapping[str, Any]]
    devices: list[DeviceRef]
    state: AllocatedState
    features: Features
    cache: SelectorCache
    new_uuid: Callable[[], str]
    constraints: list[list[Any]] = field(default_factory=list)
    # per main request: list of alternatives (one for exactly, several for firstAvailable)
    plan: list[list[list[_Request]]] = field(default_factory=list)
    allocating_dedicated: set[DeviceID] = field(default_factory=set)
    allocating_consumed: dict[DeviceID, dict[str, Decimal]] = field(default_factory=dict)
    results: list[_Result] = field(default_factory=list)
    saw_invalid_pool: bool = False
    counters: CounterLedger = field(default_factory=CounterLedger)

    def multi(self, dev: DeviceRef) -> bool:
        return self.features.consumable_capacity and dev.multi

    # -- selectors --
    def selectable(self, req: _Request, dev: DeviceRef) -> bool:
        try:
            for i, sel in enumerate((req.cls.get("spec") or {}).get("selectors") or []):
                expr = (sel.get("cel") or {}).get("expression", "")
                try:
                    if not self.cache.matches(expr, dev, self.features.consumable_capacity):
                        return False
                except CelCompileError as exc:
                    raise AllocatorError(
                        f"class {_name(req.cls)}: selector #{i}: CEL compile error: {exc}") from None
                except CelError as exc:
                    raise AllocatorError(
                        f"class {_name(req.cls)}: selector #{i} on device {'/'.join(dev.id)}: "
                        f"CEL runtime error: {exc}") from None
            for i, sel in enumerate(req.spec.get("selectors") or []):
                expr = (sel.get("cel") or {}).get("expression", "")
                try:
                    if not self.cache.matches(expr, dev, self.features.consumable_capacity):
                        return False
                except CelCompileError as exc:
                    raise AllocatorError(
                        f"claim {claim_ref(self.claims[req.claim_index])}: selector #{i}: "
                        f"CEL compile error: {exc}") from None
                except CelError as exc:
                    raise AllocatorError(
                        f"claim {claim_ref(self.claims[req.claim_index])}: selector #{i} on device "
                        f"{'/'.join(dev.id)}: CEL runtime error: {exc}") from None
        except AllocatorError:
            raise
        return True

    # -- capacity (section 3, 4) --
    def consumption(
        self, req: _Request, dev: DeviceRef, include_allocating: bool
    ) -> tuple[bool, dict | None]:
        """(eligible, consumed-for-shared-devices). Applies to shared devices always, and to
        dedicated devices only as a filter when the request names capacities."""
        if not self.features.consumable_capacity:
            return True, None
        multi = self.multi(dev)
        if not multi and req.capacity_requests is None:
            return True, None
        requests = req.capacity_requests
        if requests:
            requests = {capacity_key(k, dev.id[0]): v for k, v in requests.items()}
        try:
            consumed = consumed_capacity(requests, dev.capacity)
        except MissingCapacity:
            return False, None
        if consumed is None:
            return False, None
        committed = self.state.consumed(dev.id)
        allocating = self.allocating_consumed.get(dev.id, {}) if include_allocating else {}
        for name, cap in dev.capacity.items():
            total = consumed[name].value + committed.get(name, Decimal(0)) + allocating.get(name, Decimal(0))
            if total > Quantity.parse(cap["value"]).value:
                return False, None
        return True, (consumed if multi else None)

    def _counts_as_allocated(self, dev: DeviceRef) -> bool:
        """Committed use for counter accounting: dedicated, or any committed share (section 11)."""
        return self.state.is_dedicated(dev.id) or self.state.has_shares(dev.id)

    # -- one device --
    def in_use(self, req: _Request, dev: DeviceRef) -> bool:
        if self.multi(dev):
            # A shared device with a committed dedicated result stays exclusive (section 5).
            return not req.admin and self.state.is_dedicated(dev.id)
        if dev.id in self.allocating_dedicated:
            return True  # never twice in one Allocate call, not even for admin access
        return not req.admin and self.state.is_dedicated(dev.id)

    def try_device(self, req: _Request, dev: DeviceRef, all_mode: bool) -> Callable[[], None] | None:
        """Allocate `dev` for `req` if every check passes; returns the undo, or None."""
        ok, consumed = self.consumption(req, dev, include_allocating=True)
        if not ok:
            return None
        multi = self.multi(dev)
        took_counters = False
        if dev.device.get("consumesCounters"):
            if not self.features.partitionable_devices:
                return None
            # A shared device pays its counters once: not while it already has consumption.
            already_shared = multi and (bool(self.state.consumed(dev.id))
                                        or dev.id in self.allocating_consumed)
            if not already_shared:
                if not self.counters.fits(dev, self.devices, self._counts_as_allocated):
                    return None
                self.counters.take(dev)
                took_counters = True
        claim_constraints = self.constraints[req.claim_index]
        added = []
        for c in claim_constraints:
            if not c.add(req.name, req.sub, dev.device, dev.id[0]):
                for a in reversed(added):
                    a.remove(req.name, req.sub, dev.device, dev.id[0])
                if took_counters and not multi:
                    self.counters.release(dev)
                if all_mode:
                    raise AllocatorError(
                        f"claim {claim_ref(self.claims[req.claim_index])}, request {req.result_name}: "
                        f"cannot add device {dev.id[0]}/{dev.id[1]}/{dev.id[2]} because a claim constraint "
                        "would not be satisfied")
                return None
            added.append(c)
        share_id = self.new_uuid() if multi else None
        if multi:
            bucket = self.allocating_consumed.setdefault(dev.id, {})
            for name, q in (consumed or {}).items():
                bucket[name] = bucket.get(name, Decimal(0)) + q.value
        else:
            self.allocating_dedicated.add(dev.id)
        self.results.append(_Result(req, dev, consumed if dev.capacity else None, share_id))

        def undo() -> None:
            self.results.pop()
            if multi:
                bucket = self.allocating_consumed[dev.id]
                for name, q in (consumed or {}).items():
                    bucket[name] -= q.value
            else:
                self.allocating_dedicated.discard(dev.id)
                if took_counters:
                    self.counters.release(dev)  # upstream releases counters of exclusive devices only
            for a in reversed(added):
                a.remove(req.name, req.sub, dev.device, dev.id[0])

        return undo

    # -- depth-first search (section 12) --
    def solve(self, claim_i: int, req_i: int) -> bool:
        if claim_i >= len(self.plan):
            return True
        if req_i >= len(self.plan[claim_i]):
            return self.solve(claim_i + 1, 0)
        # firstAvailable: subrequests in order, the first that leads to a full solution wins.
        return any(self.solve_request(alt, claim_i, req_i, 0, 0) for alt in self.plan[claim_i][req_i])

    def solve_request(self, req: _Request, claim_i: int, req_i: int, slot: int, start: int) -> bool:
        if req.all_devices is not None:
            if not req.all_devices:
                return False  # an empty "all" set fails the request (section 8)
            if slot >= len(req.all_devices):
                return self.solve(claim_i, req_i + 1)
            dev = req.all_devices[slot]
            if self.in_use(req, dev):
                return False
            undo = self.try_device(req, dev, all_mode=True)
            if undo is None:
                return False
            if self.solve_request(req, claim_i, req_i, slot + 1, 0):
                return True
            undo()
            return False
        if slot >= req.count:
            return self.solve(claim_i, req_i + 1)
        for pos in range(start, len(self.devices)):
            dev = self.devices[pos]
            if dev.pool.invalid:
                self.saw_invalid_pool = True
                continue
            if self.in_use(req, dev):
                continue
            if not self.selectable(req, dev):
                continue
            if not self.consumption(req, dev, include_allocating=True)[0]:
                continue
            undo = self.try_device(req, dev, all_mode=False)
            if undo is None:
                continue
            # Next slot of the same request starts after this device: combinations, not permutations.
            if self.solve_request(req, claim_i, req_i, slot + 1, pos + 1):
                return True
            undo()
        return False


def _prepare(search: _Search, classes: Mapping[str, Mapping[str, Any]], pools: list[Pool]) -> None:
    features = search.features
    for ci, claim in enumerate(search.claims):
        ref = claim_ref(claim)
        devices_spec = ((claim.get("spec") or {}).get("devices") or {})
        search.constraints.append(build_constraints(devices_spec.get("constraints") or [],
                                                    features.consumable_capacity))
        claim_plan: list[list[_Request]] = []
        total = 0
        for request in devices_spec.get("requests") or []:
            name = request.get("name", "")
            if request.get("firstAvailable"):
                if not features.prioritized_list:
                    raise AllocatorError(f"claim {ref}, request {name}: has subrequests, but the "
                                         "DRAPrioritizedList feature is disabled")
                alts = [(sub, sub.get("name")) for sub in request["firstAvailable"]]
            else:
                alts = [(request.get("exactly") or {}, None)]
            prepared = []
            for spec, sub in alts:
                label = f"subrequest {sub}" if sub else f"request {name}"
                class_name = spec.get("deviceClassName", "")
                cls = classes.get(class_name)
                if cls is None:
                    raise AllocatorError(
                        f"claim {ref}, {label}: could not retrieve device class {class_name}")
                admin = bool(spec.get("adminAccess"))
                if admin and not features.admin_access:
                    raise AllocatorError(f"claim {ref}, {label}: admin access is requested, but the "
                                         "feature is disabled")
                cap = spec.get("capacity")
                cap_requests = None
                if cap is not None:
                    if not features.consumable_capacity:
                        raise AllocatorError(f"claim {ref}, {label}: has capacity requests, but the "
                                             "DRAConsumableCapacity feature is disabled")
                    cap_requests = {}
                    for k, v in (cap.get("requests") or {}).items():
                        cap_requests[k] = Quantity.parse(v)
                req = _Request(ci, name, sub, spec, cls, admin)
                mode = spec.get("allocationMode") or "ExactCount"
                if mode == "All":
                    req.all_devices = []
                else:
                    req.count = int(spec.get("count") or 1)
                req.capacity_requests = cap_requests
                prepared.append(req)
            claim_plan.append(prepared)
            total += max((r.count if r.all_devices is None else 0) for r in prepared)
        if total > MAX_RESULTS:
            raise AllocatorError(f"claim {ref}: number of requested devices {total} exceeds the claim limit "
                                 f"of {MAX_RESULTS}")
        search.plan.append(claim_plan)
    # "All" candidate sets are fixed before the search, against committed consumption only.
    for claim_plan in search.plan:
        for alts in claim_plan:
            for req in alts:
                if req.all_devices is None:
                    continue
                ref = claim_ref(search.claims[req.claim_index])
                where = f"claim {ref}, request {req.result_name}"
                for pool in pools:
                    if pool.incomplete or pool.invalid:
                        what = "being updated" if pool.incomplete else "invalid"
                        raise AllocatorError(f"{where}: asks for all devices, but resource pool "
                                             f"{pool.driver}/{pool.name} is currently {what}")
                for dev in search.devices:
                    if not search.selectable(req, dev):
                        continue
                    if (search.multi(dev) or req.capacity_requests is not None) and \
                            not search.consumption(req, dev, include_allocating=False)[0]:
                        continue
                    req.all_devices.append(dev)
                if len(req.all_devices) > MAX_RESULTS:
                    raise AllocatorError(f"{where}: number of requested devices "
                                         f"{len(req.all_devices)} exceeds the claim limit of {MAX_RESULTS}")


def _node_selector(results: list[_Result]) -> dict[str, Any] | None:
    term: dict[str, list] = {"matchFields": [], "matchExpressions": []}
    for r in results:
        spec = r.dev.slice.get("spec") or {}
        src = r.dev.device if spec.get("perDeviceNodeSelection") else spec
        if src.get("nodeName"):
            return {"nodeSelectorTerms": [{"matchFields": [
                {"key": "metadata.name", "operator": "In", "values": [src["nodeName"]]}]}]}
        selector = src.get("nodeSelector")
        if selector:
            terms = selector.get("nodeSelectorTerms") or []
            if len(terms) > 1:
                raise AllocatorError(f"unsupported ResourceSlice.NodeSelector with {len(terms)} terms")
            for t in terms:
                for kind in ("matchFields", "matchExpressions"):
                    for requirement in t.get(kind) or []:
                        if requirement not in term[kind]:
                            term[kind].append(requirement)
    clean = {k: v for k, v in term.items() if v}
    return {"nodeSelectorTerms": [clean]} if clean else None


def _allocation_for(search: _Search, ci: int) -> dict[str, Any]:
    claim = search.claims[ci]
    mine = [r for r in search.results if r.request.claim_index == ci]
    out_results = []
    for r in mine:
        entry: dict[str, Any] = {"request": r.request.result_name, "driver": r.dev.id[0],
                                 "pool": r.dev.id[1], "device": r.dev.id[2]}
        if r.request.admin:
            entry["adminAccess"] = True
        tolerations = r.request.spec.get("tolerations")
        if tolerations:
            entry["tolerations"] = tolerations
        if r.share_id:
            entry["shareID"] = r.share_id
            if r.consumed is not None:
                entry["consumedCapacity"] = to_json(r.consumed)
        out_results.append(entry)
    config: list[dict[str, Any]] = []
    chosen = {}
    for r in mine:
        chosen.setdefault(r.request.result_name, r.request)
    for name, req in chosen.items():
        for cfg in (req.cls.get("spec") or {}).get("config") or []:
            config.append({"source": "FromClass", "requests": [name], **cfg})
    for cfg in ((claim.get("spec") or {}).get("devices") or {}).get("config") or []:
        entry = {"source": "FromClaim", **cfg}
        config.append(entry)
    allocation: dict[str, Any] = {"devices": {"results": out_results}}
    if config:
        allocation["devices"]["config"] = config
    selector = _node_selector(mine)
    if selector is not None:
        allocation["nodeSelector"] = selector
    return allocation


def allocate(
    claims: list[Mapping[str, Any]],
    node: Mapping[str, Any],
    slices: list[Mapping[str, Any]],
    classes: Mapping[str, Mapping[str, Any]],
    state: AllocatedState,
    features: Features = Features(),
    cache: SelectorCache | None = None,
    pools: list[Pool] | None = None,
    devices: list[DeviceRef] | None = None,
    new_uuid: Callable[[], str] = lambda: str(uuid.uuid4()),
) -> Outcome:
    """Allocate every claim in `claims` on `node`, all or nothing.

    `slices` may contain slices for other nodes (visibility is checked); callers that index slices by
    node may pass precomputed `pools`/`devices` instead.
    """
    if pools is None:
        pools = gather_pools(slices, node)
    if devices is None:
        devices = pool_devices(pools, node)
    search = _Search(list(claims), devices, state, features, cache or SelectorCache(), new_uuid)
    _prepare(search, classes, pools)
    if not search.solve(0, 0):
        return Outcome(None, INVALID_POOLS if search.saw_invalid_pool else CANNOT_ALLOCATE)
    return Outcome([_allocation_for(search, ci) for ci in range(len(search.claims))])
