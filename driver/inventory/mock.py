"""Mock GPUs from a profile in fixtures/gpus/*.yaml, with UUIDs stable per (node name, index)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import yaml

from driver.inventory import GpuInfo, InventoryError
from driver.quantities import QuantityError, parse_bytes

PROFILE_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "gpus"
# Fixed namespace so the same node and index give the same UUID on every run and every machine.
_UUID_NAMESPACE = uuid.UUID("6f1c2a52-8d0e-4c5b-9d65-3f0a7b2e9c41")

_TOP_KEYS = {"description": False, "driverVersion": True, "cudaDriverVersion": True, "gpus": True}
_GPU_KEYS = {
    "model": True,
    "memory": True,
    "count": False,
    "brand": True,
    "architecture": True,
    "cudaComputeCapability": True,
}


def resolve_profile(profile: str) -> Path:
    path = Path(profile)
    if path.suffix in {".yaml", ".yml"} or path.exists():
        if not path.is_file():
            raise InventoryError(f"GPU profile {profile!r}: no such file")
        return path
    candidate = PROFILE_DIR / f"{profile}.yaml"
    if not candidate.is_file():
        known = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
        raise InventoryError(f"GPU profile {profile!r}: not a file and not one of {known} in {PROFILE_DIR}")
    return candidate


def mock_uuid(node_name: str, index: int) -> str:
    return f"GPU-{uuid.uuid5(_UUID_NAMESPACE, f'{node_name}/{index}')}"


def _check_keys(where: str, data: Any, keys: dict[str, bool]) -> None:
    if not isinstance(data, dict):
        raise InventoryError(f"{where}: expected a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - set(keys))
    if unknown:
        raise InventoryError(f"{where}: unknown key {unknown[0]!r}; allowed keys are {sorted(keys)}")
    missing = sorted(k for k, required in keys.items() if required and k not in data)
    if missing:
        raise InventoryError(f"{where}: missing required key {missing[0]!r}")


def _text(where: str, value: Any) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool) or str(value) == "":
        raise InventoryError(f"{where}: expected a non-empty string, got {value!r}")
    return str(value)


def parse_profile(data: Any, node_name: str, source: str) -> list[GpuInfo]:
    _check_keys(source, data, _TOP_KEYS)
    driver_version = _text(f"{source}: driverVersion", data["driverVersion"])
    cuda_driver_version = _text(f"{source}: cudaDriverVersion", data["cudaDriverVersion"])
    groups = data["gpus"]
    if not isinstance(groups, list) or not groups:
        raise InventoryError(f"{source}: gpus must be a non-empty list")
    gpus: list[GpuInfo] = []
    for g, group in enumerate(groups):
        where = f"{source}: gpus[{g}]"
        _check_keys(where, group, _GPU_KEYS)
        count = group.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise InventoryError(f"{where}.count: expected a positive integer, got {count!r}")
        try:
            memory = parse_bytes(group["memory"], f"{where}.memory")
        except QuantityError as err:
            raise InventoryError(str(err)) from err
        if memory == 0:
            raise InventoryError(f"{where}.memory: must be more than 0")
        for _ in range(count):
            index = len(gpus)
            gpus.append(
                GpuInfo(
                    index=index,
                    uuid=mock_uuid(node_name, index),
                    product_name=_text(f"{where}.model", group["model"]),
                    brand=_text(f"{where}.brand", group["brand"]),
                    architecture=_text(f"{where}.architecture", group["architecture"]),
                    memory_bytes=memory,
                    cuda_compute_capability=_text(
                        f"{where}.cudaComputeCapability", group["cudaComputeCapability"]
                    ),
                    driver_version=driver_version,
                    cuda_driver_version=cuda_driver_version,
                    # Mock bus ids follow the NVML shape so selectors on pciBusID behave as on real nodes.
                    pci_bus_id=f"0000:{index + 1:02x}:00.0",
                    minor=index,
                )
            )
    return gpus


def load_profile(profile: str, node_name: str) -> list[GpuInfo]:
    path = resolve_profile(profile)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise InventoryError(f"GPU profile {path}: not valid YAML: {err}") from err
    return parse_profile(data, node_name, f"GPU profile {path}")
