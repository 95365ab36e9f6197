"""Build this node's ResourceSlices (resource.k8s.io/v1) from the inventory: a pure function, no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from drakit.quantity import format_bytes
from driver.inventory import GpuInfo

MAX_DEVICES_PER_SLICE = 128  # ResourceSliceMaxDevices; our devices use no taints or counters
STANDARD_DOMAIN = "resource.kubernetes.io"


class SlicePolicyError(ValueError):
    pass


@dataclass(frozen=True)
class PublishSettings:
    node_name: str
    driver_name: str
    sharing: bool
    memory_policy: str  # "none" | "range"
    memory_min: int
    memory_step: int


def semver(version: str) -> str:
    """Normalise a reported version to semver 2.0.0 as NVIDIA's driver does: "8.6" -> "8.6.0",
    "535.104.05" -> "535.104.5" (semver forbids leading zeros)."""
    parts = re.findall(r"\d+", version)[:3]
    if not parts:
        raise SlicePolicyError(f"version {version!r} has no numeric part to publish")
    parts += ["0"] * (3 - len(parts))
    return ".".join(str(int(p)) for p in parts)


def memory_range(memory: int, settings: PublishSettings, device: str) -> dict[str, Any]:
    """requestPolicy for one GPU: default = the whole GPU and max = memory aligned down to the step grid
    (min + n*step), because the API server requires both on that grid and no larger than the value."""
    lo, step = settings.memory_min, settings.memory_step
    if lo + step > memory:
        raise SlicePolicyError(
            f"{device} has {format_bytes(memory)} of memory: --memory-min {format_bytes(lo)} plus "
            f"--memory-step {format_bytes(step)} must not exceed it; lower --memory-min or --memory-step"
        )
    top = lo + (memory - lo) // step * step
    return {
        "default": format_bytes(top),
        "validRange": {"min": format_bytes(lo), "step": format_bytes(step), "max": format_bytes(top)},
    }


def device_entry(gpu: GpuInfo, settings: PublishSettings) -> dict[str, Any]:
    memory: dict[str, Any] = {"value": format_bytes(gpu.memory_bytes)}
    if settings.sharing and settings.memory_policy == "range":
        memory["requestPolicy"] = memory_range(gpu.memory_bytes, settings, gpu.device_name)
    device: dict[str, Any] = {
        "name": gpu.device_name,
        "attributes": {
            "type": {"string": "gpu"},
            "uuid": {"string": gpu.uuid},
            "productName": {"string": gpu.product_name},
            "brand": {"string": gpu.brand},
            "architecture": {"string": gpu.architecture},
            "cudaComputeCapability": {"version": semver(gpu.cuda_compute_capability)},
            "driverVersion": {"version": semver(gpu.driver_version)},
            "cudaDriverVersion": {"version": semver(gpu.cuda_driver_version)},
            "index": {"int": gpu.index},
            f"{STANDARD_DOMAIN}/pciBusID": {"string": gpu.pci_bus_id},
        },
        "capacity": {"memory": memory},
    }
    if settings.sharing:
        device["allowMultipleAllocations"] = True
    return device


def slice_name(settings: PublishSettings, k: int) -> str:
    return f"{settings.node_name}-{settings.driver_name}-{k}"[:253].rstrip(".-")


def build_slices(
    gpus: tuple[GpuInfo, ...] | list[GpuInfo], settings: PublishSettings, generation: int
) -> list[dict[str, Any]]:
    """The complete desired set of slices for one pool (pool name = node name)."""
    devices = [device_entry(gpu, settings) for gpu in sorted(gpus, key=lambda g: g.index)]
    chunks = [devices[i : i + MAX_DEVICES_PER_SLICE] for i in range(0, len(devices), MAX_DEVICES_PER_SLICE)]
    chunks = chunks or [[]]  # an empty pool is still published, so the scheduler sees "no devices"
    return [
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceSlice",
            "metadata": {"name": slice_name(settings, k)},
            "spec": {
                "driver": settings.driver_name,
                "nodeName": settings.node_name,
                "pool": {
                    "name": settings.node_name,
                    "generation": generation,
                    "resourceSliceCount": len(chunks),
                },
                "devices": chunk,
            },
        }
        for k, chunk in enumerate(chunks)
    ]
