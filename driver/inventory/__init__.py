"""GPU inventory: what GPUs this node has, from NVML (real GPUs) or a mock profile."""

from __future__ import annotations

from dataclasses import dataclass


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


@dataclass(frozen=True)
class Inventory:
    gpus: tuple[GpuInfo, ...]
    # "nvml" on real GPUs: container edits then also carry what the NVIDIA Container Toolkit needs.
    source: str

    @property
    def real(self) -> bool:
        return self.source == "nvml"

    def by_device_name(self) -> dict[str, GpuInfo]:
        return {gpu.device_name: gpu for gpu in self.gpus}


def load_inventory(gpus: str, node_name: str) -> Inventory:
    """`gpus` is "nvml" or a mock profile (a path, or a name in fixtures/gpus/)."""
    if gpus == "nvml":
        from driver.inventory.nvml import discover

        return Inventory(gpus=tuple(discover()), source="nvml")
    from driver.inventory.mock import load_profile

    return Inventory(gpus=tuple(load_profile(gpus, node_name)), source="mock")
