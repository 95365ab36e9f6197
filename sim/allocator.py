"""The DRA structured-parameters allocator, as upstream's incubating variant decides (KEP-5075).

Pure: inputs are plain dicts (slices, device classes, claims), the node, an `AllocatedState` and the
feature gates; output is one `status.allocation` per claim, or the node-level reason why not, or an
`AllocatorError` carrying upstream's fatal text. No I/O, no clock.

The search mirrors upstream's `allocateOne`/`allocateDevice` step for step (docs/allocator-rules.md),
quirks included: the check order, what is and is not rolled back on backtracking, and the 32-results
limit with its backtracking signal.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from drakit.quantity import MissingCapacity, Quantity, consumed_capacity, to_json
from sim.allocator_constraints import build_constraints
from sim.allocator_counters import CounterLedger, consumes
from sim.allocator_pools import Pool, device_visible, gather_pools
from sim.allocator_state import AllocatedState, DeviceID, parse_quantity_cached
from sim.cel import (
    CelCompileError,
    CelError,
    CelRuntimeError,
    DeviceInput,
    compile_selector,
    device_key,
    device_variable,
)

MAX_RESULTS = 32
CANNOT_ALLOCATE = "cannot allocate all claims"
INVALID_POOLS = "invalid resource pools were encountered"
# upstream cel.EnhanceRuntimeError's hint for a missing map key
NO_SUCH_KEY_HINT = (
    "consider using CEL optional chaining (.? followed by orValue()) or guarding the check "
    "with has() for optional fields"
)


class AllocatorError(Exception):
    """A fatal allocator error: scheduling of the pod aborts with this text."""


class _MaxResultsExceeded(Exception):
    """upstream errAllocationResultMaxSizeExceeded: backtrack further, try another subrequest."""


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


def enhance_runtime_error(text: str) -> str:
    """upstream cel.EnhanceRuntimeError: a missing key gets the optional-chaining hint (once)."""
    if "no such key:" in text and NO_SUCH_KEY_HINT not in text:
        return f"{text}. {NO_SUCH_KEY_HINT}"
    return text


# (request's capacity asks, device capacity) -> what the request takes of every capacity, or None when
# the device is ineligible (a capacity it lacks, a policy violation). Content-keyed, so shared by calls.
_CONSUMED: dict[tuple, dict[str, Quantity] | None] = {}
_CONSUMED_MAX = 16384


def _consumption(
    asks: Mapping[str, Quantity] | None, asks_sig: tuple | None, capacity: Mapping[str, Any], cap_sig: str
) -> dict[str, Quantity] | None:
    key = (asks_sig, cap_sig)
    if key in _CONSUMED:
        return _CONSUMED[key]
    try:
        # Keys match exactly (R2): `<driver>/memory` in a request is not a device's `memory`.
        hit = consumed_capacity(asks, capacity)
    except MissingCapacity:
        hit = None
    if len(_CONSUMED) >= _CONSUMED_MAX:
        _CONSUMED.clear()
    _CONSUMED[key] = hit
    return hit


class DeviceRef:
    """One device of one slice, with what the search reads precomputed once per slice version."""

    __slots__ = (
        "cap_sig",
        "cap_values",
        "capacity",
        "cel_keys",
        "counters",
        "device",
        "id",
        "index",
        "multi",
        "pool",
        "slice",
    )

    def __init__(self, pool: Pool, slice_: Mapping[str, Any], device: Mapping[str, Any], index: int) -> None:
        self.pool = pool
        self.slice = slice_
        self.device = device
        self.id: DeviceID = (pool.driver, pool.name, device.get("name", ""))
        capacity: Mapping[str, Mapping[str, Any]] = device.get("capacity") or {}  # exact keys (R2)
        self.capacity = capacity
        self.cap_values = (
            {k: parse_quantity_cached(v.get("value", "0")).value for k, v in capacity.items()}
            if capacity
            else {}
        )
        self.cap_sig: str | None = None  # content key of `capacity`, made when first needed
        # content keys of the CEL `device` variable, without and with DRAConsumableCapacity; made when
        # first needed (a DeviceRef lives as long as its slice version: content does not change)
        self.cel_keys: list[tuple | None] = [None, None]
        self.multi = bool(device.get("allowMultipleAllocations"))
        self.counters = consumes(device) if device.get("consumesCounters") else []
        self.index = index  # position in the node's device list

    @property
    def id_text(self) -> str:
        return "/".join(self.id)  # only error texts need it


# A selector's outcome on one device: True/False, or the runtime error's text. Errors are kept as text
# and raised afresh each time: re-raising one cached exception object would grow its traceback (and keep
# every search's frames alive) with each call.
_Evaluated = bool | str
_RESULTS_MAX = 16384
_VARS_MAX = 4096  # each holds a decoded device in the Go library

# Shared by every call in the process and keyed by content (`sim.cel.device_key`): the same devices come
# back call after call (every scheduling cycle reads the same slices), and neither a decoded device nor
# a selector's outcome depends on anything but the expression and that content.
_SHARED_VARS: dict[tuple, DeviceInput | str] = {}  # decoded `device` variable, or why it cannot be
_SHARED_RESULTS: dict[tuple, _Evaluated] = {}


def clear_shared_cache() -> None:
    """Forget every decoded device and selector outcome (benchmarks measure a first sight so)."""
    _SHARED_VARS.clear()
    _SHARED_RESULTS.clear()


class SelectorCache:
    """Caches `device` CEL variables and selector outcomes per device content.

    Keys are the expression and what the `device` variable is made of (driver, attributes, capacity,
    allowMultipleAllocations, the DRAConsumableCapacity gate), never a slice's name or version, so a
    republished device with other attributes is decoded and evaluated again. Decoded devices are always
    the process-wide ones; outcomes are too by default, while `shared=False` keeps them per cache
    (upstream's Allocate evaluates every selector afresh per call: the benchmark measures that so).
    """

    def __init__(self, shared: bool = True) -> None:
        self._results: dict[tuple, _Evaluated] = _SHARED_RESULTS if shared else {}

    def clear(self) -> None:
        """Drop this cache's outcomes and the decoded devices (bounds memory after slices go away)."""
        self._results.clear()
        _SHARED_VARS.clear()

    def matches(self, expression: str, dev: DeviceRef, consumable_capacity: bool) -> bool:
        """True/False, or raises CelError (compile or runtime)."""
        ckey = dev.cel_keys[consumable_capacity]
        if ckey is None:
            ckey = dev.cel_keys[consumable_capacity] = device_key(dev.id[0], dev.device, consumable_capacity)
        results = self._results
        rkey = (expression, ckey)
        hit = results.get(rkey)
        if hit is None:
            # A compile error is not a property of the device: compile_selector caches and raises it.
            program = compile_selector(expression)
            var = _SHARED_VARS.get(ckey)
            if var is None:
                try:
                    var = device_variable(dev.id[0], dev.device, consumable_capacity)
                except CelRuntimeError as exc:
                    var = str(exc)
                if len(_SHARED_VARS) >= _VARS_MAX:
                    _SHARED_VARS.clear()
                _SHARED_VARS[ckey] = var
            if isinstance(var, str):
                hit = var
            else:
                try:
                    hit = program.matches(var)
                except CelRuntimeError as exc:
                    hit = str(exc)
            if len(results) >= _RESULTS_MAX:
                results.clear()
            results[rkey] = hit
        if hit is True or hit is False:
            return hit
        raise CelRuntimeError(hit)


def pool_devices(pools: list[Pool], node: Mapping[str, Any]) -> list[DeviceRef]:
    """Devices in search order: pools by driver then name, slices by name, devices in slice order.

    Incomplete and invalid pools carry no slices, so they contribute nothing; devices of a slice with
    per-device node selection that the node cannot reach are left out (upstream's isSelectable).
    """
    out: list[DeviceRef] = []
    for pool in pools:
        for s in pool.slices:
            spec = s.get("spec") or {}
            per_device = spec.get("perDeviceNodeSelection")
            for d in spec.get("devices") or []:
                if per_device and not device_visible(spec, d, node):
                    continue
                out.append(DeviceRef(pool, s, d, len(out)))
    return out


class _Request:
    """One request without subrequests, or one subrequest (upstream's requestData)."""

    __slots__ = (
        "admin",
        "all_devices",
        "all_mode",
        "asks_sig",
        "capacity_requests",
        "claim_index",
        "cls",
        "consumed",
        "count",
        "match",
        "name",
        "parent",
        "spec",
    )

    def __init__(
        self,
        claim_index: int,
        name: str,
        parent: str | None,
        spec: Mapping[str, Any],
        cls: Mapping[str, Any],
        admin: bool,
    ) -> None:
        self.claim_index = claim_index
        self.name = name  # upstream request.name(): the bare subrequest name for a subrequest
        self.parent = parent
        self.spec = spec
        self.cls = cls
        self.admin = admin
        self.all_mode = False
        self.count = 1
        self.all_devices: list[DeviceRef] = []
        self.capacity_requests: dict[str, Quantity] | None = None
        self.asks_sig: tuple | None = None
        self.match: dict[int, bool] = {}  # device index -> selectable (upstream deviceMatchesRequest)
        # device index -> what this request takes of every capacity of the device; None: ineligible
        self.consumed: dict[int, dict[str, Quantity] | None] = {}

    @property
    def result_name(self) -> str:
        return f"{self.parent}/{self.name}" if self.parent else self.name

    @property
    def num_devices(self) -> int:
        return len(self.all_devices) if self.all_mode else self.count


class _Result:
    __slots__ = ("consumed", "dev", "request", "share_id")

    def __init__(
        self, request: _Request, dev: DeviceRef, consumed: dict[str, Quantity] | None, share_id: str | None
    ) -> None:
        self.request = request
        self.dev = dev
        self.consumed = consumed
        self.share_id = share_id


class _Search:
    def __init__(
        self,
        claims: list[Mapping[str, Any]],
        pools: list[Pool],
        devices: list[DeviceRef],
        state: AllocatedState,
        features: Features,
        cache: SelectorCache,
        new_uuid: Callable[[], str],
    ) -> None:
        self.claims = claims
        self.pools = pools
        self.devices = devices
        self.state = state
        self.features = features
        self.cc = features.consumable_capacity
        self.cache = cache
        self.new_uuid = new_uuid
        self.constraints: list[list[Any]] = []
        self.plan: list[list[list[_Request]]] = []  # claim -> request -> alternatives
        self.selected: list[list[int]] = []  # claim -> request -> chosen subrequest
        self.results: list[list[_Result]] = [[] for _ in claims]
        self.allocating_devices: dict[DeviceID, set[int]] = {}  # exclusive device -> claim indices
        self.allocating_capacity: dict[DeviceID, dict[str, Decimal]] = {}
        self.counters = CounterLedger(state.is_allocated)
        # (class name, the request's own selector expressions) -> device index -> selectable: requests
        # that select alike share one map. Only outcomes are kept; a CEL error ends the whole call.
        self.match_maps: dict[tuple, dict[int, bool]] = {}

    # -- selectors (upstream isSelectable / selectorsMatch) --
    def _selectors_match(
        self, req: _Request, dev: DeviceRef, selectors: list[Mapping[str, Any]], cls: Mapping[str, Any] | None
    ) -> bool:
        for i, sel in enumerate(selectors):
            expr = (sel.get("cel") or {}).get("expression", "")
            try:
                if not self.cache.matches(expr, dev, self.cc):
                    return False
            except CelCompileError as exc:
                where = (
                    f"class {_name(cls)}"
                    if cls is not None
                    else f"claim {claim_ref(self.claims[req.claim_index])}"
                )
                raise AllocatorError(f"{where}: selector #{i}: CEL compile error: {exc}") from None
            except CelError as exc:
                where = (
                    f"class {_name(cls)}"
                    if cls is not None
                    else f"claim {claim_ref(self.claims[req.claim_index])}"
                )
                raise AllocatorError(
                    f"{where}: selector #{i} on device {dev.id_text}: CEL runtime error: "
                    f"{enhance_runtime_error(str(exc))}"
                ) from None
        return True

    def selectable(self, req: _Request, dev: DeviceRef) -> bool:
        hit = req.match.get(dev.index)
        if hit is None:
            class_selectors = (req.cls.get("spec") or {}).get("selectors") or []
            hit = self._selectors_match(req, dev, class_selectors, req.cls) and self._selectors_match(
                req, dev, req.spec.get("selectors") or [], None
            )
            req.match[dev.index] = hit
        return hit

    # -- capacity (upstream CmpRequestOverCapacity; rules section 3) --
    def _consumed(self, req: _Request, dev: DeviceRef) -> dict[str, Quantity] | None:
        if dev.index in req.consumed:
            return req.consumed[dev.index]
        if dev.cap_sig is None:
            # repr of the parsed JSON tells apart every capacity that could consume differently; two
            # key orders of one mapping only cost a second computation
            dev.cap_sig = repr(dev.capacity) if dev.capacity else ""
        hit = req.consumed[dev.index] = _consumption(
            req.capacity_requests, req.asks_sig, dev.capacity, dev.cap_sig
        )
        return hit

    def capacity_fits(self, req: _Request, dev: DeviceRef) -> bool:
        """For every device, exclusive ones included: committed shares (even stale ones on a device
        that is no longer multi-allocatable, R3) + in-flight shares + this request <= capacity."""
        consumed = self._consumed(req, dev)
        if consumed is None:
            return False
        if not consumed:
            return True
        committed = self.state.consumed(dev.id)
        allocating = self.allocating_capacity.get(dev.id)
        values = dev.cap_values
        for name, q in consumed.items():
            total = q.value
            if committed:
                total += committed.get(name, 0)
            if allocating:
                total += allocating.get(name, 0)
            if total > values[name]:
                return False
        return True

    def in_use(self, dev_id: DeviceID) -> bool:
        return self.state.is_dedicated(dev_id) or bool(self.allocating_devices.get(dev_id))

    # -- one device (upstream allocateDevice) --
    def allocate_device(self, req: _Request, dev: DeviceRef, must: bool) -> Callable[[], None] | None:
        ci = req.claim_index
        dev_id = dev.id
        multi = self.cc and dev.multi
        if not multi and req.admin and ci in self.allocating_devices.get(dev_id, ()):
            return None
        if not req.admin and self.in_use(dev_id):
            return None
        if dev.counters and not self.features.partitionable_devices:
            return None
        # A shared device pays its counters once: not while it has committed or in-flight consumption.
        skip_counters = multi and (self.state.has_consumed(dev_id) or dev_id in self.allocating_capacity)
        if not skip_counters and dev.counters and not self.counters.take_if_available(dev.pool, dev.counters):
            return None
        base, sub = (req.parent, req.name) if req.parent else (req.name, None)
        constraints = self.constraints[ci]
        for i, c in enumerate(constraints):
            if not c.add(base, sub, dev.device, dev_id[0]):
                if must:
                    raise AllocatorError(
                        f"claim {claim_ref(self.claims[ci])}, request {req.name}: cannot add device "
                        f"{dev.id_text} because a claim constraint would not be satisfied"
                    )
                for e in range(i):
                    constraints[e].remove(base, sub, dev.device, dev_id[0])
                return None  # QUIRK (R14): counters taken above stay taken
        if not multi:
            self.allocating_devices.setdefault(dev_id, set()).add(ci)
        consumed: dict[str, Quantity] | None = None
        share_id = None
        if self.cc:
            if not self.capacity_fits(req, dev):
                # QUIRK (R6): constraints, counters and the in-use mark are not rolled back here.
                return None
            if multi:
                consumed = self._consumed(req, dev) or {}
                share_id = self.new_uuid()
                bucket = self.allocating_capacity.setdefault(dev_id, {})
                for name, q in consumed.items():
                    bucket[name] = bucket.get(name, 0) + q.value
        result = _Result(req, dev, consumed or None, share_id)
        results = self.results[ci]
        results.append(result)

        def undo() -> None:
            for c in constraints:
                c.remove(base, sub, dev.device, dev_id[0])
            holders = self.allocating_devices.get(dev_id)
            if holders is not None:
                holders.discard(ci)
            if multi:
                if result.consumed:
                    bucket = self.allocating_capacity.get(dev_id)
                    if bucket is not None:
                        for name, q in result.consumed.items():
                            if name in bucket:
                                bucket[name] -= q.value
                        if all(v == 0 for v in bucket.values()):
                            del self.allocating_capacity[dev_id]
                # QUIRK (R7): counters of a multi-allocatable device are not released.
            elif dev.counters and self.features.partitionable_devices:
                self.counters.release(dev.pool, dev.counters)
            results.pop()

        return undo

    # -- depth-first search (upstream allocateOne; rules section 12) --
    def allocate_one(self, ci: int, ri: int, si: int, di: int, in_sub: bool, start: int) -> bool:
        if ci >= len(self.plan):
            return True
        claim_plan = self.plan[ci]
        if ri >= len(claim_plan):
            try:
                return self.allocate_one(ci + 1, 0, 0, 0, False, 0)
            except _MaxResultsExceeded:
                return False  # another allocation of this claim may let a later one fit
        alternatives = claim_plan[ri]
        req = alternatives[si]
        if not in_sub and req.parent is not None:
            # firstAvailable: subrequests in order, the first that leads to a full solution wins.
            all_exceeded = True
            for sub_i in range(len(alternatives)):
                try:
                    ok = self.allocate_one(ci, ri, sub_i, 0, True, 0)
                except _MaxResultsExceeded:
                    continue
                all_exceeded = False
                if ok:
                    self.selected[ci][ri] = sub_i
                    return True
            if all_exceeded:
                raise _MaxResultsExceeded
            return False
        if req.all_mode and not req.all_devices:
            return False  # an empty "all" set fails the request (section 8)
        num_devices = req.num_devices
        if di >= num_devices:
            return self.allocate_one(ci, ri + 1, 0, 0, False, 0)
        if len(self.results[ci]) + num_devices - di > MAX_RESULTS:
            raise _MaxResultsExceeded  # R11: counts the results this claim actually gets
        if req.all_mode:
            undo = self.allocate_device(req, req.all_devices[di], must=True)
            if undo is None:
                return False
            try:
                done = self.allocate_one(ci, ri, si, di + 1, in_sub, 0)
            except Exception:
                undo()
                raise
            if not done:
                undo()
            return done
        admin = req.admin
        allocating = self.allocating_devices
        devices = self.devices
        for pos in range(start, len(devices)):
            dev = devices[pos]
            if admin:
                if ci in allocating.get(dev.id, ()):
                    continue
            elif self.in_use(dev.id):
                continue
            if not self.selectable(req, dev):
                continue
            if self.cc and not self.capacity_fits(req, dev):
                continue
            undo = self.allocate_device(req, dev, must=False)
            if undo is None:
                continue
            # Next slot of the same request starts after this device: combinations, not permutations.
            try:
                done = self.allocate_one(ci, ri, si, di + 1, in_sub, pos + 1)
            except Exception:
                undo()
                raise
            if done:
                return True
            undo()
        return False


def _prepare_request(
    search: _Search,
    classes: Mapping[str, Mapping[str, Any]],
    ci: int,
    spec: Mapping[str, Any],
    name: str,
    parent: str | None,
) -> _Request:
    """upstream validateDeviceRequest: checks in upstream's order, then the "all" candidate set."""
    ref = claim_ref(search.claims[ci])
    for i, sel in enumerate(spec.get("selectors") or []):
        if not (sel or {}).get("cel"):
            raise AllocatorError(
                f"claim {ref}, request {name}, selector #{i}: CEL expression empty "
                "(unsupported selector type?)"
            )
    # Subrequests have no adminAccess field in resource.k8s.io/v1.
    has_admin = parent is None and spec.get("adminAccess") is not None
    if has_admin and not search.features.admin_access:
        raise AllocatorError(
            f"claim {ref}, request {name}: admin access is requested, but the feature is disabled"
        )
    class_name = spec.get("deviceClassName") or ""
    if not class_name:
        raise AllocatorError(
            f"claim {ref}, request {name}: missing device class name (unsupported request type?)"
        )
    cls = classes.get(class_name)
    if cls is None:
        raise AllocatorError(
            f"claim {ref}, request {name}: could not retrieve device class {class_name}: "
            f'deviceclass.resource.k8s.io "{class_name}" not found'
        )
    req = _Request(ci, name, parent, spec, cls, has_admin and bool(spec.get("adminAccess")))
    own = tuple((sel.get("cel") or {}).get("expression", "") for sel in spec.get("selectors") or [])
    req.match = search.match_maps.setdefault((class_name, own), {})
    cap = spec.get("capacity")
    if cap is not None and search.cc and cap.get("requests") is not None:
        req.capacity_requests = {k: parse_quantity_cached(v) for k, v in cap["requests"].items()}
        req.asks_sig = tuple(sorted((k, q.value, q.format) for k, q in req.capacity_requests.items()))
    mode = spec.get("allocationMode") or "ExactCount"
    if mode == "ExactCount":
        req.count = int(spec.get("count") or 1)
    elif mode == "All":
        req.all_mode = True
        by_pool: dict[int, list[DeviceRef]] = {}
        for dev in search.devices:
            by_pool.setdefault(id(dev.pool), []).append(dev)
        for pool in search.pools:
            if pool.incomplete:
                raise AllocatorError(
                    f"claim {ref}, request {name}: asks for all devices, but resource pool "
                    f"{pool.driver}/{pool.name} is currently being updated"
                )
            if pool.invalid:
                raise AllocatorError(
                    f"claim {ref}, request {name}: asks for all devices, but resource pool "
                    f"{pool.driver}/{pool.name} is currently invalid"
                )
            for dev in by_pool.get(id(pool), ()):
                # Fixed before the search, against committed consumption only (section 8).
                if search.selectable(req, dev) and (not search.cc or search.capacity_fits(req, dev)):
                    req.all_devices.append(dev)
    else:
        raise AllocatorError(f"claim {ref}, request {name}: unsupported count mode {mode}")
    return req


def _prepare(search: _Search, classes: Mapping[str, Mapping[str, Any]]) -> None:
    features = search.features
    for ci, claim in enumerate(search.claims):
        ref = claim_ref(claim)
        devices_spec = (claim.get("spec") or {}).get("devices") or {}
        claim_plan: list[list[_Request]] = []
        min_devices = 0
        for request in devices_spec.get("requests") or []:
            name = request.get("name", "")
            subs = request.get("firstAvailable") or []
            if subs and not features.prioritized_list:
                raise AllocatorError(
                    f"claim {ref}, request {name}: has subrequests, but the "
                    "DRAPrioritizedList feature is disabled"
                )
            if not features.consumable_capacity:
                exactly = request.get("exactly")
                if exactly is not None and exactly.get("capacity") is not None:
                    raise AllocatorError(
                        f"claim {ref}, request {name}: has capacity requests, but the "
                        "DRAConsumableCapacity feature is disabled"
                    )
                for sub in subs:
                    if sub.get("capacity") is not None:
                        raise AllocatorError(
                            f"claim {ref}, subrequest {sub.get('name', '')}: has capacity "
                            "requests, but the DRAConsumableCapacity feature is disabled"
                        )
            if subs:
                alts = [_prepare_request(search, classes, ci, sub, sub.get("name", ""), name) for sub in subs]
                min_devices += min(a.num_devices for a in alts)
            else:
                alts = [_prepare_request(search, classes, ci, request.get("exactly") or {}, name, None)]
                min_devices += alts[0].num_devices
            claim_plan.append(alts)
        # R11: "all" requests count with their candidate set, firstAvailable with its smallest choice.
        if min_devices > MAX_RESULTS:
            raise AllocatorError(
                f"claim {ref}: number of requested devices {min_devices} exceeds the claim "
                f"limit of {MAX_RESULTS}"
            )
        specs = devices_spec.get("constraints") or []
        for i, spec in enumerate(specs):
            if not spec.get("matchAttribute") and not spec.get("distinctAttribute"):
                raise AllocatorError(
                    f"claim {ref}, constraint #{i}: empty constraint (unsupported constraint type?)"
                )
        search.constraints.append(build_constraints(specs, features.consumable_capacity))
        search.plan.append(claim_plan)
        search.selected.append([0] * len(claim_plan))


def _node_selector(results: list[_Result], node_name: str) -> dict[str, Any] | None:
    term: dict[str, list] = {"matchFields": [], "matchExpressions": []}
    for r in results:
        spec = r.dev.slice.get("spec") or {}
        src = r.dev.device if spec.get("perDeviceNodeSelection") else spec
        if src.get("nodeName"):
            return {
                "nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node_name]}]}
                ]
            }
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


def _allocation_for(search: _Search, ci: int, node_name: str) -> dict[str, Any]:
    claim = search.claims[ci]
    mine = search.results[ci]
    out_results = []
    for r in mine:
        entry: dict[str, Any] = {
            "request": r.request.result_name,
            "driver": r.dev.id[0],
            "pool": r.dev.id[1],
            "device": r.dev.id[2],
        }
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
    selector = _node_selector(mine, node_name)
    if selector is not None:
        allocation["nodeSelector"] = selector
    return allocation


def _allow_depth(search: _Search) -> None:
    """The search recurses once per device, request and claim (as upstream's allocateOne does); make
    sure Python's recursion limit covers the deepest path of this pod, e.g. 128 claims of 32 devices."""
    depth = 100 + sum(
        2 + sum(3 + max(r.num_devices for r in alts) for alts in claim_plan) for claim_plan in search.plan
    )
    if depth + 200 > sys.getrecursionlimit():
        sys.setrecursionlimit(depth + 1000)  # never lowered: other threads may be deep too


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
        pools = gather_pools(slices, node, features.partitionable_devices)
    if devices is None:
        devices = pool_devices(pools, node)
    search = _Search(list(claims), pools, devices, state, features, cache or SelectorCache(), new_uuid)
    _prepare(search, classes)
    _allow_depth(search)
    try:
        done = search.allocate_one(0, 0, 0, 0, False, 0)
    except _MaxResultsExceeded:
        raise AllocatorError("allocation max size exceeded") from None
    if not done:
        # Not fatal: another node may still fit; surfaced only if no node does.
        invalid = any(p.invalid for p in pools)
        return Outcome(None, INVALID_POOLS if invalid else CANNOT_ALLOCATE)
    node_name = (node.get("metadata") or {}).get("name", "")
    return Outcome([_allocation_for(search, ci, node_name) for ci in range(len(search.claims))])
