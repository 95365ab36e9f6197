"""Assertions shared by the scenarios: where a pod landed and what it consumed, per the model."""

from __future__ import annotations

import re
from typing import Any

from conformance.capacity import format_bytes
from conformance.inventory import Gpu
from conformance.profiles import template_fields
from conformance.workloads import PodRef, Scenario


def assert_on_gpu(sc: Scenario, pod: PodRef, gpu: Gpu) -> dict[str, Any]:
    result = sc.single_result(pod)
    assert (result.get("pool"), result.get("device")) == (gpu.pool, gpu.device), (
        f"{pod.key} was allocated {result.get('pool')}/{result.get('device')}, but its claim is pinned to "
        f"{gpu.label}")
    return result


def assert_consumed(sc: Scenario, pod: PodRef, gpu: Gpu, result: dict[str, Any]) -> int:
    """consumedCapacity must equal what the capacity model computes from the published policy."""
    assert gpu.capacity is not None
    expected = gpu.capacity.consumes(pod.request)
    assert expected is not None, f"the model says {pod.key}'s request is not allowed on {gpu.label}"
    got = sc.consumed(result)
    asked = "no capacity request" if pod.request is None else f"a request of {format_bytes(pod.request)}"
    assert got == expected, (
        f"{pod.key} ({asked}) has consumedCapacity {sc.profile.capacity}="
        f"{'absent' if got is None else format_bytes(got)}; the published policy says "
        f"{format_bytes(expected)}")
    return got


def assert_distinct_share_ids(sc: Scenario, results: dict[str, dict[str, Any]]) -> None:
    ids = {k: r.get("shareID") for k, r in results.items()}
    missing = sorted(k for k, v in ids.items() if not v)
    assert not missing, f"allocations without a shareID on a shared GPU: {', '.join(missing)}"
    assert len(set(ids.values())) == len(ids), f"shareIDs are not distinct: {ids}"


def share_plan(gpu: Gpu, parts: int = 4) -> tuple[int, int]:
    """(request r, sharers k = floor(free / consumed(r))) for this GPU, from what it published."""
    assert gpu.capacity is not None
    r = gpu.capacity.share_size(parts)
    return r, gpu.capacity.sharers_that_fit(r)


def assert_unique_cdi_devices(sc: Scenario, gpu: Gpu) -> str:
    """Every CDI device on the node is defined once: two shares must never map to one CDI id
    (container runtimes refuse conflicting devices; kubernetes#134519). Returns a note when the
    provider cannot read the node's CDI directory."""
    specs = sc.suite.provider.node_cdi_specs(gpu.node)
    if specs is None:
        return f"CDI specs on {gpu.node} are not readable through the {sc.suite.handle.provider} provider"
    defined: dict[str, list[str]] = {}
    for fname, spec in specs.items():
        for dev in spec.get("devices") or ():
            defined.setdefault(f"{spec.get('kind')}={dev.get('name')}", []).append(fname)
    clashes = {cdi_id: files for cdi_id, files in defined.items() if len(files) > 1}
    assert not clashes, ("CDI device ids defined by more than one spec on "
                         f"{gpu.node} (two shares would get the same device): {clashes}")
    return ""


def expected_env(sc: Scenario, gpu: Gpu, result: dict[str, Any], only: str = "") -> dict[str, str]:
    """The env lines the profile promises for this allocation, filled from the device and result."""
    consumed = sc.consumed(result)
    values = {**{k: str(v) for k, v in gpu.attributes.items() if "/" not in k},
              "device": gpu.device, "pool": gpu.pool, "shareID": result.get("shareID") or "",
              "granted": "" if consumed is None else str(consumed)}
    out = {}
    for name_t, value_t in sc.profile.visibility.env.items():
        if only and only not in value_t:
            continue
        missing = [f for f in template_fields(name_t) + template_fields(value_t) if f not in values]
        assert not missing, (f"profile env {name_t}={value_t} uses {missing}, which {gpu.label} does not "
                             "publish; fix claims.visibility.env in the driver profile")
        out[name_t.format(**values)] = value_t.format(**values)
    return out


def env_view(sc: Scenario, pod: PodRef, want: dict[str, str]) -> dict[str, str]:
    """The env the pod printed at start, once every name in ``want`` has appeared in its log."""
    text = sc.wait_log(pod, lambda t: all(re.search(rf"^{re.escape(n)}=", t, re.M) for n in want),
                       what=f"env {', '.join(want)}")
    return dict(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", text, re.M))
