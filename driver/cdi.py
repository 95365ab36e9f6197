"""CDI spec files: one per claim, one CDI device per (GPU, shareID), named as the contracts say."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from driver.atomicfile import remove_durably, write_atomic

CDI_VERSION = "1.0.0"
CDI_CLASS = "gpu"


def cdi_kind(driver_name: str) -> str:
    return f"k8s.{driver_name}/{CDI_CLASS}"


def spec_path(cdi_dir: Path, driver_name: str, claim_uid: str) -> Path:
    # Transient spec names are "<vendor>-<class>_<id>" with "/" replaced (CDI pkg/cdi spec-dirs).
    return cdi_dir / f"{cdi_kind(driver_name).replace('/', '-')}_{claim_uid}.json"


def spec_file_pattern(driver_name: str) -> re.Pattern[str]:
    return re.compile(re.escape(f"{cdi_kind(driver_name).replace('/', '-')}_") + r"(?P<uid>[^/]+)\.json")


def list_temp_files(cdi_dir: Path, driver_name: str) -> list[Path]:
    """Temporary files of interrupted spec writes (see atomicfile.write_atomic)."""
    prefix = f".{cdi_kind(driver_name).replace('/', '-')}_"
    if not cdi_dir.is_dir():
        return []
    return [p for p in cdi_dir.iterdir() if p.name.startswith(prefix) and p.name.endswith(".json.tmp")]


def device_name(claim_uid: str, gpu_index: int, share_id: str | None) -> str:
    base = f"{claim_uid}-gpu-{gpu_index}"
    return f"{base}-{share_id}" if share_id else base


def qualified_id(driver_name: str, name: str) -> str:
    return f"{cdi_kind(driver_name)}={name}"


def container_env(gpu_index: int, uuid: str, memory: int, share_id: str | None) -> list[str]:
    """The env a container gets for one (GPU, share); see the contracts in docs/architecture.md."""
    return [
        f"GPU_DEVICE_{gpu_index}={uuid}",
        f"GPU_DEVICE_{gpu_index}_MEMORY={memory}",
        f"GPU_DEVICE_{gpu_index}_SHARE_ID={share_id or ''}",
    ]


def visible_devices_env(uuids: list[str]) -> str:
    """What the NVIDIA Container Toolkit (nvidia runtime) needs to expose these GPUs."""
    return f"NVIDIA_VISIBLE_DEVICES={','.join(uuids)}"


def build_spec(driver_name: str, devices: list[dict[str, Any]]) -> dict[str, Any]:
    """`devices`: [{"name": cdi device name, "env": ["K=V", ...]}, ...]."""
    return {
        "cdiVersion": CDI_VERSION,
        "kind": cdi_kind(driver_name),
        "devices": [{"name": d["name"], "containerEdits": {"env": d["env"]}} for d in devices],
    }


def write_spec(cdi_dir: Path, driver_name: str, claim_uid: str, spec: dict[str, Any]) -> Path:
    path = spec_path(cdi_dir, driver_name, claim_uid)
    write_atomic(path, json.dumps(spec, indent=2, sort_keys=True).encode())
    return path


def remove_spec(cdi_dir: Path, driver_name: str, claim_uid: str) -> bool:
    return remove_durably(spec_path(cdi_dir, driver_name, claim_uid))


def list_spec_claims(cdi_dir: Path, driver_name: str) -> set[str]:
    """Claim UIDs that have a spec file from this driver in `cdi_dir`."""
    pattern = spec_file_pattern(driver_name)
    if not cdi_dir.is_dir():
        return set()
    return {m["uid"] for p in cdi_dir.iterdir() if (m := pattern.fullmatch(p.name))}
