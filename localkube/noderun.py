"""``python -m localkube.noderun``: the real nodes of a local cluster, and the driver on each of them.

The local provider starts it once the control plane serves. It starts every node of the plan (a kubelet
and a containerd each, ``localkube/nodes.py``), waits until each kubelet is healthy, prints ``READY_MARK``,
then, when given a driver spec, runs the driver on every node through the launch contract
(``drakit/launch.py``) inside the node's mount namespace, so the paths it is given (``/var/lib/kubelet/
plugins_registry``, ``/var/run/cdi``) are the node's own, as a DaemonSet pod's hostPaths would be. A
driver that exits is started again with a growing delay, as a kubelet restarts a DaemonSet's container;
one that exits before it ever registered is reported and left down. It prints the same lines the sim
prints about drivers (``drakit.launch`` marks), so the provider reads both alike.

It stops everything it started and removes the nodes (processes, cgroups, bridges, directories) on
SIGTERM or SIGINT, or when the pipe from the suite (``--exit-with-fd``) reads EOF because the suite died.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from drakit.launch import EXITED_MARK, REGISTERED_MARK, LaunchSpec, node_values
from drakit.lifetime import StopSignal
from drakit.nodedirs import NodeDirs
from localkube.controlplane import Process
from localkube.nodes import (
    CDI_DIR,
    KUBELET_ROOT,
    ClusterPlan,
    KubeProxy,
    NodeConfig,
    NodeError,
    RealNode,
    remove_host_rules,
)

READY_MARK = "localkube: nodes ready"
FAILED_MARK = "localkube: nodes failed: "  # + one sentence
SOURCE_ROOT = Path(__file__).resolve().parent.parent
EXIT_BAD_INPUT = 4
RESTART_DELAYS = (1.0, 2.0, 4.0, 8.0, 10.0)


def say(line: str) -> None:
    """A line for the provider, which reads our stdout; once it is gone (the suite died), nobody reads
    it, and the clean-up that follows must not die of a broken pipe."""
    try:
        print(line, flush=True)
    except (BrokenPipeError, ValueError):
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())


@dataclass
class Driver:
    node: RealNode
    spec: LaunchSpec
    gpus: str | None
    kubeconfig: Path
    proc: Process | None = None
    registered: bool = False
    restarts: int = 0
    next_start: float = 0.0
    gave_up: bool = False

    @property
    def registry(self) -> Path:
        return self.node.plan.host_path(str(NodeDirs(Path(KUBELET_ROOT)).plugins_registry))

    def start(self) -> None:
        plan = self.node.plan
        values = node_values(
            plan.name, NodeDirs(Path(KUBELET_ROOT)), self.spec.name, self.kubeconfig, self.gpus
        )
        values["cdi_dir"] = CDI_DIR
        values["state_dir"] = str(plan.root / "driver-state")
        launch = self.spec.render(values, plan.name)
        self.proc = Process(
            f"{plan.name}-driver",
            self.node.in_node(launch.argv),
            plan.root / "driver.log",
            env=launch.process_env(SOURCE_ROOT),
        )
        self.proc.start()
        assert self.proc.proc is not None
        (plan.root / "driver.pid").write_text(f"{self.proc.proc.pid}\n")

    def _sockets(self) -> set[str]:
        with contextlib.suppress(OSError):
            return {p.name for p in self.registry.iterdir() if p.is_socket()}
        return set()

    def poll(self, now: float) -> None:
        plan = self.node.plan
        if self.gave_up:
            return
        if self.proc is None:
            if now >= self.next_start:
                self.start()
            return
        if not self.registered and self._sockets():
            # The kubelet's plugin watcher dials every socket that appears here; the chart's readiness
            # probe reads the same signal.
            self.registered = True
            say(f"{REGISTERED_MARK}{plan.name} {self.spec.name}")
        code = self.proc.exited()
        if code is None:
            return
        words = self.proc.last_words(5)
        self.proc = None
        if not self.registered:
            self.gave_up = True
            say(f"{EXITED_MARK}{plan.name}: driver exited with code {code} before it registered: {words}")
            return
        delay = RESTART_DELAYS[min(self.restarts, len(RESTART_DELAYS) - 1)]
        self.restarts += 1
        self.next_start = now + delay
        self.registered = False
        say(f"localkube: driver on {plan.name} exited with code {code}; restarting in {delay:.0f}s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(grace=10)
            self.proc = None


def _parent_gone(fd: int | None) -> bool:
    if fd is None:
        return False
    try:
        ready, _, _ = select.select([fd], [], [], 0)
        return bool(ready) and not os.read(fd, 4096)
    except OSError:
        return True


def _fail(message: str) -> NoReturn:
    say(f"{FAILED_MARK}{message}")
    raise SystemExit(EXIT_BAD_INPUT)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m localkube.noderun", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--plan", required=True, type=Path, help="JSON: {config: NodeConfig, cluster: ClusterPlan}"
    )
    p.add_argument("--driver-spec", type=Path, help="JSON launch spec of the driver to run on every node")
    p.add_argument("--gpus", default=None, help="the {gpus} placeholder: a mock GPU profile")
    p.add_argument("--kubeconfig", type=Path, help="the {kubeconfig} placeholder: the drivers' kubeconfig")
    p.add_argument("--exit-with-fd", type=int, default=None, help="stop when this pipe reads EOF")
    p.add_argument(
        "--orphan-cleanup", type=Path, default=None, help="with --exit-with-fd: remove this directory on EOF"
    )
    args = p.parse_args(argv)
    stop = StopSignal()
    data = json.loads(args.plan.read_text())
    config = NodeConfig(**{**data["config"], "images": tuple(data["config"].get("images", ()))})
    cluster = ClusterPlan.from_dict(data["cluster"])
    nodes = [RealNode(n, config, say) for n in cluster.nodes]
    proxy = KubeProxy(cluster, config.release, Path(cluster.nodes[0].dir).parent / "kube-proxy")
    spec = LaunchSpec.from_dict(json.loads(args.driver_spec.read_text())) if args.driver_spec else None
    drivers: list[Driver] = []
    started: list[RealNode] = []
    orphaned = False
    try:
        try:
            for node in nodes:
                say(f"localkube: starting node {node.plan.name} (kubelet, containerd; IP {node.plan.ip})")
                started.append(node)
                node.start()
            for node in nodes:
                node.wait_ready()
                NodeDirs(node.plan.root).write_isolation(None)  # containerd applies CDI edits for real
            if cluster.kube_proxy_kubeconfig:
                proxy.start()
        except NodeError as exc:
            _fail(str(exc))
        say(f"{READY_MARK} {','.join(n.plan.name for n in nodes)}")
        if spec is not None:
            assert args.kubeconfig is not None
            drivers = [Driver(n, spec, args.gpus, args.kubeconfig) for n in nodes]
        watch = [stop.fileno()] + ([args.exit_with_fd] if args.exit_with_fd is not None else [])
        while True:
            now = time.monotonic()
            for d in drivers:
                d.poll(now)
            ready, _, _ = select.select(watch, [], [], 0.1)
            if stop.fileno() in ready:
                break
            if args.exit_with_fd in ready and not os.read(args.exit_with_fd, 4096):
                orphaned = True  # the suite is gone: nobody else is left to remove its work dir
                break
    finally:
        # A start that failed because the suite died under it (its control plane went with it) is an
        # orphan's exit too: nobody else is left to remove the run's bridge and work dir.
        orphaned = orphaned or _parent_gone(args.exit_with_fd)
        for d in drivers:
            d.stop()
        for node in reversed(started):
            try:
                node.stop()
            except NodeError as exc:
                say(f"localkube: {exc}")
        if cluster.kube_proxy_kubeconfig:
            proxy.stop()
        remove_host_rules()
        if orphaned:
            cluster.remove_network(None)  # the API server's bridge: its owner, the suite, is gone
        say("localkube: nodes stopped and removed")
        if orphaned and args.orphan_cleanup is not None:
            shutil.rmtree(args.orphan_cleanup, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
