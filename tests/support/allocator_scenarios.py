"""Random allocator scenarios and the invariants every allocator decision must keep.

Shared by tests/sim/test_allocator_properties.py (a small derandomized set) and
benchmarks/bench_allocator_properties.py (10,000+ scenarios). A scenario is one node with one or two
pools of shared and exclusive devices (consumable capacity with and without request policies, shared
counters; now and then an incomplete or an invalid pool), existing allocations made by the allocator
itself (some with admin access), and the claims of one pod (counts, allocationMode All,
firstAvailable, capacity requests, admin access, matchAttribute and distinctAttribute constraints).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from drakit.quantity import Quantity
from sim.allocator import MAX_RESULTS, AllocatorError, Features, Outcome, allocate
from sim.allocator_state import AllocatedState, device_id

DRIVER = "gpu.example.com"
NODE = {"metadata": {"name": "node-1", "labels": {"rack": "r1"}}}
CLASSES = {
    name: {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": name},
        "spec": {"selectors": [{"cel": {"expression": expr}}]},
    }
    for name, expr in {
        "any": f'device.driver == "{DRIVER}"',
        "shared": "device.allowMultipleAllocations == true",
        "exclusive": "device.allowMultipleAllocations == false",
        "model-a": f'device.attributes["{DRIVER}"].model == "a"',
    }.items()
}
MEMORY = ["4Gi", "8Gi", "16Gi"]
ASKS = ["512Mi", "1Gi", "2Gi", "3Gi", "5Gi"]


@dataclass
class Scenario:
    seed: int
    slices: list[dict[str, Any]]
    existing: list[dict[str, Any]]  # claims allocated before (in order), each with status.allocation
    claims: list[dict[str, Any]]
    state: AllocatedState
    features: Features = field(default_factory=Features)


def _device(rng: random.Random, name: str, counter_sets: list[str]) -> dict[str, Any]:
    d: dict[str, Any] = {
        "name": name,
        "attributes": {"model": {"string": rng.choice("ab")}, "numa": {"int": rng.randint(0, 1)}},
    }
    multi = rng.random() < 0.6
    if multi:
        d["allowMultipleAllocations"] = True
    caps: dict[str, Any] = {}
    if rng.random() < 0.85:
        value = rng.choice(MEMORY)
        caps["memory"] = {"value": value}
        if multi and rng.random() < 0.4:
            if rng.random() < 0.5:
                caps["memory"]["requestPolicy"] = {
                    "default": "1Gi",
                    "validRange": {"min": "1Gi", "step": "1Gi", "max": value},
                }
            else:
                caps["memory"]["requestPolicy"] = {"default": "1Gi", "validValues": ["1Gi", "2Gi", "4Gi"]}
    if rng.random() < 0.25:
        caps["cores"] = {"value": str(rng.choice([4, 8]))}
    if caps:
        d["capacity"] = caps
    if counter_sets and rng.random() < 0.5:
        d["consumesCounters"] = [
            {
                "counterSet": rng.choice(counter_sets),
                "counters": {"mem": {"value": rng.choice(["2Gi", "4Gi"])}},
            }
        ]
    return d


def _slices(rng: random.Random) -> list[dict[str, Any]]:
    out = []
    for p in range(rng.choice([1, 1, 2])):
        pool = f"pool-{p}"
        counter_sets = [f"cs-{i}" for i in range(rng.choice([0, 0, 1, 2]))]
        devices = [_device(rng, f"gpu-{p}-{i}", counter_sets) for i in range(rng.randint(2, 6))]
        if rng.random() < 0.04:  # a device consuming a counter set the pool lacks: an invalid pool
            devices[-1]["consumesCounters"] = [
                {"counterSet": "cs-missing", "counters": {"mem": {"value": "1Gi"}}}
            ]
        split = rng.random() < 0.3 and len(devices) > 1
        groups = [devices[: len(devices) // 2], devices[len(devices) // 2 :]] if split else [devices]
        # Now and then a slice is still missing: an incomplete pool.
        count = len(groups) + (1 if counter_sets else 0) + (1 if rng.random() < 0.04 else 0)
        for i, group in enumerate(groups):
            out.append(
                {
                    "apiVersion": "resource.k8s.io/v1",
                    "kind": "ResourceSlice",
                    "metadata": {"name": f"{pool}-dev-{i}", "uid": f"{pool}-dev-{i}", "resourceVersion": "1"},
                    "spec": {
                        "driver": DRIVER,
                        "nodeName": "node-1",
                        "devices": group,
                        "pool": {"name": pool, "generation": 1, "resourceSliceCount": count},
                    },
                }
            )
        if counter_sets:
            out.append(
                {
                    "apiVersion": "resource.k8s.io/v1",
                    "kind": "ResourceSlice",
                    "metadata": {
                        "name": f"{pool}-counters",
                        "uid": f"{pool}-counters",
                        "resourceVersion": "1",
                    },
                    "spec": {
                        "driver": DRIVER,
                        "nodeName": "node-1",
                        "pool": {"name": pool, "generation": 1, "resourceSliceCount": count},
                        "sharedCounters": [
                            {"name": cs, "counters": {"mem": {"value": rng.choice(["4Gi", "6Gi", "8Gi"])}}}
                            for cs in counter_sets
                        ],
                    },
                }
            )
    return out


def _exactly(rng: random.Random, allow_all: bool = True) -> dict[str, Any]:
    spec: dict[str, Any] = {"deviceClassName": rng.choice(list(CLASSES))}
    if allow_all and rng.random() < 0.12:
        spec["allocationMode"] = "All"
    else:
        spec["allocationMode"] = "ExactCount"
        spec["count"] = rng.choice([1, 1, 1, 1, 2, 3])
    if rng.random() < 0.5:
        asks = {"memory": rng.choice(ASKS)}
        if rng.random() < 0.15:
            asks["cores"] = str(rng.choice([1, 2, 4]))
        spec["capacity"] = {"requests": asks}
    return spec


def _claim(rng: random.Random, name: str) -> dict[str, Any]:
    requests = []
    for r in range(rng.choice([1, 1, 1, 2, 3])):
        if rng.random() < 0.2:
            requests.append(
                {
                    "name": f"r{r}",
                    "firstAvailable": [{"name": f"s{i}", **_exactly(rng)} for i in range(rng.choice([2, 3]))],
                }
            )
        else:
            spec = _exactly(rng)
            if rng.random() < 0.08:
                spec["adminAccess"] = True
            requests.append({"name": f"r{r}", "exactly": spec})
    devices: dict[str, Any] = {"requests": requests}
    if len(requests) > 1 and rng.random() < 0.35:
        kind = rng.choice(["matchAttribute", "distinctAttribute"])
        constraint: dict[str, Any] = {kind: f"{DRIVER}/{rng.choice(['model', 'numa'])}"}
        if rng.random() < 0.5:
            constraint["requests"] = [r["name"] for r in rng.sample(requests, 2)]
        devices["constraints"] = [constraint]
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}"},
        "spec": {"devices": devices},
    }


def uuids(seed: int):
    counter = itertools.count()
    return lambda: f"{seed:08x}-0000-4000-8000-{next(counter):012d}"


def generate(seed: int) -> Scenario:
    rng = random.Random(seed)
    slices = _slices(rng)
    state = AllocatedState()
    existing = []
    new_uuid = uuids(seed)
    for i in range(rng.choice([0, 1, 2, 3, 5])):
        c = _claim(rng, f"old-{i}")
        try:
            outcome = allocate([c], NODE, slices, CLASSES, state, new_uuid=new_uuid)
        except AllocatorError:
            continue
        if outcome.ok:
            c["status"] = {"allocation": outcome.allocations[0]}
            state.set_claim(f"ns/{c['metadata']['name']}", outcome.allocations[0])
            existing.append(c)
    claims = [_claim(rng, f"c{i}") for i in range(rng.choice([1, 1, 1, 2, 3]))]
    return Scenario(seed, slices, existing, claims, state)


def run(scenario: Scenario) -> Outcome | AllocatorError:
    try:
        return allocate(
            scenario.claims,
            NODE,
            scenario.slices,
            CLASSES,
            scenario.state,
            scenario.features,
            new_uuid=uuids(scenario.seed + 1_000_000_000),
        )
    except AllocatorError as exc:
        return exc


def _devices(scenario: Scenario) -> dict[tuple[str, str, str], tuple[dict[str, Any], str]]:
    out = {}
    for s in scenario.slices:
        for d in s["spec"].get("devices") or []:
            out[(DRIVER, s["spec"]["pool"]["name"], d["name"])] = (d, s["spec"]["pool"]["name"])
    return out


def _snapshot(state: AllocatedState) -> tuple:
    return (
        dict(state._dedicated),
        {k: dict(v) for k, v in state._consumed.items()},
        dict(state._shares),
        set(state._shared_ids),
        dict(state._with_consumed),
        state.claims(),
    )


def check(scenario: Scenario, outcome: Outcome | AllocatorError) -> list[str]:
    """The invariants of one decision; returns what was violated (empty when all hold)."""
    if isinstance(outcome, AllocatorError) or not outcome.ok:
        return []
    problems: list[str] = []
    devices = _devices(scenario)
    state = scenario.state
    new = [
        (c, r)
        for c, a in zip(scenario.claims, outcome.allocations, strict=True)
        for r in a["devices"]["results"]
    ]
    # Capacity: committed + everything picked now (admin results too, while in flight) <= value.
    used: dict[tuple, dict[str, Decimal]] = {}
    for dev, totals in state._consumed.items():
        used[dev] = dict(totals)
    for _, r in new:
        for name, q in (r.get("consumedCapacity") or {}).items():
            bucket = used.setdefault(device_id(r), {})
            bucket[name] = bucket.get(name, Decimal(0)) + Quantity.parse(q).value
    for dev, totals in used.items():
        spec = devices[dev][0]
        for name, value in totals.items():
            cap = (spec.get("capacity") or {}).get(name)
            if cap is None or value > Quantity.parse(cap["value"]).value:
                problems.append(f"over capacity: {dev} {name} {value}")
    # Exclusive devices: one non-admin holder at most, across committed and new results.
    holders: dict[tuple, int] = {}
    for dev in state._dedicated:
        holders[dev] = 1
    shared_ids = {share for _, share in state.shared_ids()}
    for _, r in new:
        dev = device_id(r)
        spec = devices[dev][0]
        multi = bool(spec.get("allowMultipleAllocations"))
        if multi != ("shareID" in r):
            problems.append(f"shareID presence wrong on {dev}")
        if multi and ("consumedCapacity" in r) != bool(spec.get("capacity")):
            problems.append(f"consumedCapacity presence wrong on {dev}")
        if r.get("shareID"):
            if r["shareID"] in shared_ids:
                problems.append(f"shareID reused: {r['shareID']}")
            shared_ids.add(r["shareID"])
        if r.get("adminAccess"):
            continue
        if multi and dev in state._dedicated:
            problems.append(f"shared device held exclusively got a share: {dev}")
        elif not multi:
            holders[dev] = holders.get(dev, 0) + 1
            if holders[dev] > 1:
                problems.append(f"exclusive device given twice: {dev}")
    # Requests: counts, limits, subrequests, capacity asks, distinct devices per request.
    for c, a in zip(scenario.claims, outcome.allocations, strict=True):
        results = a["devices"]["results"]
        if len(results) > MAX_RESULTS:
            problems.append(f"{c['metadata']['name']}: {len(results)} results")
        for request in c["spec"]["devices"]["requests"]:
            mine = [r for r in results if r["request"].split("/")[0] == request["name"]]
            names = {r["request"] for r in mine}
            if request.get("firstAvailable"):
                if len(names) != 1:
                    problems.append(f"{request['name']}: results for {sorted(names)}")
                    continue
                sub = next(iter(names)).split("/")[1]
                spec = next(s for s in request["firstAvailable"] if s["name"] == sub)
            else:
                spec = request["exactly"]
            if spec.get("allocationMode") == "All":
                if not mine:
                    problems.append(f"{request['name']}: All with no device")
            elif len(mine) != spec.get("count", 1):
                problems.append(f"{request['name']}: {len(mine)} devices for count {spec.get('count', 1)}")
            if len({device_id(r) for r in mine}) != len(mine):
                problems.append(f"{request['name']}: one device twice in one request")
            for r in mine:
                got = r.get("consumedCapacity") or {}
                for name, ask in ((spec.get("capacity") or {}).get("requests") or {}).items():
                    if name in got and Quantity.parse(got[name]) < Quantity.parse(ask):
                        problems.append(f"{request['name']}: {name} {got[name]} < asked {ask}")
        # matchAttribute holds over the constrained requests.
        for constraint in c["spec"]["devices"].get("constraints") or []:
            wanted = constraint.get("requests")
            scoped = [r for r in results if not wanted or r["request"].split("/")[0] in wanted]
            attr = (constraint.get("matchAttribute") or constraint.get("distinctAttribute")).split("/")[1]
            values = [devices[device_id(r)][0]["attributes"][attr] for r in scoped]
            if constraint.get("matchAttribute") and any(v != values[0] for v in values):
                problems.append(f"matchAttribute {attr} broken: {values}")
            one_each = all(
                len([r for r in scoped if r["request"].split("/")[0] == name]) <= 1
                for name in {r["request"].split("/")[0] for r in scoped}
            )
            if (
                constraint.get("distinctAttribute")
                and one_each
                and len({str(v) for v in values}) != len(values)
            ):
                problems.append(f"distinctAttribute {attr} broken: {values}")
    # Shared counters: every device in use pays once; nothing goes over.
    in_use = {dev for dev in devices if state.is_allocated(dev)} | {device_id(r) for _, r in new}
    for s in scenario.slices:
        for cs in s["spec"].get("sharedCounters") or []:
            pool = s["spec"]["pool"]["name"]
            total = sum(
                (
                    Quantity.parse(use["counters"]["mem"]["value"]).value
                    for dev in in_use
                    if dev[1] == pool
                    for use in devices[dev][0].get("consumesCounters") or []
                    if use["counterSet"] == cs["name"]
                ),
                Decimal(0),
            )
            if total > Quantity.parse(cs["counters"]["mem"]["value"]).value:
                problems.append(f"counter set {pool}/{cs['name']} over: {total}")
    # Release is exact: committing and then dropping the new allocations restores the state.
    before = _snapshot(state)
    for c, a in zip(scenario.claims, outcome.allocations, strict=True):
        state.set_claim(f"ns/{c['metadata']['name']}", a)
    for c in scenario.claims:
        state.set_claim(f"ns/{c['metadata']['name']}", None)
    if _snapshot(state) != before:
        problems.append("release not exact")
    return problems


def classify(outcome: Outcome | AllocatorError) -> str:
    if isinstance(outcome, AllocatorError):
        return "fatal error"
    return "allocated" if outcome.ok else outcome.reason
