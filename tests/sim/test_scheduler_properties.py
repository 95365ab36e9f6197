"""Property tests: random pod creates and deletes with random capacity requests on shared and
exclusive devices never exceed a capacity, never give an exclusive device to two claims, release
exactly what was consumed, and never leave a pod pending that would fit.

Runs the real controller and scheduler threads on the in-process Store (the HTTP layer is covered
by the scenario tests); the examples are derandomized so CI sees the same sequences every run.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drakit.quantity import Quantity
from sim.allocator import Features, allocate
from sim.allocator_state import AllocatedState, device_id
from sim.apiserver.store import Store
from sim.controller import ClaimController
from sim.scheduler import Scheduler
from tests.support.allocator_builders import device, device_class, slice_

CLAIMS = "resourceclaims.resource.k8s.io"
SIZES = [None, "512Mi", "1Gi", "1536Mi", "3Gi", "4Gi", "6Gi", "9Gi"]
POLICY = {"default": "1Gi", "validRange": {"min": "1Gi", "step": "512Mi", "max": "8Gi"}}
DEVICES = [
    device("shared-a", memory="8Gi", policy=POLICY),
    device("shared-b", memory="6Gi"),
    device("excl-c", memory="8Gi", multi=False),
]
CAPACITY = {
    "shared-a": Quantity.parse("8Gi"),
    "shared-b": Quantity.parse("6Gi"),
    "excl-c": Quantity.parse("8Gi"),
}


def _template_name(kind: str, size: str | None) -> str:
    return f"{kind}-{(size or 'default').lower()}"


def _setup(store: Store) -> None:
    store.create("nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}})
    store.create(
        "deviceclasses.resource.k8s.io", device_class("shared", ["device.allowMultipleAllocations == true"])
    )
    store.create(
        "deviceclasses.resource.k8s.io",
        device_class("exclusive", ["device.allowMultipleAllocations == false"]),
    )
    store.create("resourceslices.resource.k8s.io", slice_("node-1-gpus", DEVICES))
    for kind in ("shared", "exclusive"):
        for size in SIZES:
            request: dict[str, Any] = {"deviceClassName": kind}
            if size:
                request["capacity"] = {"requests": {"memory": size}}
            store.create(
                "resourceclaimtemplates.resource.k8s.io",
                {
                    "apiVersion": "resource.k8s.io/v1",
                    "kind": "ResourceClaimTemplate",
                    "metadata": {"name": _template_name(kind, size), "namespace": "default"},
                    "spec": {"spec": {"devices": {"requests": [{"name": "gpu", "exactly": request}]}}},
                },
            )


def _check_invariants(store: Store, scheduler: Scheduler) -> None:
    claims, _ = store.list(CLAIMS)
    consumed: dict[str, Decimal] = {}
    exclusive_users: dict[str, int] = {}
    for c in claims:
        for r in ((c.get("status") or {}).get("allocation") or {}).get("devices", {}).get("results") or []:
            if r["device"].startswith("shared"):
                assert r.get("shareID"), r
                consumed[r["device"]] = (
                    consumed.get(r["device"], Decimal(0))
                    + Quantity.parse(r["consumedCapacity"]["memory"]).value
                )
            else:
                assert "shareID" not in r and "consumedCapacity" not in r
                exclusive_users[r["device"]] = exclusive_users.get(r["device"], 0) + 1
    for dev, total in consumed.items():
        assert total <= CAPACITY[dev].value, f"{dev} over capacity: {total}"
    assert all(n == 1 for n in exclusive_users.values()), exclusive_users
    # Release exactly what was consumed: the scheduler's incremental state equals a recount.
    for dev in ("shared-a", "shared-b"):
        have = scheduler.state.consumed(("gpu.example.com", "node-1", dev)).get("memory", Decimal(0))
        assert have == consumed.get(dev, Decimal(0)), (dev, have, consumed)
    assert scheduler.state.is_dedicated(("gpu.example.com", "node-1", "excl-c")) == bool(exclusive_users)
    # Nothing pending would fit now: the scheduler is not lazy.
    recount = AllocatedState()
    for c in claims:
        recount.set_claim(c["metadata"]["uid"], (c.get("status") or {}).get("allocation"))
    slices, _ = store.list("resourceslices.resource.k8s.io")
    classes = {c["metadata"]["name"]: c for c in store.list("deviceclasses.resource.k8s.io")[0]}
    node = store.get("nodes", "node-1")
    by_name = {c["metadata"]["name"]: c for c in claims}
    for pod in store.list("pods")[0]:
        if pod["spec"].get("nodeName"):
            continue
        names = [s["resourceClaimName"] for s in (pod.get("status") or {}).get("resourceClaimStatuses") or []]
        assert names, f"pod {pod['metadata']['name']} never got its claim"
        outcome = allocate([by_name[n] for n in names], node, slices, classes, recount, Features())
        assert not outcome.ok, f"pod {pod['metadata']['name']} is pending but would fit"
    assert {
        device_id(r)[2]
        for c in claims
        for r in ((c.get("status") or {}).get("allocation") or {}).get("devices", {}).get("results") or []
    } <= set(CAPACITY)


ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("create"), st.sampled_from(["shared", "shared", "exclusive"]), st.sampled_from(SIZES)
        ),
        st.tuples(st.just("delete"), st.integers(min_value=0, max_value=30), st.none()),
    ),
    min_size=1,
    max_size=20,
)


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_random_creates_and_deletes_keep_capacity_invariants(sequence: list[tuple]) -> None:
    store = Store()
    _setup(store)
    controller, scheduler = ClaimController(store), Scheduler(store, initial_backoff=0.01, max_backoff=0.02)
    controller.start()
    scheduler.start()
    try:
        live: list[str] = []
        for i, (op, a, b) in enumerate(sequence):
            if op == "create":
                name = f"p{i}"
                store.create(
                    "pods",
                    {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {"name": name, "namespace": "default"},
                        "spec": {
                            "containers": [{"name": "c", "image": "x"}],
                            "resourceClaims": [
                                {"name": "gpu", "resourceClaimTemplateName": _template_name(a, b)}
                            ],
                        },
                    },
                )
                live.append(name)
            elif live:
                store.delete("pods", live.pop(a % len(live)), "default")
            for _ in range(3):  # controller and scheduler feed each other
                controller.wait_idle(20)
                scheduler.wait_idle(20)
            _check_invariants(store, scheduler)
        for name in live:
            store.delete("pods", name, "default")
        for _ in range(3):
            controller.wait_idle(20)
            scheduler.wait_idle(20)
        assert store.list(CLAIMS)[0] == [], "generated claims go with their pods"
        assert scheduler.state.claims() == set(), "everything consumed was released"
        assert not controller.errors and not scheduler.errors, (controller.errors, scheduler.errors)
    finally:
        scheduler.stop()
        controller.stop()
