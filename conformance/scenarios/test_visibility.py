"""visibility: every sharer reaches Running and sees its own GPU and granted memory."""

from __future__ import annotations

import re

import pytest

from conformance.capacity import format_bytes
from conformance.devicenodes import END_MARK, device_node_paths, seen_device_nodes
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
    unapplied = sc.suite.provider.container_edits_unapplied(gpu.node)
    if sc.profile.visibility.method == "nvidia-smi" and unapplied:
        # nvidia-smi lists the GPU device nodes it can open: without them applied it sees the host's.
        pytest.skip(unapplied)
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


def test_every_sharer_sees_only_its_own_device_nodes(scenario: Scenario) -> None:
    sc = scenario
    if not sc.profile.visibility.device_nodes:
        pytest.skip(
            f"driver profile {sc.profile.name!r} names no GPU device nodes (claims.visibility.deviceNodes)"
        )
    (gpu,) = sc.suite.pick_gpus(1)
    unapplied = sc.suite.provider.container_edits_unapplied(gpu.node)
    if unapplied:
        pytest.skip(unapplied)
    own = device_node_paths(sc.profile, gpu)
    assert own, (
        f"{gpu.label} does not publish the attributes the profile's device node templates "
        f"{list(sc.profile.visibility.device_nodes)} use"
    )
    others = {
        g.device: device_node_paths(sc.profile, g) - own
        for g in sc.suite.preflight.gpus
        if g.node == gpu.node and g.device != gpu.device
    }
    plan = share_plan(sc, gpu)
    r, k = plan.requests, plan.sharers
    if k < 1:
        pytest.skip(f"{gpu.label}: no sharer of {format_bytes(r[sc.profile.shared_capacity])} fits")
    ns = [sc.namespace("a"), sc.namespace("b")]
    pods = [sc.sharer(ns[i % 2], f"nodes-{i}", gpu, r) for i in range(min(k, 2))]
    sc.wait_running(pods)
    for p in pods:
        assert_on_gpu(sc, p, gpu)
        seen = seen_device_nodes(sc.wait_log(p, lambda t: END_MARK in t, what="the device node probe"))
        missing = sorted(own - seen)
        assert not missing, f"{p.name} does not see its GPU's device node(s) {missing} ({gpu.label})"
        leaked = "; ".join(
            f"{', '.join(sorted(paths & seen))} of {device}"
            for device, paths in sorted(others.items())
            if paths & seen
        )
        assert not leaked, f"{p.name} was allocated {gpu.device} but also sees the device node(s) {leaked}"
