"""The nodes' kubelets as one cluster component, built from the ``sim`` command-line flags.

fleet = add_kubelets(cluster, gpus="rtx3090x2", state_dir=None)   # one reference driver per node
fleet = add_kubelets(cluster, launch=LaunchSpec.from_dict({...}))  # any driver (drakit/launch.py)
cluster.kubelets["node-1"].kill_driver()                           # the driver is restarted
"""

from __future__ import annotations

import logging
import shlex
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from drakit.gpuprofiles import parse_gpus
from drakit.launch import (
    EXITED_MARK,
    PUBLISHED_EXIT_MARK,
    REGISTERED_MARK,
    LaunchError,
    LaunchSpec,
    node_values,
    reference_spec,
)
from drakit.nodedirs import NodeDirs
from sim.apiserver.errors import ApiError
from sim.kubelet.kubelet import DEFAULT_SLICE_WIPE_DELAY_S, DriverStartError, Kubelet

log = logging.getLogger(__name__)


class KubeletFleet:
    """One kubelet per node; the nodes in ``driver_nodes`` also run the driver ``launch`` describes."""

    def __init__(
        self,
        cluster: Any,
        launch: LaunchSpec | None,
        driver_nodes: list[str],
        *,
        gpus: dict[str, str] | None = None,
        state_dir: Path | None = None,
        slice_wipe_delay: float = DEFAULT_SLICE_WIPE_DELAY_S,
    ):
        self.cluster = cluster
        self.launch = launch
        self.driver_nodes = list(driver_nodes) if launch is not None else []
        self.gpus = dict(gpus or {})
        self._own_state_dir = state_dir is None
        # Short by default: unix socket paths under it are limited to 107 bytes.
        self.state_dir = Path(state_dir) if state_dir else Path(tempfile.mkdtemp(prefix="sim-", dir="/tmp"))
        self.slice_wipe_delay = slice_wipe_delay
        self.kubelets: dict[str, Kubelet] = {}

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        kubeconfig = self.cluster.write_kubeconfig(self.state_dir / "kubeconfig")  # the API serves already
        try:
            for node in self.cluster.nodes:
                driver = None
                if self.launch is not None and node in self.driver_nodes:
                    values = node_values(
                        node,
                        NodeDirs(self.state_dir / node),
                        self.launch.name,
                        kubeconfig,
                        self.gpus.get(node),
                    )
                    driver = self.launch.render(values, node)
                k = Kubelet(
                    self.cluster.store_for(node),
                    node,
                    self.state_dir,
                    driver=driver,
                    slice_wipe_delay=self.slice_wipe_delay,
                )
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
            raise ApiError(
                400,
                "BadRequest",
                f'container "{container}" in pod "{name}" is waiting to start: '
                "no kubelet serves logs for this pod",
            )
        return kubelet.read_log(namespace, name, container, previous)

    def wait_drivers_registered(self, timeout: float = 60.0) -> None:
        for node, k in self.kubelets.items():
            if node in self.driver_nodes:
                k.wait_driver_registered(timeout)

    def report_driver_starts(
        self, say: Callable[[str], None], timeout: float = 120.0
    ) -> list[threading.Thread]:
        """Tell ``say`` about each node's first driver start: REGISTERED_MARK once it registered,
        EXITED_MARK with the driver's last output when it exited before that having published nothing,
        PUBLISHED_EXIT_MARK when it had published slices (python -m sim prints them)."""

        def watch(node: str, kubelet: Kubelet) -> None:
            try:
                registered = kubelet.wait_driver_started(timeout)
            except DriverStartError as e:
                say(f"{EXITED_MARK}{node}: {e}")
            except TimeoutError:
                return  # still starting: whoever waits judges by its own bound
            else:
                name = self.launch.name if self.launch else ""
                say(
                    f"{REGISTERED_MARK}{node} {name}"
                    if registered
                    else f"{PUBLISHED_EXIT_MARK}{node}: the driver {name} exited before it registered, after "
                    f"publishing ResourceSlices; its last output: {kubelet.driver_output_tail()}"
                )

        threads = [
            threading.Thread(target=watch, args=(n, k), name=f"driver-start:{n}", daemon=True)
            for n, k in self.kubelets.items()
            if n in self.driver_nodes
        ]
        for t in threads:
            t.start()
        return threads


def add_kubelets(
    cluster: Any,
    gpus: str = "",
    *,
    launch: LaunchSpec | None = None,
    state_dir: str | Path | None = None,
    driver_command: str | None = None,
    driver_args: list[str] | None = None,
    slice_wipe_delay: float = DEFAULT_SLICE_WIPE_DELAY_S,
) -> KubeletFleet:
    """Validate the flags and add the fleet to ``cluster`` (``cluster.kubelets`` maps node -> Kubelet).

    With ``launch`` every node runs that driver, exactly as the spec says (``gpus``, if given, only fills
    the ``{gpus}`` placeholder). Without it, ``gpus`` is sugar for the reference driver (or the variant
    ``driver_command`` names) with its flags plus ``driver_args``, on the nodes ``gpus`` names.
    """
    if slice_wipe_delay < 0:
        raise ValueError(f"--slice-wipe-delay must be >= 0 seconds, got {slice_wipe_delay}")
    nodes = list(cluster.nodes)
    try:
        if launch is not None:
            if driver_command or driver_args:
                raise ValueError(
                    "--driver-command and --driver-arg are for the reference driver (--gpus); "
                    "with --driver-spec put the command and args in the spec"
                )
            if not nodes:
                raise ValueError("--driver-spec needs nodes to run the driver on; add --nodes node-1[,...]")
            mapping = parse_gpus(gpus, nodes) if gpus else {}
            driver_nodes = nodes
            if "gpus" in launch.placeholders():
                missing = [n for n in nodes if n not in mapping]
                if missing:
                    raise ValueError(
                        f"the driver spec uses {{gpus}} but --gpus gives no mock GPU profile "
                        f"for {', '.join(missing)}; add --gpus PROFILE"
                    )
            elif gpus:
                raise ValueError(
                    "--gpus has no effect: the driver spec does not use {gpus} (its driver "
                    "finds its own hardware); drop --gpus"
                )
        else:
            mapping = parse_gpus(gpus, nodes)
            command = shlex.split(driver_command) if driver_command else None
            launch = reference_spec(command, driver_args or [])
            driver_nodes = list(mapping)
        launch.check_nodes(nodes)
        launch.executable("--driver-command" if driver_command else "")
    except LaunchError as e:
        raise ValueError(str(e)) from None
    if state_dir:
        for node in driver_nodes:
            NodeDirs(Path(state_dir) / node).check_socket_room(launch.name)
    fleet = KubeletFleet(
        cluster,
        launch,
        driver_nodes,
        gpus=mapping,
        state_dir=Path(state_dir) if state_dir else None,
        slice_wipe_delay=slice_wipe_delay,
    )
    cluster.kubelets = fleet.kubelets
    cluster.add(fleet)
    return fleet


def load_spec(path: str) -> LaunchSpec:
    """``--driver-spec FILE``: a YAML or JSON launch spec (name, command, args, env, nodeEnv)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise ValueError(
            f"--driver-spec {path}: cannot read it ({e.strerror}); give an existing file"
        ) from None
    except yaml.YAMLError as e:
        raise ValueError(f"--driver-spec {path}: not valid YAML or JSON ({e})") from None
    try:
        return LaunchSpec.from_dict(data)
    except LaunchError as e:
        raise ValueError(f"--driver-spec {path}: {e}") from None
