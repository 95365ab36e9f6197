"""The driver's record of prepared claims. Unprepare works from it because the claim may be gone from the
API by then. One JSON file, written atomically, with a checksum so a damaged file is detected, not trusted.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from driver.atomicfile import temp_path_for, write_atomic

CHECKPOINT_VERSION = 1
FILE_NAME = "checkpoint.json"

# A claim is recorded as started before its CDI spec is written and completed after, so a crash between
# the two is recognisable on restart and rolled back (the kubelet retries a prepare it saw fail).
PREPARE_STARTED = "PrepareStarted"
PREPARE_COMPLETED = "PrepareCompleted"


class CheckpointError(RuntimeError):
    pass


def _checksum(claims: dict[str, Any]) -> str:
    canonical = json.dumps(claims, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()


class Checkpoint:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME

    @property
    def temp_path(self) -> Path:
        return temp_path_for(self.path)

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> dict[str, dict[str, Any]]:
        """Claims by UID; empty when no checkpoint exists yet. Raises CheckpointError when it is damaged."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        # True advice: without a checkpoint the driver rebuilds it from the API before it cleans anything
        # (driver/state.py DeviceState.restore); the kubelet does not prepare running pods' claims again.
        fix = (
            f"move it aside (e.g. mv {self.path} {self.path}.corrupt) and start the driver again: "
            "without a checkpoint it rebuilds the claims it prepared from the API (claims allocated on "
            "this node by this driver and reserved by pods) and keeps their CDI specs"
        )
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CheckpointError(f"checkpoint {self.path} is corrupt (not JSON: {err}); {fix}") from err
        if not isinstance(data, dict) or not isinstance(data.get("claims"), dict):
            raise CheckpointError(f"checkpoint {self.path} is corrupt (no 'claims' object); {fix}")
        if data.get("version") != CHECKPOINT_VERSION:
            raise CheckpointError(
                f"checkpoint {self.path} has version {data.get('version')!r}, this driver "
                f"reads version {CHECKPOINT_VERSION}; {fix}"
            )
        if data.get("checksum") != _checksum(data["claims"]):
            raise CheckpointError(f"checkpoint {self.path} is corrupt (checksum mismatch); {fix}")
        return data["claims"]

    def save(self, claims: dict[str, dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = {"version": CHECKPOINT_VERSION, "checksum": _checksum(claims), "claims": claims}
        write_atomic(self.path, json.dumps(body, sort_keys=True).encode())
