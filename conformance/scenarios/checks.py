"""Assertions shared by the scenarios: where a pod landed and what it consumed, per the model."""

from __future__ import annotations

import re
from typing import Any

from conformance import capacity
from conformance.capacity import SharePlan, consumed_mismatch
from conformance.inventory import Gpu
from conformance.profiles import template_fields
from conformance.workloads import PodRef, Scenario


def assert_on_gpu(sc: Scenario, pod: PodRef, gpu: Gpu) -> dict[str, Any]:
    result = sc.single_result(pod)
    assert (result.get("pool"), result.get("device")) == (gpu.pool, gpu.device), (
        f"{pod.key} was allocated {result.get('pool')}/{result.get('device')}, but its claim is pinned to "
        f"{gpu.label}"
    )
    return result


def assert_consumed(sc: Scenario, pod: PodRef, gpu: Gpu, result: dict[str, Any]) -> int:
    """consumedCapacity must equal, for every capacity the device publishes, what the capacity model
    computes from the published policies. Returns the shared capacity's amount."""
    assert gpu.capacity is not None
    expected = gpu.capacities.consumes(pod.request)
    assert expected is not None, f"the model says {pod.key}'s request is not allowed on {gpu.label}"
    got = sc.consumed_all(result)
    caps = gpu.capacities
    asked = (
        "no capacity request"
        if not pod.request
        else "a request of "
        + ", ".join(f"{k} {caps[k].format(v) if k in caps else v}" for k, v in sorted(pod.request.items()))
    )
    wrong = consumed_mismatch(expected, got, caps)
    assert not wrong, f"{pod.key} ({asked}) has consumedCapacity {'; '.join(wrong)}"
    return got[sc.profile.shared_capacity]


def assert_distinct_share_ids(sc: Scenario, results: dict[str, dict[str, Any]]) -> None:
    ids = {k: r.get("shareID") for k, r in results.items()}
    missing = sorted(k for k, v in ids.items() if not v)
    assert not missing, f"allocations without a shareID on a shared GPU: {', '.join(missing)}"
    assert len(set(ids.values())) == len(ids), f"shareIDs are not distinct: {ids}"


def share_plan(sc: Scenario, gpu: Gpu, parts: int = 4) -> SharePlan:
    """The request vector r of one sharer (as the profile's shareRequests say a sharer asks) and
    k = how many fit on this idle GPU from every capacity it published."""
    assert gpu.capacity is not None
    return capacity.share_plan(gpu.capacities, sc.profile.shared_capacity, sc.profile.share_requests, parts)


def sharer_request(sc: Scenario, gpu: Gpu, amount: int) -> dict[str, int]:
    """The request vector of a sharer that asks ``amount`` of the shared capacity, the other declared
    capacities in proportion."""
    return capacity.sharer_requests(
        gpu.capacities, sc.profile.shared_capacity, sc.profile.share_requests, amount=amount
    )


def require_room_for_sharers(sc: Scenario, gpu: Gpu, plan: SharePlan, want: int = 2) -> None:
    """Fail at once, naming the capacity, when the shared capacity has room for ``want`` sharers but a
    capacity the sharers do not ask for defaults to (nearly) the whole device, so fewer fit. The first
    sharer's allocation shows what its default took; waiting for the second would only time out."""
    blockers = plan.defaulted_blockers(want)
    if not blockers:
        return
    first = sc.sharer(sc.namespace("first"), "first-sharer", gpu, plan.requests)
    sc.wait_running([first])
    result = assert_on_gpu(sc, first, gpu)
    assert_consumed(sc, first, gpu, result)  # the allocation agrees with the model: the cause is the default
    got = sc.consumed_all(result)
    shared = sc.profile.shared_capacity
    words = []
    for name in blockers:
        cap = gpu.capacities[name]
        default = cap.default_consumption()
        said = (
            "the whole device"
            if default >= cap.value
            else f"{cap.format(default)} of {cap.format(cap.value)}"
        )
        words.append(
            f"the first sharer consumed {name} {cap.format(got.get(name, default))} of "
            f"{cap.format(cap.value)} ({name} has no request in the sharer's claim and defaults to "
            f"{said})"
        )
    names = ", ".join(blockers)
    raise AssertionError(
        f"{'; '.join(words)}; declare shareRequests.{blockers[0]} in the driver profile (for example "
        f"'{blockers[0]}: proportional') if the driver shares by {names} too: as published, {plan.sharers} "
        f"sharer(s) fit on {gpu.label} where {shared} leaves room for {plan.by_primary}"
    )


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
    assert not clashes, (
        "CDI device ids defined by more than one spec on "
        f"{gpu.node} (two shares would get the same device): {clashes}"
    )
    return ""


def expected_env(sc: Scenario, gpu: Gpu, result: dict[str, Any], only: str = "") -> dict[str, str]:
    """The env lines the profile promises for this allocation, filled from the device and result."""
    consumed = sc.consumed(result)
    every = sc.consumed_all(result)
    values = {
        **{k: str(v) for k, v in gpu.attributes.items() if "/" not in k},
        "device": gpu.device,
        "pool": gpu.pool,
        "shareID": result.get("shareID") or "",
        "granted": "" if consumed is None else str(consumed),
        # {granted_<capacity>}: what the allocation consumed of each capacity, in whole units
        **{
            f"granted_{name}": str(every[name]) if name in every else ""
            for name in gpu.capacities.names()
            if "/" not in name
        },
    }
    out = {}
    for name_t, value_t in sc.profile.visibility.env.items():
        if only and only not in value_t:
            continue
        missing = [f for f in template_fields(name_t) + template_fields(value_t) if f not in values]
        assert not missing, (
            f"profile env {name_t}={value_t} uses {missing}, which {gpu.label} does not "
            "publish; fix claims.visibility.env in the driver profile"
        )
        out[name_t.format(**values)] = value_t.format(**values)
    return out


def env_view(sc: Scenario, pod: PodRef, want: dict[str, str]) -> dict[str, str]:
    """The env the pod printed at start, once every name in ``want`` has appeared in its log."""
    text = sc.wait_log(
        pod,
        lambda t: all(re.search(rf"^{re.escape(n)}=", t, re.M) for n in want),
        what=f"env {', '.join(want)}",
    )
    return dict(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", text, re.M))
