"""visibility: every sharer reaches Running and sees its own GPU and granted memory."""

from __future__ import annotations

import re
from typing import Any

import pytest

from conformance.capacity import format_bytes
from conformance.inventory import Gpu
from conformance.profiles import template_fields
from conformance.scenarios.checks import assert_on_gpu, share_plan
from conformance.workloads import PodRef, Scenario

pytestmark = pytest.mark.visibility


def expected_env(sc: Scenario, gpu: Gpu, result: dict[str, Any]) -> dict[str, str]:
    """The env lines the profile promises for this allocation, filled from the device and result."""
    consumed = sc.consumed(result)
    values = {**{k: str(v) for k, v in gpu.attributes.items() if "/" not in k},
              "device": gpu.device, "pool": gpu.pool, "shareID": result.get("shareID") or "",
              "granted": "" if consumed is None else str(consumed)}
    out = {}
    for name_t, value_t in sc.profile.visibility.env.items():
        missing = [f for f in template_fields(name_t) + template_fields(value_t) if f not in values]
        assert not missing, (f"profile env {name_t}={value_t} uses {missing}, which {gpu.label} does not "
                             "publish; fix claims.visibility.env in the driver profile")
        out[name_t.format(**values)] = value_t.format(**values)
    return out


def check_env_view(sc: Scenario, pod: PodRef, gpu: Gpu, others: list[Gpu]) -> None:
    result = assert_on_gpu(sc, pod, gpu)
    want = expected_env(sc, gpu, result)
    text = sc.wait_log(pod, lambda t: all(re.search(rf"^{re.escape(n)}=", t, re.M) for n in want),
                       what=f"env {', '.join(want)}")
    seen = dict(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", text, re.M))
    wrong = [f"{n}={seen.get(n)!r} (allocated: {v!r})" for n, v in want.items() if seen.get(n) != v]
    assert not wrong, f"{pod.key} sees the wrong GPU view: {'; '.join(wrong)}"
    # It must not see other GPUs: the same name templates filled for any other GPU must be absent.
    for other in others:
        if other.node != gpu.node or other.device == gpu.device:
            continue
        names = expected_env(sc, other, {"shareID": "", "consumedCapacity": {}})
        leaked = [n for n in names if n in seen and n not in want]
        assert not leaked, f"{pod.key} also sees {other.label} ({', '.join(leaked)})"


def check_nvidia_smi_view(sc: Scenario, pod: PodRef, gpu: Gpu) -> None:
    assert_on_gpu(sc, pod, gpu)
    text = sc.wait_log(pod, lambda t: "UUID:" in t, what="nvidia-smi -L output")
    uuids = re.findall(r"UUID:\s*([^)\s]+)", text)
    assert uuids == [gpu.identity], f"{pod.key}: nvidia-smi -L lists {uuids}, allocated {gpu.identity}"


def test_every_sharer_runs_and_sees_its_gpu_and_memory(scenario: Scenario) -> None:
    sc = scenario
    (gpu,) = sc.suite.pick_gpus(1)
    r, k = share_plan(gpu)
    if k < 1:
        pytest.skip(f"{gpu.label}: no sharer of {format_bytes(r)} fits")
    ns = [sc.namespace("a"), sc.namespace("b")]
    pods = [sc.sharer(ns[i % 2], f"viewer-{i}", gpu, r) for i in range(k)]
    sc.wait_running(pods)
    for p in pods:
        if sc.profile.visibility.method == "nvidia-smi":
            check_nvidia_smi_view(sc, p, gpu)
        else:
            check_env_view(sc, p, gpu, sc.suite.preflight.gpus)
