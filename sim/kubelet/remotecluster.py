"""Nodes only: the sim's kubelets and drivers against an API server the sim did not start.

It has the surface of ``sim.cluster.Cluster`` that the kubelet fleet uses (nodes, store_for, add,
set_log_provider, write_kubeconfig), so ``sim.kubelet.fleet`` runs unchanged on top of it.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from sim.kubelet.remote import Connection, KubeletApi, LogReader, RemoteStore

log = logging.getLogger(__name__)


class RemoteCluster:
    def __init__(
        self,
        kubeconfig: Path,
        nodes: list[str],
        *,
        node_kubeconfig_dir: Path | None = None,
        kubelet_tls: tuple[Path, Path, Path] | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.connection = Connection.from_kubeconfig(kubeconfig)
        self.store = RemoteStore(self.connection)
        self.nodes = list(nodes)
        self.node_stores: dict[str, RemoteStore] = {}
        for n in self.nodes:
            conn = self.connection
            if node_kubeconfig_dir is not None:
                conn = Connection.from_kubeconfig(node_kubeconfig_dir / f"{n}.kubeconfig")
            self.node_stores[n] = RemoteStore(conn, n)
        self._log_provider: LogReader | None = None
        self.api = KubeletApi(*kubelet_tls, read_log=self._read_log) if kubelet_tls else None
        self.components: list[Any] = []
        self._started: list[Any] = []
        self.kubelets: dict[str, Any] = {}
        self.server_version = ""

    @property
    def url(self) -> str:
        return self.connection.url

    def store_for(self, node: str) -> RemoteStore:
        return self.node_stores[node]

    def add(self, component: Any) -> Any:
        self.components.append(component)
        return component

    def set_log_provider(self, provider: LogReader | None) -> None:
        self._log_provider = provider

    def _read_log(self, namespace: str, pod: str, container: str | None, previous: bool) -> bytes:
        from sim.apiserver.errors import ApiError

        if self._log_provider is None:
            raise ApiError(503, "ServiceUnavailable", "the sim kubelets are not serving logs yet")
        return self._log_provider(namespace, pod, container, previous)

    def start(self) -> None:
        version = self.store.request("GET", "/version")
        self.server_version = str(version.get("gitVersion", ""))
        port = self.api.port if self.api else 0
        for s in self.node_stores.values():
            s.server_version, s.kubelet_port = self.server_version, port
        try:
            if self.api is not None:
                self.api.start()
            for c in self.components:
                c.start()
                self._started.append(c)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        while self._started:
            c = self._started.pop()
            try:
                c.stop()
            except Exception:
                log.exception("stopping %r failed", c)
        if self.api is not None:
            self.api.stop()
            self.api = None

    def write_kubeconfig(self, path: str | os.PathLike[str]) -> Path:
        """The kubeconfig the drivers get: a private copy of the one this sim was given."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.kubeconfig, target)
        target.chmod(0o600)
        return target
