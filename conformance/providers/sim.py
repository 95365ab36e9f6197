"""The sim provider: ``python -m sim`` as a subprocess, one reference driver per node.

A run on sim is SIMULATED (report banner): the control plane is simulated, but the HTTP API, the
driver processes, their gRPC sockets and CDI files are real.
"""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

from conformance.providers.base import (
    ClusterHandle,
    DriverDeployment,
    Provider,
    ProviderConfig,
    ProviderError,
)

START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
SERVING_MARK = "sim: serving"


class SimProvider(Provider):
    name = "sim"
    simulated = True

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        self.state_dir = config.work_dir / "sim-state"
        self.kubeconfig = config.work_dir / "sim-kubeconfig"
        self.log_path = config.work_dir / "sim.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._serving = threading.Event()
        self._server_line = ""
        self._reader: threading.Thread | None = None

    def command(self) -> list[str]:
        cfg = self.config
        cmd = [sys.executable, "-m", "sim", "--kubeconfig", str(self.kubeconfig), "--port", "0",
               "--nodes", ",".join(cfg.nodes), "--gpus", cfg.gpus or "rtx3090x2",
               "--state-dir", str(self.state_dir)]
        if cfg.driver_command:
            cmd += ["--driver-command", cfg.driver_command]
        for arg in cfg.profile.sim_driver_args:
            cmd.append(f"--driver-arg={arg}")
        if cfg.feature_gates:
            cmd += ["--feature-gates", ",".join(f"{k}={str(v).lower()}" for k, v in cfg.feature_gates.items())]
        if cfg.kube_version:
            cmd += ["--kube-version", cfg.kube_version]
        if cfg.slice_wipe_delay is not None:
            cmd += ["--slice-wipe-delay", str(cfg.slice_wipe_delay)]
        return cmd

    def start(self) -> ClusterHandle:
        if self.config.profile.install.method != "chart" or not self.config.profile.sim_driver_args:
            raise ProviderError(f"driver profile {self.config.profile.name!r} cannot run on sim (sim runs the "
                                "reference driver only); use --cluster kind or existing for it.")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        cmd = self.command()
        # The sim runs in its own session so that stop() can end it and every child it started.
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=_repo_root())
        self._reader = threading.Thread(target=self._pump, name="sim-log", daemon=True)
        self._reader.start()
        if not self._serving.wait(START_TIMEOUT) or not self.kubeconfig.is_file():
            tail = self._log_tail()
            self.stop()
            raise ProviderError(f"the sim did not start within {START_TIMEOUT:.0f}s ({shlex.join(cmd)}); its "
                                f"output ends with: {tail!r}")
        version = self.config.kube_version or ""
        return ClusterHandle(provider=self.name, kubeconfig=self.kubeconfig,
                             kubernetes_version=version, simulated=True, nodes=tuple(self.config.nodes),
                             details={"command": shlex.join(cmd), "server": self._server_line,
                                      "state_dir": str(self.state_dir)})

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with self.log_path.open("ab") as log:
            for line in iter(self.proc.stdout.readline, b""):
                log.write(line)
                log.flush()
                if not self._serving.is_set() and SERVING_MARK in line.decode(errors="replace"):
                    self._server_line = line.decode(errors="replace").strip()
                    self._serving.set()
        self._serving.set()  # the sim exited: wake start() so it reports instead of waiting out the bound

    def _log_tail(self, limit: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_bytes()[-limit:].decode(errors="replace")
        return ""

    def deploy_driver(self) -> DriverDeployment:
        # The sim's kubelets start the driver processes with the cluster; nothing to install.
        cmd = self.config.driver_command or f"{Path(sys.executable).name} -m driver"
        return DriverDeployment(driver_name=self.config.profile.driver, image="(local process)",
                                version=cmd, installed_by_suite=True,
                                details={"driver_args": shlex.join(self.config.profile.sim_driver_args)})

    def teardown_driver(self) -> None:
        """The drivers stop with the sim."""

    def driver_pids(self, node: str | None = None) -> dict[int, str]:
        """Driver processes under the sim: pid -> node, found from their command lines."""
        if self.proc is None:
            return {}
        children = _descendants(self.proc.pid)
        out = {}
        for pid in children:
            argv = _cmdline(pid)
            if "--node-name" in argv and "-m" in argv:
                idx = argv.index("--node-name")
                name = argv[idx + 1] if idx + 1 < len(argv) else ""
                if node is None or name == node:
                    out[pid] = name
        return out

    def restart_driver(self, node: str) -> None:
        pids = self.driver_pids(node)
        if not pids:
            raise ProviderError(f"no driver process for node {node} runs under the sim; check the sim log "
                                f"{self.log_path}.")
        for pid in pids:
            _kill_and_wait(pid, signal.SIGKILL, timeout=10.0)

    def driver_logs(self, node: str | None = None, tail: int = 200) -> dict[str, str]:
        logs: dict[str, str] = {}
        nodes = [node] if node else list(self.config.nodes)
        for n in nodes:
            files = sorted((self.state_dir / n).glob("**/*.log")) if (self.state_dir / n).is_dir() else []
            text = "".join(f.read_text(errors="replace") for f in files)
            if not text:
                # Drivers inherit the sim's output when the kubelet keeps no per-node log.
                text = "\n".join(line for line in self._log_tail(200_000).splitlines() if n in line)
            logs[n] = "\n".join(text.splitlines()[-tail:])
        return logs

    def node_cdi_specs(self, node: str) -> list[str] | None:
        cdi = self.state_dir / node / "cdi"
        if not cdi.is_dir():
            return None
        return sorted(p.name for p in cdi.iterdir() if p.suffix in (".json", ".yaml"))

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if self.config.keep_cluster:
            print(f"sim kept running (pid {proc.pid}); kubeconfig {self.kubeconfig}", file=sys.stderr)
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(STOP_TIMEOUT)
        # Anything the sim left in its session (it should leave nothing) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if self._reader is not None:
            self._reader.join(STOP_TIMEOUT)


def _repo_root() -> str:
    return str(Path(__file__).resolve().parents[2])


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        kids = [c for c, p in parents.items() if p == pid]
        out += kids
        frontier += kids
    return out


def _kill_and_wait(pid: int, sig: int, timeout: float) -> None:
    """Signal a process that is not our child and wait for it to exit (pidfd readiness, bounded)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            raise ProviderError(f"driver process {pid} did not exit within {timeout:.0f}s of signal {sig}.")
    finally:
        os.close(fd)
