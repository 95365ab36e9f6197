# ruff: noqa: E501  (a scenario table reads best one case per line group)
"""The pure allocator against allocator-rules.md, one case per rule (section cited in each name)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from sim.allocator import AllocatorError, Features, allocate
from sim.allocator_state import AllocatedState
from tests.support.allocator_builders import (
    RANGE_POLICY,
    claim,
    device,
    device_class,
    exactly,
    node,
    slice_,
)


@dataclass
class Case:
    slices: list[dict]
    claims: list[dict]
    # Expected per claim: list of (request, device, consumed memory or None for exclusive).
    want: list[list[tuple[str, str, str | None]]] | None = None
    reason: str = ""
    fatal: str = ""
    committed: list[dict] = field(default_factory=list)  # claims whose allocation is already committed
    features: Features = field(default_factory=Features)
    classes: list[dict] = field(default_factory=lambda: [device_class()])
    node: dict = field(default_factory=node)


def committed(name: str, results: list[dict]) -> dict:
    c = claim(name, ("gpu", exactly()))
    c["status"] = {"allocation": {"devices": {"results": results}}}
    return c


def shared(dev: str, memory: str, request: str = "gpu", admin: bool = False) -> dict:
    r = {
        "request": request,
        "driver": "gpu.example.com",
        "pool": "node-1",
        "device": dev,
        "shareID": str(uuid.uuid4()),
        "consumedCapacity": {"memory": memory},
    }
    if admin:
        r["adminAccess"] = True
    return r


def dedicated(dev: str) -> dict:
    return {"request": "gpu", "driver": "gpu.example.com", "pool": "node-1", "device": dev}


def one(*devices: dict, **kw: Any) -> list[dict]:
    return [slice_("node-1-gpus", list(devices), **kw)]


def part(name: str, memory: str, multi: bool = False) -> dict:
    d = device(name, memory=memory, multi=multi)
    d["consumesCounters"] = [{"counterSet": "gpu-0-counters", "counters": {"memory": {"value": memory}}}]
    return d


def counters_pool(*devices: dict) -> list[dict]:
    counters = slice_("node-1-counters", [], count=2)
    del counters["spec"]["devices"]
    counters["spec"]["sharedCounters"] = [
        {"name": "gpu-0-counters", "counters": {"memory": {"value": "24Gi"}}}
    ]
    return [counters, slice_("node-1-gpus", list(devices), count=2)]


NOT_WHOLE = 'device.attributes["gpu.example.com"].uuid != "uuid-whole"'
P = RANGE_POLICY
CASES: dict[str, Case] = {
    # --- section 1: gating ---
    "s1-gate-off-capacity-request-is-fatal": Case(
        one(device("gpu-0")),
        [claim("c", ("gpu", exactly("6Gi")))],
        fatal="claim default/c, request gpu: has capacity requests, but the DRAConsumableCapacity feature "
        "is disabled",
        features=Features(consumable_capacity=False),
    ),
    "s1-gate-off-empty-capacity-block-is-fatal": Case(
        one(device("gpu-0")),
        [claim("c", ("gpu", exactly(empty_capacity=True)))],
        fatal="has capacity requests, but the DRAConsumableCapacity feature is disabled",
        features=Features(consumable_capacity=False),
    ),
    "s1-gate-off-subrequest-names-bare-subrequest": Case(
        one(device("gpu-0")),
        [
            claim(
                "c",
                first_available={
                    "gpu": [
                        {
                            "name": "big",
                            "deviceClassName": "gpu.example.com",
                            "capacity": {"requests": {"memory": "1Gi"}},
                        }
                    ]
                },
            )
        ],
        fatal="claim default/c, subrequest big: has capacity requests",
        features=Features(consumable_capacity=False),
    ),
    "s1-gate-off-shared-device-is-exclusive": Case(
        one(device("gpu-0")),
        [claim("a", ("gpu", exactly())), claim("b", ("gpu", exactly()))],
        reason="cannot allocate all claims",
        features=Features(consumable_capacity=False),
    ),
    "s1-gate-off-no-shareid": Case(
        one(device("gpu-0")),
        [claim("a", ("gpu", exactly()))],
        want=[[("gpu", "gpu-0", None)]],
        features=Features(consumable_capacity=False),
    ),
    "s1-cel-allowMultipleAllocations-selects-shared": Case(
        one(device("gpu-0", multi=False), device("gpu-1")),
        [claim("a", ("gpu", exactly(selectors=["device.allowMultipleAllocations == true"])))],
        want=[[("gpu", "gpu-1", "24Gi")]],
    ),
    # --- section 2: device kinds ---
    "s2-shared-device-without-capacity-shares-unlimited": Case(
        one(device("gpu-0", memory=None)),
        [claim(f"c{i}", ("gpu", exactly())) for i in range(5)],
        want=[[("gpu", "gpu-0", None)]] * 5,
    ),
    "s2-exclusive-device-only-once": Case(
        one(device("gpu-0", multi=False)),
        [claim("a", ("gpu", exactly())), claim("b", ("gpu", exactly()))],
        reason="cannot allocate all claims",
    ),
    "s2-exclusive-device-in-use-by-committed-claim": Case(
        one(device("gpu-0", multi=False)),
        [claim("a", ("gpu", exactly()))],
        committed=[committed("old", [dedicated("gpu-0")])],
        reason="cannot allocate all claims",
    ),
    # --- section 3: consumed capacity ---
    "s3-request-names-missing-capacity-skips-device": Case(
        one(device("gpu-0"), device("gpu-1", extra_caps={"compute": "100"})),
        [claim("a", ("gpu", exactly(capacity={"compute": "10"})))],
        want=[[("gpu", "gpu-1", "24Gi")]],
    ),
    "s3-omitted-request-takes-whole-capacity": Case(
        one(device("gpu-0")),
        [claim("a", ("gpu", exactly())), claim("b", ("gpu", exactly("1Gi")))],
        reason="cannot allocate all claims",
    ),
    "s3-omitted-request-takes-policy-default": Case(
        one(device("gpu-0", memory="8Gi", policy=P)),
        [claim("a", ("gpu", exactly()))],
        want=[[("gpu", "gpu-0", "2Gi")]],
    ),
    "s3-no-policy-request-used-as-is": Case(
        one(device("gpu-0", memory="16Gi")),
        [claim("a", ("gpu", exactly("3Gi")))],
        want=[[("gpu", "gpu-0", "3Gi")]],
    ),
    "s3-range-below-min-raised-to-min": Case(
        one(device("gpu-0", memory="8Gi", policy=P)),
        [claim("a", ("gpu", exactly("1Gi")))],
        want=[[("gpu", "gpu-0", "2Gi")]],
    ),
    "s3-range-step-rounds-up": Case(
        one(device("gpu-0", memory="8Gi", policy=P)),
        [claim("a", ("gpu", exactly("3Gi")))],
        want=[[("gpu", "gpu-0", "4Gi")]],
    ),
    "s3-range-exact-max-fits": Case(
        one(device("gpu-0", memory="8Gi", policy=P)),
        [claim("a", ("gpu", exactly("8Gi")))],
        want=[[("gpu", "gpu-0", "8Gi")]],
    ),
    "s3-range-above-max-not-allocatable": Case(
        one(device("gpu-0", memory="16Gi", policy=P)),
        [claim("a", ("gpu", exactly("9Gi")))],
        reason="cannot allocate all claims",
    ),
    "s3-range-without-step-keeps-request": Case(
        one(
            device(
                "gpu-0", memory="8Gi", policy={"default": "1Gi", "validRange": {"min": "1Gi", "max": "8Gi"}}
            )
        ),
        [claim("a", ("gpu", exactly("3500Mi")))],
        want=[[("gpu", "gpu-0", "3500Mi")]],
    ),
    "s3-valid-values-round-up": Case(
        one(device("gpu-0", memory="4", policy={"default": "1", "validValues": ["1", "3"]})),
        [claim("a", ("gpu", exactly("2")))],
        want=[[("gpu", "gpu-0", "3")]],
    ),
    "s3-valid-values-above-all-not-allocatable": Case(
        one(device("gpu-0", memory="4", policy={"default": "1", "validValues": ["1", "2"]})),
        [claim("a", ("gpu", exactly("3")))],
        reason="cannot allocate all claims",
    ),
    "s3-valid-values-zero-shares-without-limit": Case(
        one(device("gpu-0", memory="4", policy={"default": "0", "validValues": ["0"]})),
        [claim(f"c{i}", ("gpu", exactly())) for i in range(6)],
        want=[[("gpu", "gpu-0", "0")]] * 6,
    ),
    "s3-fit-equality-allowed": Case(
        one(device("gpu-0")),
        [claim(f"c{i}", ("gpu", exactly("6Gi"))) for i in range(4)],
        want=[[("gpu", "gpu-0", "6Gi")]] * 4,
    ),
    "s3-fit-counts-committed-consumption": Case(
        one(device("gpu-0"), device("gpu-1")),
        [claim("a", ("gpu", exactly("8Gi")))],
        committed=[committed("old", [shared("gpu-0", "20Gi")])],
        want=[[("gpu", "gpu-1", "8Gi")]],
    ),
    "s3-consumed-lists-every-capacity": Case(
        one(device("gpu-0", extra_caps={"compute": "100"})),
        [claim("a", ("gpu", exactly("6Gi")))],
        want=[[("gpu", "gpu-0", "6Gi")]],
    ),
    # --- section 4: exclusive devices with capacity requests ---
    "s4-exclusive-capacity-request-filters": Case(
        one(device("gpu-0", memory="8Gi", multi=False), device("gpu-1", memory="24Gi", multi=False)),
        [claim("a", ("gpu", exactly("12Gi")))],
        want=[[("gpu", "gpu-1", None)]],
    ),
    "s4-exclusive-with-capacity-request-once": Case(
        one(device("gpu-0", multi=False)),
        [claim("a", ("gpu", exactly("1Gi"))), claim("b", ("gpu", exactly("1Gi")))],
        reason="cannot allocate all claims",
    ),
    "s4-exclusive-counts-old-shared-consumption": Case(
        one(device("gpu-0", multi=False)),
        [claim("a", ("gpu", exactly("8Gi")))],
        committed=[committed("old", [shared("gpu-0", "20Gi")])],
        reason="cannot allocate all claims",
    ),
    # --- section 5: allocated state ---
    "s5-same-pod-claims-compete-for-capacity": Case(
        one(device("gpu-0")),
        [claim("a", ("gpu", exactly("16Gi"))), claim("b", ("gpu", exactly("16Gi")))],
        reason="cannot allocate all claims",
    ),
    "s5-same-pod-claims-share-within-capacity": Case(
        one(device("gpu-0")),
        [claim("a", ("gpu", exactly("12Gi"))), claim("b", ("gpu", exactly("12Gi")))],
        want=[[("gpu", "gpu-0", "12Gi")], [("gpu", "gpu-0", "12Gi")]],
    ),
    "s5-shared-device-with-dedicated-result-not-allocatable": Case(
        one(device("gpu-0")),
        [claim("a", ("gpu", exactly("1Gi")))],
        committed=[committed("old", [dedicated("gpu-0")])],
        reason="cannot allocate all claims",
    ),
    "s5-admin-results-do-not-consume": Case(
        one(device("gpu-0")),
        [claim("a", ("gpu", exactly("24Gi")))],
        committed=[committed("old", [shared("gpu-0", "24Gi", admin=True)])],
        want=[[("gpu", "gpu-0", "24Gi")]],
    ),
    # --- section 6: the same device more than once ---
    "s6-two-requests-same-claim-same-shared-device": Case(
        one(device("gpu-0")),
        [claim("a", ("r0", exactly("6Gi")), ("r1", exactly("6Gi")))],
        want=[[("r0", "gpu-0", "6Gi"), ("r1", "gpu-0", "6Gi")]],
    ),
    "s6-count-two-never-same-device": Case(
        one(device("gpu-0")),
        [claim("a", ("gpu", exactly("1Gi", count=2)))],
        reason="cannot allocate all claims",
    ),
    "s6-count-two-takes-two-devices": Case(
        one(device("gpu-0"), device("gpu-1")),
        [claim("a", ("gpu", exactly("1Gi", count=2)))],
        want=[[("gpu", "gpu-0", "1Gi"), ("gpu", "gpu-1", "1Gi")]],
    ),
    "s6-backtracking-moves-first-request": Case(
        one(device("gpu-0", memory="8Gi"), device("gpu-1", memory="16Gi")),
        [
            claim(
                "a",
                ("r0", exactly("4Gi")),
                (
                    "r1",
                    exactly("12Gi", selectors=['device.attributes["gpu.example.com"].uuid == "uuid-gpu-1"']),
                ),
                ("r2", exactly("8Gi")),
            )
        ],
        want=[[("r0", "gpu-1", "4Gi"), ("r1", "gpu-1", "12Gi"), ("r2", "gpu-0", "8Gi")]],
    ),
    # --- section 8: allocationMode All ---
    "s8-all-mode-drops-insufficient-shared": Case(
        one(device("gpu-0"), device("gpu-1")),
        [claim("a", ("gpu", exactly("8Gi", mode="All")))],
        committed=[committed("old", [shared("gpu-0", "20Gi")])],
        want=[[("gpu", "gpu-1", "8Gi")]],
    ),
    "s8-all-mode-drops-missing-capacity": Case(
        one(device("gpu-0", extra_caps={"compute": "10"}), device("gpu-1")),
        [claim("a", ("gpu", exactly(mode="All", capacity={"compute": "1"})))],
        want=[[("gpu", "gpu-0", "24Gi")]],
    ),
    "s8-all-mode-every-device-own-share": Case(
        one(device("gpu-0"), device("gpu-1")),
        [claim("a", ("gpu", exactly("1Gi", mode="All")))],
        want=[[("gpu", "gpu-0", "1Gi"), ("gpu", "gpu-1", "1Gi")]],
    ),
    "s8-all-mode-exclusive-in-use-fails": Case(
        one(device("gpu-0", multi=False), device("gpu-1", multi=False)),
        [claim("a", ("gpu", exactly(mode="All")))],
        committed=[committed("old", [dedicated("gpu-0")])],
        reason="cannot allocate all claims",
    ),
    "s8-all-mode-in-flight-insufficient-fails": Case(
        one(device("gpu-0"), device("gpu-1")),
        [claim("a", ("r0", exactly("20Gi")), ("r1", exactly("8Gi", mode="All")))],
        reason="cannot allocate all claims",
    ),
    "s8-all-mode-empty-set-fails": Case(
        one(device("gpu-0")),
        [claim("a", ("gpu", exactly(mode="All", selectors=["false"])))],
        reason="cannot allocate all claims",
    ),
    "s8-all-mode-incomplete-pool-fatal": Case(
        one(device("gpu-0"), count=2),
        [claim("a", ("gpu", exactly(mode="All")))],
        fatal="asks for all devices, but resource pool gpu.example.com/node-1 is currently being updated",
    ),
    "s8-all-mode-constraint-failure-fatal": Case(
        one(
            device("gpu-0", attrs={"model": {"string": "a"}}),
            device("gpu-1", attrs={"model": {"string": "b"}}),
        ),
        [
            claim(
                "a",
                ("gpu", exactly("1Gi", mode="All")),
                constraints=[{"matchAttribute": "gpu.example.com/model"}],
            )
        ],
        fatal="cannot add device gpu.example.com/node-1/gpu-1 because a claim constraint would not be satisfied",
    ),
    # --- section 9: adminAccess ---
    "s9-admin-ignores-dedicated-in-use": Case(
        one(device("gpu-0", multi=False)),
        [claim("a", ("gpu", exactly(admin=True)))],
        committed=[committed("old", [dedicated("gpu-0")])],
        want=[[("gpu", "gpu-0", None)]],
    ),
    "s9-admin-still-checks-capacity": Case(
        one(device("gpu-0")),
        [claim("a", ("gpu", exactly("8Gi", admin=True)))],
        committed=[committed("old", [shared("gpu-0", "20Gi")])],
        reason="cannot allocate all claims",
    ),
    "s9-admin-disabled-is-fatal": Case(
        one(device("gpu-0")),
        [claim("a", ("gpu", exactly(admin=True)))],
        fatal="admin access is requested, but the feature is disabled",
        features=Features(admin_access=False),
    ),
    # --- section 10: distinctAttribute / matchAttribute ---
    "s10-distinct-keeps-requests-apart": Case(
        one(device("gpu-0"), device("gpu-1")),
        [
            claim(
                "a",
                ("r0", exactly("1Gi")),
                ("r1", exactly("1Gi")),
                constraints=[{"distinctAttribute": "gpu.example.com/uuid"}],
            )
        ],
        want=[[("r0", "gpu-0", "1Gi"), ("r1", "gpu-1", "1Gi")]],
    ),
    "s10-distinct-one-device-unschedulable": Case(
        one(device("gpu-0")),
        [
            claim(
                "a",
                ("r0", exactly("1Gi")),
                ("r1", exactly("1Gi")),
                constraints=[{"distinctAttribute": "gpu.example.com/uuid"}],
            )
        ],
        reason="cannot allocate all claims",
    ),
    "s10-distinct-attribute-missing-fails": Case(
        one(device("gpu-0"), device("gpu-1")),
        [
            claim(
                "a",
                ("r0", exactly("1Gi")),
                ("r1", exactly("1Gi")),
                constraints=[{"distinctAttribute": "gpu.example.com/nope"}],
            )
        ],
        reason="cannot allocate all claims",
    ),
    "s10-match-attribute-same-value": Case(
        one(
            device("gpu-0", attrs={"model": {"string": "a"}}),
            device("gpu-1", attrs={"model": {"string": "b"}}),
            device("gpu-2", attrs={"model": {"string": "b"}}),
        ),
        [
            claim(
                "a",
                ("r0", exactly("1Gi", selectors=['device.attributes["gpu.example.com"].model == "b"'])),
                ("r1", exactly("1Gi", count=2)),
                constraints=[{"matchAttribute": "gpu.example.com/model"}],
            )
        ],
        want=[[("r0", "gpu-1", "1Gi"), ("r1", "gpu-1", "1Gi"), ("r1", "gpu-2", "1Gi")]],
    ),
    # --- section 11: partitionable devices (shared counters) ---
    "s11-exclusive-partitions-share-counters": Case(
        counters_pool(part("whole", "24Gi"), part("half-a", "12Gi"), part("half-b", "12Gi")),
        [
            claim(
                "a",
                ("gpu", exactly(selectors=['device.attributes["gpu.example.com"].uuid == "uuid-half-a"'])),
            ),
            claim("b", ("gpu", exactly())),
        ],
        want=[[("gpu", "half-a", None)], [("gpu", "half-b", None)]],
    ),
    "s11-counters-exhausted-unschedulable": Case(
        counters_pool(part("whole", "24Gi"), part("half-a", "12Gi")),
        [claim("a", ("gpu", exactly(selectors=[NOT_WHOLE]))), claim("b", ("gpu", exactly()))],
        reason="cannot allocate all claims",
    ),
    "s11-committed-partition-blocks-whole-device": Case(
        counters_pool(part("whole", "24Gi"), part("half-a", "12Gi")),
        [
            claim(
                "a", ("gpu", exactly(selectors=['device.attributes["gpu.example.com"].uuid == "uuid-whole"']))
            )
        ],
        committed=[committed("old", [dedicated("half-a")])],
        reason="cannot allocate all claims",
    ),
    "s11-shared-device-pays-counters-once": Case(
        counters_pool(part("gpu-0", "24Gi", multi=True)),
        [claim("a", ("gpu", exactly("6Gi"))), claim("b", ("gpu", exactly("6Gi")))],
        want=[[("gpu", "gpu-0", "6Gi")], [("gpu", "gpu-0", "6Gi")]],
    ),
    "s11-gate-off-counter-devices-not-allocatable": Case(
        counters_pool(part("whole", "24Gi")),
        [claim("a", ("gpu", exactly()))],
        reason="cannot allocate all claims",
        features=Features(partitionable_devices=False),
    ),
    # --- section 12: search order, prioritized list, selectors, pools ---
    "s12-pools-sorted-by-driver-then-name": Case(
        [slice_("z", [device("gpu-0")], pool="b-pool"), slice_("y", [device("gpu-0")], pool="a-pool")],
        [claim("a", ("gpu", exactly("1Gi")))],
        want=[[("gpu", "gpu-0", "1Gi")]],
    ),
    "s12-first-available-falls-back": Case(
        one(device("gpu-0", memory="8Gi")),
        [
            claim(
                "a",
                first_available={
                    "gpu": [
                        {
                            "name": "big",
                            "deviceClassName": "gpu.example.com",
                            "capacity": {"requests": {"memory": "16Gi"}},
                        },
                        {
                            "name": "small",
                            "deviceClassName": "gpu.example.com",
                            "capacity": {"requests": {"memory": "4Gi"}},
                        },
                    ]
                },
            )
        ],
        want=[[("gpu/small", "gpu-0", "4Gi")]],
    ),
    "s12-class-selector-filters": Case(
        one(device("gpu-0", multi=False), device("gpu-1")),
        [claim("a", ("gpu", exactly()))],
        classes=[device_class(selectors=["device.allowMultipleAllocations == true"])],
        want=[[("gpu", "gpu-1", "24Gi")]],
    ),
    "s12-quantity-selector": Case(
        one(device("gpu-0", memory="12Gi"), device("gpu-1", memory="24Gi")),
        [
            claim(
                "a",
                (
                    "gpu",
                    exactly(
                        selectors=[
                            'device.capacity["gpu.example.com"].memory.compareTo(quantity("16Gi")) >= 0'
                        ]
                    ),
                ),
            )
        ],
        want=[[("gpu", "gpu-1", "24Gi")]],
    ),
    "s12-cel-runtime-error-fatal": Case(
        one(device("gpu-0")),
        [claim("a", ("gpu", exactly(selectors=['device.attributes["gpu.example.com"].nope'])))],
        fatal="claim default/a: selector #0 on device gpu.example.com/node-1/gpu-0: CEL runtime error: "
        "no such key: nope. consider using CEL optional chaining (.? followed by orValue()) or guarding "
        "the check with has() for optional fields",
    ),
    "s12-cel-compile-error-fatal": Case(
        one(device("gpu-0")),
        [claim("a", ("gpu", exactly(selectors=["device.driver =="])))],
        fatal="claim default/a: selector #0: CEL compile error: compilation failed",
    ),
    "s12-older-pool-generation-ignored": Case(
        [slice_("old", [device("gpu-old")], generation=1), slice_("new", [device("gpu-new")], generation=2)],
        [claim("a", ("gpu", exactly("1Gi")))],
        want=[[("gpu", "gpu-new", "1Gi")]],
    ),
    "s12-pool-with-several-slices": Case(
        [slice_("b", [device("gpu-1")], count=2), slice_("a", [device("gpu-0", memory="1Gi")], count=2)],
        [claim("a", ("gpu", exactly("2Gi")))],
        want=[[("gpu", "gpu-1", "2Gi")]],
    ),
    "s12-invalid-pool-reason": Case(
        [slice_("a", [device("gpu-0")], count=2), slice_("b", [device("gpu-0")], count=2)],
        [claim("a", ("gpu", exactly("1Gi")))],
        reason="invalid resource pools were encountered",
    ),
    "s12-other-node-slice-invisible": Case(
        [slice_("n2", [device("gpu-0")], node="node-2")],
        [claim("a", ("gpu", exactly()))],
        reason="cannot allocate all claims",
    ),
    "s12-all-nodes-slice-visible": Case(
        [slice_("net", [device("gpu-0")], node=None, pool="cluster", allNodes=True)],
        [claim("a", ("gpu", exactly("1Gi")))],
        want=[[("gpu", "gpu-0", "1Gi")]],
    ),
    "s12-node-selector-slice-visible-by-label": Case(
        [
            slice_(
                "rack",
                [device("gpu-0")],
                node=None,
                pool="rack",
                nodeSelector={
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "rack", "operator": "In", "values": ["r1"]}]}
                    ]
                },
            )
        ],
        [claim("a", ("gpu", exactly("1Gi")))],
        want=[[("gpu", "gpu-0", "1Gi")]],
        node=node("node-1", {"rack": "r1"}),
    ),
    # --- issue 13 rules beyond the repros (tests/sim/test_allocator_repros.py) ---
    "r11-over-limit-subrequest-falls-back-to-smaller-one": Case(
        one(*[device(f"gpu-{i}", multi=False) for i in range(33)]),
        [
            claim(
                "a",
                ("last", exactly(selectors=['device.attributes["gpu.example.com"].uuid == "uuid-gpu-32"'])),
                first_available={
                    "big": [
                        {"name": "many", "deviceClassName": "gpu.example.com", "count": 32},
                        {"name": "one", "deviceClassName": "gpu.example.com"},
                    ]
                },
            )
        ],
        want=[[("last", "gpu-32", None), ("big/one", "gpu-0", None)]],
    ),
    "r11-smallest-subrequest-counts-before-search": Case(
        one(device("gpu-0")),
        [
            claim(
                "a",
                ("r", exactly(count=32)),
                first_available={
                    "f": [
                        {"name": "x", "deviceClassName": "gpu.example.com", "count": 2},
                        {"name": "y", "deviceClassName": "gpu.example.com", "count": 1},
                    ]
                },
            )
        ],
        fatal="claim default/a: number of requested devices 33 exceeds the claim limit of 32",
    ),
    "r9-class-cel-runtime-error-names-class-and-device": Case(
        one(device("gpu-0")),
        [claim("a", ("gpu", exactly(cls="broken")))],
        classes=[device_class("broken", ['device.attributes["gpu.example.com"].nope == "x"'])],
        fatal="class broken: selector #0 on device gpu.example.com/node-1/gpu-0: CEL runtime error: no such key",
    ),
    "r9-missing-class-text": Case(
        one(device("gpu-0")),
        [claim("a", first_available={"gpu": [{"name": "s", "deviceClassName": "nope"}]})],
        fatal="claim default/a, request s: could not retrieve device class nope: "
        'deviceclass.resource.k8s.io "nope" not found',
    ),
    "r9-empty-constraint-fatal": Case(
        one(device("gpu-0")),
        [claim("a", ("gpu", exactly()), constraints=[{"requests": ["gpu"]}])],
        fatal="claim default/a, constraint #0: empty constraint (unsupported constraint type?)",
    ),
    "r4-admin-access-not-twice-in-one-claim": Case(
        one(device("gpu-0", multi=False)),
        [claim("a", ("x", exactly(admin=True)), ("y", exactly(admin=True)))],
        reason="cannot allocate all claims",
    ),
    "r1-incomplete-pool-skipped-other-pool-used": Case(
        [slice_("a", [device("gpu-0")], pool="p-a", count=2), slice_("b", [device("gpu-1")], pool="p-b")],
        [claim("a", ("gpu", exactly("1Gi")))],
        want=[[("gpu", "gpu-1", "1Gi")]],
    ),
    "r2-qualified-request-key-on-qualified-device": Case(
        one(
            {
                "name": "gpu-0",
                "allowMultipleAllocations": True,
                "capacity": {"gpu.example.com/memory": {"value": "8Gi"}},
            }
        ),
        [claim("a", ("gpu", exactly(capacity={"gpu.example.com/memory": "2Gi"})))],
        want=[[("gpu", "gpu-0", None)]],
    ),
    "r8-duplicate-counter-set-makes-pool-invalid": Case(
        [
            {
                **c,
                "metadata": {"name": f"node-1-counters-{i}"},
                "spec": {**c["spec"], "pool": {**c["spec"]["pool"], "resourceSliceCount": 3}},
            }
            for i, c in enumerate([counters_pool()[0]] * 2)
        ]
        + [slice_("node-1-gpus", [part("gpu-0", "8Gi")], count=3)],
        [claim("a", ("gpu", exactly()))],
        reason="invalid resource pools were encountered",
    ),
    "r1-obsolete-generation-ignored": Case(
        [
            slice_("old", [device("gpu-0")], generation=1, count=2),
            slice_("new", [device("gpu-1")], node="node-2", pool="node-1", generation=2),
        ],
        # Ignored, not "being updated": an All request finds nothing instead of failing on the pool.
        [claim("a", ("gpu", exactly(mode="All")))],
        reason="cannot allocate all claims",
    ),
}


def _run(case: Case):
    state = AllocatedState(case.features.consumable_capacity)
    for c in case.committed:
        state.set_claim(c["metadata"]["name"], c["status"]["allocation"])
    classes = {c["metadata"]["name"]: c for c in case.classes}
    return allocate(case.claims, case.node, case.slices, classes, state, case.features)


@pytest.mark.parametrize("name", list(CASES))
def test_allocator_rule(name: str) -> None:
    case = CASES[name]
    if case.fatal:
        with pytest.raises(AllocatorError) as err:
            _run(case)
        assert case.fatal in str(err.value)
        return
    outcome = _run(case)
    if case.reason:
        assert outcome.allocations is None
        assert outcome.reason == case.reason
        return
    assert outcome.allocations is not None, outcome.reason
    share_ids = []
    for allocation, want in zip(outcome.allocations, case.want or [], strict=True):
        got = []
        for r in allocation["devices"]["results"]:
            consumed = (r.get("consumedCapacity") or {}).get("memory")
            got.append((r["request"], r["device"], consumed))
            if case.features.consumable_capacity and any(
                d.get("allowMultipleAllocations") and d["name"] == r["device"]
                for s in case.slices
                for d in s["spec"].get("devices") or []
            ):
                assert uuid.UUID(r["shareID"]).version == 4
                share_ids.append(r["shareID"])
            else:
                assert "shareID" not in r and "consumedCapacity" not in r
        assert got == want
    assert len(share_ids) == len(set(share_ids)), "every share gets its own shareID"


def test_consumed_capacity_lists_zero_entries_too() -> None:
    """s3/s13: consumedCapacity has every capacity of the device, including ones not requested."""
    s = [slice_("a", [device("gpu-0", extra_caps={"compute": "100"})])]
    out = allocate(
        [claim("a", ("gpu", exactly("6Gi", capacity={"compute": "0"})))],
        node(),
        s,
        {"gpu.example.com": device_class()},
        AllocatedState(),
    )
    assert out.allocations[0]["devices"]["results"][0]["consumedCapacity"] == {
        "memory": "6Gi",
        "compute": "0",
    }


def test_node_local_result_pins_node() -> None:
    """s13: a node-local device restricts the claim to that node."""
    out = allocate(
        [claim("a", ("gpu", exactly("1Gi")))],
        node(),
        one(device("gpu-0")),
        {"gpu.example.com": device_class()},
        AllocatedState(),
    )
    assert out.allocations[0]["nodeSelector"] == {
        "nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-1"]}]}
        ]
    }


def test_deep_pod_does_not_hit_the_recursion_limit() -> None:
    """The search recurses per device; a pod of many claims of many devices must still be decided."""
    devices = [device(f"gpu-{i}", multi=False) for i in range(60 * 16)]
    claims = [claim(f"c{i}", ("gpu", exactly(count=16))) for i in range(60)]
    out = allocate(claims, node(), one(*devices), {"gpu.example.com": device_class()}, AllocatedState())
    assert out.ok and sum(len(a["devices"]["results"]) for a in out.allocations) == 960
