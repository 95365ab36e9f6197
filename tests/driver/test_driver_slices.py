"""ResourceSlice building: NVIDIA's attribute schema in our domain, sharing and the memory requestPolicy
exactly as the API server requires, pool splitting at the device limit, and the driver's flags."""

from __future__ import annotations

import dataclasses

import kubernetes_validate
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drakit.gpuprofiles import load_profile
from drakit.quantity import parse_bytes
from driver.inventory import load_inventory
from driver.slices import MAX_DEVICES_PER_SLICE, PublishSettings, SlicePolicyError, build_slices, semver

MiB = 1 << 20
GiB = 1 << 30
SHARED = PublishSettings("node-1", "gpu.sharing.example.dev", True, "range", MiB, MiB)


def _memory(slices: list[dict], i: int = 0) -> dict:
    return slices[0]["spec"]["devices"][i]["capacity"]["memory"]


def test_device_carries_nvidia_attribute_schema_in_our_domain_and_memory_in_bytes() -> None:
    gpus = load_profile("mixed", "node-1")
    [s] = build_slices(gpus, SHARED, 1)
    assert s["spec"]["driver"] == "gpu.sharing.example.dev"
    assert s["spec"]["pool"] == {"name": "node-1", "generation": 1, "resourceSliceCount": 1}
    assert s["spec"]["nodeName"] == "node-1"
    dev = s["spec"]["devices"][1]
    assert dev["name"] == "gpu-1"
    assert dev["attributes"] == {
        "type": {"string": "gpu"},
        "uuid": {"string": gpus[1].uuid},
        "productName": {"string": "NVIDIA GeForce RTX 3060"},
        "brand": {"string": "GeForce"},
        "architecture": {"string": "Ampere"},
        "cudaComputeCapability": {"version": "8.6.0"},
        "driverVersion": {"version": "550.54.15"},
        "cudaDriverVersion": {"version": "12.4.0"},
        "index": {"int": 1},
        "resource.kubernetes.io/pciBusID": {"string": "0000:02:00.0"},
    }
    assert dev["allowMultipleAllocations"] is True
    assert dev["capacity"]["memory"]["value"] == "12Gi"


def test_range_policy_defaults_to_whole_gpu_with_1mi_min_and_step() -> None:
    slices = build_slices(load_profile("odd16380", "node-1"), SHARED, 1)
    assert _memory(slices) == {
        "value": "16380Mi",
        "requestPolicy": {
            "default": "16380Mi",
            "validRange": {"min": "1Mi", "step": "1Mi", "max": "16380Mi"},
        },
    }


def test_range_policy_aligns_default_and_max_down_to_the_step_grid_on_an_odd_card() -> None:
    settings = dataclasses.replace(SHARED, memory_min=GiB, memory_step=GiB)
    slices = build_slices(load_profile("odd16380", "node-1"), settings, 1)
    assert _memory(slices)["requestPolicy"] == {
        "default": "15Gi",
        "validRange": {"min": "1Gi", "step": "1Gi", "max": "15Gi"},
    }
    # With min off the step grid, the grid is min + n*step, as API validation requires.
    settings = dataclasses.replace(SHARED, memory_min=MiB, memory_step=GiB)
    policy = _memory(build_slices(load_profile("odd16380", "node-1"), settings, 1))["requestPolicy"]
    assert policy["default"] == policy["validRange"]["max"] == f"{15 * 1024 + 1}Mi"


def test_policy_none_publishes_shared_memory_without_request_policy_like_the_seed_fork() -> None:
    settings = dataclasses.replace(SHARED, memory_policy="none")
    [s] = build_slices(load_profile("rtx3090x2", "node-1"), settings, 1)
    assert all(d["allowMultipleAllocations"] is True for d in s["spec"]["devices"])
    assert all(d["capacity"]["memory"] == {"value": "24Gi"} for d in s["spec"]["devices"])


def test_sharing_off_publishes_exclusive_devices_without_policy() -> None:
    settings = dataclasses.replace(SHARED, sharing=False)
    [s] = build_slices(load_profile("rtx3090x2", "node-1"), settings, 1)
    assert all("allowMultipleAllocations" not in d for d in s["spec"]["devices"])
    assert all("requestPolicy" not in d["capacity"]["memory"] for d in s["spec"]["devices"])


def test_min_plus_step_larger_than_the_gpu_is_an_error_naming_the_flags() -> None:
    settings = dataclasses.replace(SHARED, memory_min=8 * GiB, memory_step=10 * GiB)
    with pytest.raises(SlicePolicyError, match=r"gpu-0 has 16380Mi.*--memory-min 8Gi.*--memory-step 10Gi"):
        build_slices(load_profile("odd16380", "node-1"), settings, 1)


def test_pool_is_split_at_128_devices_with_one_generation_and_slice_count() -> None:
    gpus = load_profile("h100x8", "node-1") * 17  # 136 devices; names repeat but count is what matters
    gpus = [dataclasses.replace(g, index=i) for i, g in enumerate(gpus)]
    slices = build_slices(gpus, SHARED, 7)
    assert [len(s["spec"]["devices"]) for s in slices] == [MAX_DEVICES_PER_SLICE, 8]
    assert {s["spec"]["pool"]["resourceSliceCount"] for s in slices} == {2}
    assert {s["spec"]["pool"]["generation"] for s in slices} == {7}
    assert len({s["metadata"]["name"] for s in slices}) == 2


@pytest.mark.parametrize(
    ("raw", "want"),
    [("8.6", "8.6.0"), ("535.104.05", "535.104.5"), ("12", "12.0.0"), ("550.54.15", "550.54.15")],
)
def test_versions_are_published_as_semver(raw: str, want: str) -> None:
    assert semver(raw) == want


EXCLUSIVE = dataclasses.replace(SHARED, sharing=False, memory_policy="none")


@pytest.mark.parametrize("settings", [SHARED, EXCLUSIVE])
def test_built_slices_pass_the_kubernetes_1_34_schema_strictly(settings: PublishSettings) -> None:
    for s in build_slices(load_inventory("mixed", "node-1").gpus, settings, 1):
        kubernetes_validate.validate(s, "1.34", strict=True)


@settings(max_examples=60, deadline=None)
@given(
    memory_mib=st.integers(2, 200 * 1024),
    extra_bytes=st.sampled_from([0, 1, 4095]),
    min_mib=st.sampled_from([1, 7, 256, 1024]),
    step_mib=st.sampled_from([1, 3, 512, 1024, 4096]),
)
def test_every_range_policy_built_is_accepted_by_api_validation(
    memory_mib: int, extra_bytes: int, min_mib: int, step_mib: int
) -> None:
    from sim.apiserver.store import Store

    memory = memory_mib * MiB + extra_bytes
    gpu = dataclasses.replace(load_profile("odd16380", "node-1")[0], memory_bytes=memory)
    chosen = dataclasses.replace(SHARED, memory_min=min_mib * MiB, memory_step=step_mib * MiB)
    try:
        [s] = build_slices([gpu], chosen, 1)
    except SlicePolicyError:
        assert (min_mib + step_mib) * MiB > gpu.memory_bytes
        return
    policy = s["spec"]["devices"][0]["capacity"]["memory"]["requestPolicy"]
    top = parse_bytes(policy["validRange"]["max"], "max")
    assert gpu.memory_bytes - step_mib * MiB < top <= gpu.memory_bytes  # the largest grid point that fits
    Store().create("resourceslices.resource.k8s.io", s)  # validation as the API server does it
