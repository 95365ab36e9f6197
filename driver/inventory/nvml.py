"""Real GPUs through NVML (`nvidia-ml-py`, import name `pynvml`)."""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

from drakit.gpuprofiles import GpuInfo, InventoryError

log = logging.getLogger(__name__)

_NO_NVML = (
    "NVML is not available ({why}). On a node with NVIDIA GPUs install the NVIDIA driver "
    "(libnvidia-ml.so.1); on a machine without GPUs run with --gpus <profile> (mock GPUs, e.g. "
    "--gpus rtx3090x2)."
)

# Names as NVIDIA's driver publishes them (go-nvml brand / architecture strings).
_BRANDS = {
    0: "Unknown",
    1: "Quadro",
    2: "Tesla",
    3: "NVS",
    4: "Grid",
    5: "GeForce",
    6: "Titan",
    7: "NvidiaVApps",
    8: "NvidiaVPC",
    9: "NvidiaVCS",
    10: "NvidiaVWS",
    11: "NvidiaCloudGaming",
    12: "QuadroRTX",
    13: "NvidiaRTX",
    14: "Nvidia",
    15: "GeForceRTX",
    16: "TitanRTX",
}
_ARCHITECTURES = {
    2: "Kepler",
    3: "Maxwell",
    4: "Pascal",
    5: "Volta",
    6: "Turing",
    7: "Ampere",
    8: "Ada Lovelace",
    9: "Hopper",
    10: "Blackwell",
}


def _import_pynvml() -> ModuleType:
    try:
        import pynvml
    except ImportError as err:
        raise InventoryError(_NO_NVML.format(why="the nvidia-ml-py package is not installed")) from err
    return pynvml


def normalise_pci_bus_id(bus_id: str) -> str:
    """NVML reports "00000000:01:00.0"; the standard attribute uses a 4-digit domain: "0000:01:00.0"."""
    domain, _, rest = bus_id.lower().partition(":")
    return f"{int(domain, 16):04x}:{rest}" if rest else bus_id.lower()


def _cuda_version(encoded: int) -> str:
    return f"{encoded // 1000}.{(encoded % 1000) // 10}"


def _mig_enabled(nvml: Any, handle: Any) -> bool:
    try:
        current, _pending = nvml.nvmlDeviceGetMigMode(handle)
    except nvml.NVMLError:
        # GPUs without MIG support answer NotSupported: they are plain full GPUs.
        return False
    return bool(current == nvml.NVML_DEVICE_MIG_ENABLE)


def discover(nvml: Any = None) -> list[GpuInfo]:
    """Full GPUs on this machine. MIG-enabled GPUs are left out (logged), because this driver publishes
    only full GPUs and a MIG-enabled parent cannot be handed to a container whole."""
    nvml = nvml or _import_pynvml()
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as err:
        raise InventoryError(_NO_NVML.format(why=f"nvmlInit failed: {err}")) from err
    try:
        driver_version = nvml.nvmlSystemGetDriverVersion()
        cuda_driver_version = _cuda_version(nvml.nvmlSystemGetCudaDriverVersion())
        gpus = []
        for i in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            uuid = nvml.nvmlDeviceGetUUID(handle)
            if _mig_enabled(nvml, handle):
                log.warning(
                    "GPU %d (%s) has MIG enabled: left out, this driver publishes full GPUs only", i, uuid
                )
                continue
            major, minor_cc = nvml.nvmlDeviceGetCudaComputeCapability(handle)
            gpus.append(
                GpuInfo(
                    index=nvml.nvmlDeviceGetIndex(handle),
                    uuid=uuid,
                    product_name=nvml.nvmlDeviceGetName(handle),
                    brand=_BRANDS.get(nvml.nvmlDeviceGetBrand(handle), "Unknown"),
                    architecture=_ARCHITECTURES.get(nvml.nvmlDeviceGetArchitecture(handle), "Unknown"),
                    memory_bytes=int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
                    cuda_compute_capability=f"{major}.{minor_cc}",
                    driver_version=driver_version,
                    cuda_driver_version=cuda_driver_version,
                    pci_bus_id=normalise_pci_bus_id(str(nvml.nvmlDeviceGetPciInfo(handle).busId)),
                    minor=nvml.nvmlDeviceGetMinorNumber(handle),
                )
            )
            log.info("NVML GPU %d: %s, %d bytes, %s", i, gpus[-1].product_name, gpus[-1].memory_bytes, uuid)
        return gpus
    except nvml.NVMLError as err:
        raise InventoryError(f"NVML query failed: {err}") from err
    finally:
        nvml.nvmlShutdown()
