"""Mock GPU profiles (``drakit/gpus/*.yaml``): the one lookup and parser, with UUIDs stable per (node
name, index). The reference driver's mock inventory, the sim's ``--gpus`` flag and the suite's input
check all read a profile through here, so they cannot disagree about what a profile holds."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from drakit.quantity import QuantityError, parse_bytes

# Package data. setuptools installs packages as directories (never zipped), so this is a real
# directory: its files are handed to driver processes by path.
PROFILE_DIR = Path(str(resources.files("drakit") / "gpus"))
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


class InventoryError(RuntimeError):
    """The GPUs could not be discovered; the message says what to fix."""


@dataclass(frozen=True)
class GpuInfo:
    """One full GPU as the driver publishes it. Versions are kept as reported (normalised at publish)."""

    index: int
    uuid: str
    product_name: str
    brand: str
    architecture: str
    memory_bytes: int
    cuda_compute_capability: str
    driver_version: str
    cuda_driver_version: str
    pci_bus_id: str
    minor: int

    @property
    def device_name(self) -> str:
        return f"gpu-{self.index}"


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


def parse_gpus(text: str, nodes: list[str]) -> dict[str, str]:
    """``PROFILE`` for every node, or ``node-1=PROFILE,node-2=PROFILE`` per node."""
    text = text.strip()
    if not text:
        raise ValueError("--gpus is empty; give a profile (e.g. rtx3090x2) or node-1=PROFILE,node-2=PROFILE")
    if not nodes:
        raise ValueError("--gpus needs nodes to run drivers on; add --nodes node-1[,node-2...]")
    if "=" not in text:
        return {n: _profile_arg(text) for n in nodes}
    out: dict[str, str] = {}
    for item in (i.strip() for i in text.split(",")):
        node, sep, profile = item.partition("=")
        if not sep or not node or not profile:
            raise ValueError(f"--gpus entry {item!r} must look like NODE=PROFILE")
        if node not in nodes:
            raise ValueError(f"--gpus names node {node!r}, which is not in --nodes ({','.join(nodes)})")
        if node in out:
            raise ValueError(f"--gpus names node {node!r} twice")
        out[node] = _profile_arg(profile)
    return out


def _profile_arg(profile: str) -> str:
    """Check the profile exists before any driver starts; relative paths become absolute, because the
    drivers run from the repository root."""
    if profile == "nvml":
        return profile
    try:
        path = resolve_profile(profile)
        # Parsed here by the parser the driver uses: a broken file is named now instead of crash-looping
        # every driver.
        load_profile(str(path), "node")
    except InventoryError as e:
        raise ValueError(f"--gpus: {' '.join(str(e).split())}") from e
    return profile if path.parent == PROFILE_DIR and not Path(profile).exists() else str(path.resolve())
