"""The nodes' kubelets as one cluster component, built from the ``sim`` command-line flags.

    fleet = add_kubelets(cluster, gpus="rtx3090x2", state_dir=None)   # one reference driver per node
    cluster.kubelets["node-1"].kill_driver()                           # the driver is restarted
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from driver.inventory import InventoryError
from driver.inventory.mock import PROFILE_DIR, load_profile, resolve_profile
from sim.apiserver.errors import ApiError
from sim.kubelet.kubelet import DEFAULT_SLICE_WIPE_DELAY_S, DriverConfig, Kubelet
from sim.kubelet.nodedirs import NodeDirs

log = logging.getLogger(__name__)


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
        # Parsed here by the driver's own parser: a broken file is named now instead of crash-looping
        # every driver.
        load_profile(str(path), "node")
    except InventoryError as e:
        raise ValueError(f"--gpus: {' '.join(str(e).split())}") from e
    return profile if path.parent == PROFILE_DIR and not Path(profile).exists() else str(path.resolve())


class KubeletFleet:
    """One kubelet per node; each starts its node's driver when that node has a GPU profile."""

    def __init__(self, cluster: Any, gpus: dict[str, str], *, state_dir: Path | None = None,
                 driver_command: list[str] | None = None, driver_args: list[str] | None = None,
                 slice_wipe_delay: float = DEFAULT_SLICE_WIPE_DELAY_S):
        self.cluster = cluster
        self.gpus = gpus
        self._own_state_dir = state_dir is None
        # Short by default: unix socket paths under it are limited to 107 bytes.
        self.state_dir = Path(state_dir) if state_dir else Path(tempfile.mkdtemp(prefix="sim-", dir="/tmp"))
        self.driver_command = driver_command or DriverConfig.parse_command(None)
        self.driver_args = list(driver_args or [])
        self.slice_wipe_delay = slice_wipe_delay
        self.kubelets: dict[str, Kubelet] = {}

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        kubeconfig = self.cluster.write_kubeconfig(self.state_dir / "kubeconfig")  # the API serves already
        try:
            for node in self.cluster.nodes:
                driver = None
                if node in self.gpus:
                    driver = DriverConfig(gpus=self.gpus[node], kubeconfig=kubeconfig,
                                          command=list(self.driver_command), args=list(self.driver_args))
                k = Kubelet(self.cluster.store, node, self.state_dir, driver=driver,
                            slice_wipe_delay=self.slice_wipe_delay)
                self.kubelets[node] = k
                k.start()
        except BaseException:
            self.stop()
            raise
        self.cluster.set_log_provider(self.read_log)

    def stop(self) -> None:
        self.cluster.set_log_provider(None)
        for k in list(self.kubelets.values()):
            try:
                k.stop()
            except Exception:
                log.exception("stopping the kubelet of %s failed", k.node_name)
        if self._own_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def read_log(self, namespace: str, name: str, container: str | None, previous: bool = False) -> bytes:
        pod = self.cluster.store.get("pods", name, namespace=namespace)
        node = pod.get("spec", {}).get("nodeName")
        kubelet = self.kubelets.get(node or "")
        if kubelet is None:
            raise ApiError(400, "BadRequest", f'container "{container}" in pod "{name}" is waiting to start: '
                                              "no kubelet serves logs for this pod")
        return kubelet.read_log(namespace, name, container, previous)

    def wait_drivers_registered(self, timeout: float = 60.0) -> None:
        for node, k in self.kubelets.items():
            if node in self.gpus:
                k.wait_driver_registered(timeout)


def add_kubelets(cluster: Any, gpus: str, *, state_dir: str | Path | None = None,
                 driver_command: str | None = None, driver_args: list[str] | None = None,
                 slice_wipe_delay: float = DEFAULT_SLICE_WIPE_DELAY_S) -> KubeletFleet:
    """Validate the flags and add the fleet to ``cluster`` (``cluster.kubelets`` maps node -> Kubelet)."""
    if slice_wipe_delay < 0:
        raise ValueError(f"--slice-wipe-delay must be >= 0 seconds, got {slice_wipe_delay}")
    mapping = parse_gpus(gpus, list(cluster.nodes))
    if state_dir:
        driver_name = DriverConfig(gpus="", kubeconfig=Path(), args=list(driver_args or [])).driver_name
        for node in mapping:
            NodeDirs(Path(state_dir) / node).check_socket_room(driver_name)
    fleet = KubeletFleet(cluster, mapping,
                         state_dir=Path(state_dir) if state_dir else None,
                         driver_command=DriverConfig.parse_command(driver_command), driver_args=driver_args,
                         slice_wipe_delay=slice_wipe_delay)
    cluster.kubelets = fleet.kubelets
    cluster.add(fleet)
    return fleet
