"""Every probed selector gets upstream's verdict and message.

tests/fixtures/cel-probes.yaml is a copy of the team's fixture: selectors tried against one device by
k8s.io/dynamic-resource-allocation at 3d036712930c, with upstream's verdict and the first line of its
message. The whole-scheduling CEL repros (R13, R9a) run with the others in test_allocator_repros.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sim.cel import CelCompileError, CelRuntimeError, compile_selector, device_variable

PROBES = yaml.safe_load((Path(__file__).resolve().parents[1] / "fixtures" / "cel-probes.yaml").read_text())
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
    assert kinds == {
        "compile error",
        "runtime error",
        "true (device selected)",
        "false (device not selected)",
    }
