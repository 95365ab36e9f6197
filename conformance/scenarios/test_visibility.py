"""visibility: every sharer reaches Running and sees its own GPU and granted memory."""

from __future__ import annotations

import re

import pytest

from conformance.capacity import format_bytes
from conformance.inventory import Gpu
from conformance.scenarios.checks import assert_on_gpu, env_view, expected_env, share_plan
from conformance.workloads import PodRef, Scenario

pytestmark = pytest.mark.visibility


def check_env_view(sc: Scenario, pod: PodRef, gpu: Gpu, others: list[Gpu]) -> None:
    result = assert_on_gpu(sc, pod, gpu)
    want = expected_env(sc, gpu, result)
    seen = env_view(sc, pod, want)
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
    plan = share_plan(sc, gpu)
    r, k = plan.requests, plan.sharers
    if k < 1:
        pytest.skip(f"{gpu.label}: no sharer of {format_bytes(r[sc.profile.shared_capacity])} fits")
    ns = [sc.namespace("a"), sc.namespace("b")]
    pods = [sc.sharer(ns[i % 2], f"viewer-{i}", gpu, r) for i in range(k)]
    sc.wait_running(pods)
    for p in pods:
        if sc.profile.visibility.method == "nvidia-smi":
            check_nvidia_smi_view(sc, p, gpu)
        else:
            check_env_view(sc, p, gpu, sc.suite.preflight.gpus)
