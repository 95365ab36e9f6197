"""GPU inventory: what GPUs this node has, from NVML (real GPUs) or a mock profile."""

from __future__ import annotations

from dataclasses import dataclass

# The GPU record and its error are shared with the sim and the suite (mock profiles): drakit owns them.
from drakit.gpuprofiles import GpuInfo, InventoryError

__all__ = ["GpuInfo", "Inventory", "InventoryError", "load_inventory"]


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
    """`gpus` is "nvml" or a mock profile (a path, or a name in drakit/gpus/)."""
    if gpus == "nvml":
        from driver.inventory.nvml import discover

        return Inventory(gpus=tuple(discover()), source="nvml")
    from drakit.gpuprofiles import load_profile

    return Inventory(gpus=tuple(load_profile(gpus, node_name)), source="mock")
