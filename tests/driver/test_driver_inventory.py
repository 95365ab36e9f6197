"""GPU inventory: mock profiles (shipped ones, strict keys, stable UUIDs) and NVML (real library missing
here; the NVML code path driven by a fake NVML library standing in for GPU hardware)."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from drakit.gpuprofiles import PROFILE_DIR, load_profile, mock_uuid
from driver.inventory import InventoryError, load_inventory
from driver.inventory.nvml import discover, normalise_pci_bus_id

GiB = 1 << 30
MiB = 1 << 20


@pytest.mark.parametrize(
    ("profile", "models", "memory"),
    [
        ("rtx3090x2", ["NVIDIA GeForce RTX 3090"] * 2, [24 * GiB] * 2),
        ("mixed", ["NVIDIA GeForce RTX 3090", "NVIDIA GeForce RTX 3060"], [24 * GiB, 12 * GiB]),
        ("h100x8", ["NVIDIA H100 80GB HBM3"] * 8, [80 * GiB] * 8),
        ("odd16380", ["Mock GPU 16380MiB"], [16380 * MiB]),
    ],
)
def test_shipped_profiles_load_with_their_models_and_memory(
    profile: str, models: list[str], memory: list[int]
) -> None:
    inv = load_inventory(profile, "node-1")
    assert inv.source == "mock" and not inv.real
    assert [g.product_name for g in inv.gpus] == models
    assert [g.memory_bytes for g in inv.gpus] == memory
    assert [g.device_name for g in inv.gpus] == [f"gpu-{i}" for i in range(len(models))]


def test_profile_by_path_works_like_profile_by_name() -> None:
    by_path = load_inventory(str(PROFILE_DIR / "mixed.yaml"), "n")
    assert by_path == load_inventory("mixed", "n")


def test_mock_uuids_are_stable_per_node_and_index_and_distinct_across_nodes() -> None:
    a1 = [g.uuid for g in load_profile("h100x8", "node-a")]
    a2 = [g.uuid for g in load_profile("h100x8", "node-a")]
    b = [g.uuid for g in load_profile("h100x8", "node-b")]
    assert a1 == a2
    assert len(set(a1) | set(b)) == 16
    assert a1[3] == mock_uuid("node-a", 3)
    assert all(u.startswith("GPU-") and len(u) == 40 for u in a1)


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return str(path)


GOOD = """driverVersion: "550.1"
cudaDriverVersion: "12.4"
gpus:
  - model: X
    memory: 8Gi
    brand: GeForce
    architecture: Ampere
    cudaComputeCapability: "8.6"
"""


def test_unknown_key_in_profile_is_an_error_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match=r"gpus\[0\]: unknown key 'memroy'"):
        load_profile(_write(tmp_path, GOOD.replace("memory: 8Gi", "memroy: 8Gi")), "n")
    with pytest.raises(InventoryError, match=r"unknown key 'vendor'"):
        load_profile(_write(tmp_path, GOOD + "vendor: nvidia\n"), "n")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("memory: 8Gi", "memory: lots"), r"gpus\[0\]\.memory: 'lots' is not a quantity"),
        (("memory: 8Gi", "memory: 0"), r"gpus\[0\]\.memory: must be more than 0"),
        (
            ("  - model: X\n", "  - model: X\n    count: 0\n"),
            r"gpus\[0\]\.count: expected a positive integer",
        ),
        (('cudaDriverVersion: "12.4"\n', ""), r"missing required key 'cudaDriverVersion'"),
    ],
)
def test_bad_profile_values_are_errors_naming_the_field(
    tmp_path: Path, edit: tuple[str, str], message: str
) -> None:
    with pytest.raises(InventoryError, match=message):
        load_profile(_write(tmp_path, GOOD.replace(*edit)), "n")


def test_unknown_profile_name_lists_the_shipped_ones() -> None:
    with pytest.raises(InventoryError, match=r"'nope'.*rtx3090x2"):
        load_inventory("nope", "n")


def test_nvml_without_the_library_says_to_install_the_driver_or_use_a_mock_profile() -> None:
    # This machine has nvidia-ml-py but no libnvidia-ml.so.1: the real failure path.
    with pytest.raises(InventoryError) as err:
        load_inventory("nvml", "n")
    assert "install the NVIDIA driver" in str(err.value)
    assert "--gpus <profile>" in str(err.value)


class FakeNVMLError(Exception):
    pass


def fake_nvml(mig: list[bool]) -> Any:
    """Stands in for the GPU hardware behind NVML: the same function names and shapes as pynvml."""
    shut = []
    handles = list(range(len(mig)))

    def mig_mode(h: int) -> list[int]:
        if h == 0:
            raise FakeNVMLError("Not Supported")  # a GPU without MIG support
        return [1 if mig[h] else 0, 0]

    return SimpleNamespace(
        NVMLError=FakeNVMLError,
        NVML_DEVICE_MIG_ENABLE=1,
        shut=shut,
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: shut.append(True),
        nvmlSystemGetDriverVersion=lambda: "535.104.05",
        nvmlSystemGetCudaDriverVersion=lambda: 12020,
        nvmlDeviceGetCount=lambda: len(handles),
        nvmlDeviceGetHandleByIndex=lambda i: handles[i],
        nvmlDeviceGetIndex=lambda h: h,
        nvmlDeviceGetUUID=lambda h: f"GPU-0000000{h}-aaaa-bbbb-cccc-dddddddddddd",
        nvmlDeviceGetMigMode=mig_mode,
        nvmlDeviceGetCudaComputeCapability=lambda h: (9, 0),
        nvmlDeviceGetName=lambda h: "NVIDIA H100 80GB HBM3",
        nvmlDeviceGetBrand=lambda h: 14,
        nvmlDeviceGetArchitecture=lambda h: 9,
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(total=81559 * MiB),
        nvmlDeviceGetPciInfo=lambda h: SimpleNamespace(busId=f"00000000:{0x18 + h:02X}:00.0"),
        nvmlDeviceGetMinorNumber=lambda h: h,
    )


def test_nvml_inventory_reads_each_gpu_and_leaves_out_mig_enabled_ones_with_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nvml = fake_nvml(mig=[False, True, False])
    with caplog.at_level(logging.WARNING):
        gpus = discover(nvml)
    assert [g.index for g in gpus] == [0, 2]
    assert "GPU 1 (GPU-00000001-aaaa-bbbb-cccc-dddddddddddd) has MIG enabled: left out" in caplog.text
    g = gpus[1]
    assert (g.product_name, g.brand, g.architecture) == ("NVIDIA H100 80GB HBM3", "Nvidia", "Hopper")
    assert g.memory_bytes == 81559 * MiB
    versions = (g.cuda_compute_capability, g.driver_version, g.cuda_driver_version)
    assert versions == ("9.0", "535.104.05", "12.2")
    assert g.pci_bus_id == "0000:1a:00.0"
    assert nvml.shut == [True]


def test_pci_bus_id_is_normalised_to_a_four_digit_domain() -> None:
    assert normalise_pci_bus_id("00000000:3B:00.0") == "0000:3b:00.0"
