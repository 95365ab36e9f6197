"""Every probed selector gets upstream's verdict and message, and the CEL repros end as upstream's do.

tests/data/cel/ holds copies of the team's fixtures: `cel-probes.yaml` (selectors tried against one device
by k8s.io/dynamic-resource-allocation at 3d036712930c, with the verdict and the first line of the
message) and the R13/R9a allocator repros (whole scheduling problems with upstream's outcome).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sim.allocator import AllocatorError, Features, allocate
from sim.allocator_state import AllocatedState
from sim.cel import CelCompileError, CelRuntimeError, compile_selector, device_variable

DATA = Path(__file__).parent / "data" / "cel"
PROBES = yaml.safe_load((DATA / "cel-probes.yaml").read_text())
DEVICE = PROBES["device"]
# The allocator names a device driver/pool/device; the probes' device is in pool-1.
DEVICE_ID = f"{DEVICE['driver']}/pool-1/{DEVICE['name']}"


def verdict(expression: str) -> tuple[str, str | None]:
    """(upstream-style verdict, the allocator's message for it) for the probes' device."""
    try:
        program = compile_selector(expression)
    except CelCompileError as exc:
        return "compile error", f"selector #0: CEL compile error: {exc}"
    try:
        hit = program.matches(device_variable(DEVICE["driver"], DEVICE))
    except CelRuntimeError as exc:
        return "runtime error", f"selector #0 on device {DEVICE_ID}: CEL runtime error: {exc}"
    return ("true (device selected)" if hit else "false (device not selected)"), None


@pytest.mark.parametrize("probe", PROBES["probes"], ids=[p["selector"] for p in PROBES["probes"]])
def test_probe_gets_upstreams_verdict_and_message(probe: dict[str, Any]) -> None:
    got, message = verdict(probe["selector"])
    assert got == probe["upstream"], message
    if "upstreamMessage" in probe:
        assert message is not None
        assert message.split("\n")[0] == probe["upstreamMessage"]


def test_probes_cover_both_sides_of_the_split() -> None:
    kinds = {p["upstream"] for p in PROBES["probes"]}
    assert kinds == {"compile error", "runtime error", "true (device selected)",
                     "false (device not selected)"}


def _features(gates: dict[str, bool]) -> Features:
    return Features(
        consumable_capacity=gates.get("DRAConsumableCapacity", False),
        prioritized_list=gates.get("DRAPrioritizedList", False),
        admin_access=gates.get("DRAAdminAccess", False),
        partitionable_devices=gates.get("DRAPartitionableDevices", False),
    )


REPROS = sorted(DATA.glob("R*.yaml"))


@pytest.mark.parametrize("path", REPROS, ids=[p.stem for p in REPROS])
def test_cel_repro_ends_as_upstream(path: Path) -> None:
    repro = yaml.safe_load(path.read_text())
    features = _features(repro["featureGates"])
    state = AllocatedState(features.consumable_capacity)
    classes = {c["metadata"]["name"]: c for c in repro["deviceClasses"]}
    node = {"metadata": {"name": repro["node"]["name"], "labels": repro["node"].get("labels") or {}}}
    want = repro["upstream"]
    if want["outcome"] == "error":
        with pytest.raises(AllocatorError) as err:
            allocate(repro["claims"], node, repro["resourceSlices"], classes, state, features)
        assert str(err.value) == want["error"]
        return
    outcome = allocate(repro["claims"], node, repro["resourceSlices"], classes, state, features)
    assert outcome.allocations is not None, outcome.reason
    got = [[(r["request"], r["driver"], r["pool"], r["device"]) for r in a["devices"]["results"]]
           for a in outcome.allocations]
    assert got == [[(r["request"], r["driver"], r["pool"], r["device"]) for r in claim]
                   for claim in want["results"]]
