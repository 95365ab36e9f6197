"""Cluster: owns the Store, the HTTP API server and the control-plane/node components.

Adding a component is two lines in sim/__main__.py (or a test):

    cluster = Cluster(config, nodes=["node-1"])
    cluster.add(MyComponent(cluster))      # anything with start() and stop()

start() brings up the API server, creates the Node objects, then starts components in order;
stop() stops them in reverse order, then the server. Components get the cluster and use
`cluster.store` in-process.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Protocol, TypeVar

from drakit.kubeconfig import write_kubeconfig

from .apiserver.server import ApiServer
from .apiserver.store import DEFAULT_HISTORY, LogProvider, Store
from .config import SimConfig
from .kubelet.nodeobject import node_object

log = logging.getLogger("sim.cluster")


class Component(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


C = TypeVar("C", bound=Component)


class Cluster:
    def __init__(
        self,
        config: SimConfig | None = None,
        nodes: list[str] | tuple[str, ...] = (),
        port: int = 0,
        watch_history: int = DEFAULT_HISTORY,
    ) -> None:
        self.config = config or SimConfig()
        self.store = Store(self.config, history=watch_history)
        self.server = ApiServer(self.store, port)
        self.nodes = list(nodes)
        self.components: list[Component] = []
        self._started: list[Component] = []
        self._serving = False
        # node name -> sim.kubelet.Kubelet, filled by sim.kubelet.fleet.add_kubelets (python -m sim --gpus).
        self.kubelets: dict[str, Any] = {}

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def token(self) -> str:
        """The bearer token of this cluster's API (also in every kubeconfig it writes)."""
        return self.server.token

    def store_for(self, node: str) -> Store:
        """The store a node's kubelet uses (the in-process one for every node)."""
        return self.store

    def add(self, component: C) -> C:
        self.components.append(component)
        if self._serving:
            component.start()
            self._started.append(component)
        return component

    def set_log_provider(self, provider: LogProvider | None) -> None:
        """The kubelet registers provider(namespace, pod, container) -> bytes for GET pods/<p>/log."""
        self.store.log_provider = provider

    def start(self) -> None:
        self.server.start()
        self._serving = True
        try:
            for name in self.nodes:
                self.store.create("nodes", node_object(name, self.config.git_version))
            for c in self.components:
                c.start()
                self._started.append(c)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        errors = []
        while self._started:
            c = self._started.pop()
            try:
                c.stop()
            except Exception as e:  # keep stopping the rest; report at the end
                log.exception("stopping %r failed", c)
                errors.append(e)
        if self._serving:
            self._serving = False
            self.server.stop()
        if errors:
            raise RuntimeError(f"{len(errors)} component(s) failed to stop: {errors}")

    def write_kubeconfig(self, path: str | os.PathLike[str]) -> Path:
        return write_kubeconfig(path, self.url, self.server.token, self.server.ca_pem)

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
