"""Per-node directories, laid out like a real node's /var/lib/kubelet and /var/run/cdi."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

# sun_path in struct sockaddr_un is 108 bytes including the NUL; gRPC cannot bind or dial longer paths.
MAX_UNIX_SOCKET_PATH = 107
ISOLATION_FILE = "container-isolation.json"


@dataclass(frozen=True)
class NodeDirs:
    root: Path

    @property
    def plugins_registry(self) -> Path:
        return self.root / "plugins_registry"

    @property
    def plugins(self) -> Path:
        return self.root / "plugins"

    @property
    def cdi(self) -> Path:
        return self.root / "cdi"

    @property
    def driver_state(self) -> Path:
        return self.root / "driver-state"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pods"

    @property
    def isolation_file(self) -> Path:
        """Whether this node's containers get their CDI device nodes and mounts (container-isolation.json)."""
        return self.root / ISOLATION_FILE

    def write_isolation(self, reason: str | None) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.isolation_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"applied": reason is None, "reason": reason or ""}))
        os.replace(tmp, self.isolation_file)

    def plugin_dir(self, driver_name: str) -> Path:
        return self.plugins / driver_name

    def create(self) -> NodeDirs:
        for d in (self.plugins_registry, self.plugins, self.cdi, self.driver_state, self.pod_logs):
            d.mkdir(parents=True, exist_ok=True)
        return self

    def check_socket_room(self, driver_name: str) -> None:
        """Fail early, naming the flag, when the driver's sockets would not fit in a unix socket path."""
        longest = max(
            len(os.fsencode(self.plugin_dir(driver_name) / "dra.sock")),
            len(os.fsencode(self.plugins_registry / f"{driver_name}-reg.sock")),
        )
        if longest > MAX_UNIX_SOCKET_PATH:
            raise ValueError(
                f"--state-dir {self.root.parent} is too long: the socket paths under it would be {longest} "
                f"bytes, over the {MAX_UNIX_SOCKET_PATH}-byte unix socket limit; use a shorter directory "
                "(for example one made by tempfile.mkdtemp(dir='/tmp'))"
            )
