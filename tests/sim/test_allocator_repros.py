"""Upstream's recorded decisions (tests/fixtures/allocator-repros, see its README): the pure allocator
must reach the same outcome with the same message, one scenario per rule (R1-R14) of issue 13."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml

from drakit.quantity import Quantity
from sim.allocator import CANNOT_ALLOCATE, AllocatorError, Features, allocate
from sim.allocator_state import AllocatedState

REPROS = Path(__file__).resolve().parents[1] / "fixtures" / "allocator-repros"
FILES = sorted(REPROS.glob("R*.yaml"))


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def features(gates: dict[str, bool]) -> Features:
    return Features(
        consumable_capacity=gates.get("DRAConsumableCapacity", False),
        prioritized_list=gates.get("DRAPrioritizedList", False),
        admin_access=gates.get("DRAAdminAccess", False),
        partitionable_devices=gates.get("DRAPartitionableDevices", False),
    )


def run(scenario: dict[str, Any]):
    feats = features(scenario.get("featureGates") or {})
    state = AllocatedState(feats.consumable_capacity)
    for c in scenario.get("existingAllocations") or []:
        md = c["metadata"]
        state.set_claim(f"{md.get('namespace', '')}/{md['name']}", c["status"]["allocation"])
    node = {"metadata": {"name": scenario["node"]["name"], "labels": scenario["node"].get("labels") or {}}}
    classes = {c["metadata"]["name"]: c for c in scenario.get("deviceClasses") or []}
    counter = itertools.count()
    return allocate(
        scenario["claims"],
        node,
        scenario.get("resourceSlices") or [],
        classes,
        state,
        feats,
        new_uuid=lambda: f"00000000-0000-4000-8000-{next(counter):012d}",
    )


def _same_quantities(got: dict[str, str] | None, want: dict[str, str] | None) -> bool:
    if got is None or want is None:
        return got == want
    return got.keys() == want.keys() and all(Quantity.parse(got[k]) == Quantity.parse(want[k]) for k in want)


def test_every_rule_has_a_repro() -> None:
    rules = {p.name.split("-")[0].rstrip("abcde") for p in FILES}
    assert {"R1", "R2", "R3", "R4", "R5", "R6", "R7", "R8", "R9", "R11", "R13", "R14"} <= rules


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_allocator_matches_upstream(path: Path) -> None:
    scenario = load(path)
    want = scenario["upstream"]
    if want["outcome"] == "error" and not want.get("failedOnNode"):
        with pytest.raises(AllocatorError) as err:
            run(scenario)
        assert str(err.value) == want["error"]
        return
    outcome = run(scenario)
    if want["outcome"] == "unschedulable":
        assert not outcome.ok and outcome.reason == CANNOT_ALLOCATE
        return
    if want["outcome"] == "error":  # failed on this node only: kube-scheduler says it as the reason
        assert not outcome.ok and outcome.reason == want["error"]
        return
    assert want["outcome"] == "allocated"
    assert outcome.ok, outcome.reason
    assert len(outcome.allocations) == len(want["results"])
    for allocation, expected in zip(outcome.allocations, want["results"], strict=True):
        results = allocation["devices"]["results"]
        assert [(r["request"], r["driver"], r["pool"], r["device"]) for r in results] == [
            (e["request"], e["driver"], e["pool"], e["device"]) for e in expected
        ]
        for r, e in zip(results, expected, strict=True):
            assert ("shareID" in r) == (e["shareID"] == "present")
            assert bool(r.get("adminAccess")) == bool(e.get("adminAccess"))
            assert _same_quantities(r.get("consumedCapacity"), e.get("consumedCapacity"))
