"""The sim provider: ``python -m sim`` as a subprocess, the profile's driver on every node.

The profile's ``sim:`` section says how to run the driver (command, args, env, per-node env); it is
resolved here (${VARIABLES} from the environment, --sim-driver-command) into the sim kubelet's launch
contract (drakit/launch.py) and handed to the sim as ``--driver-spec``. Everything that can be
checked before the sim starts is (variables, nodes, the command); a driver that exits before it
registers stops the run before any scenario, quoting its last output.

A run on sim is SIMULATED (report banner): the control plane is simulated, but the HTTP API, the
driver processes, their gRPC sockets and CDI files are real.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from conformance.config import DEFAULT_MOCK_GPUS
from conformance.profiles import DriverProfile, ProfileError, resolve_sim_launch
from conformance.providers.base import (
    ClusterHandle,
    DriverDeployment,
    DriverInputError,
    Provider,
    ProviderConfig,
    ProviderError,
)
from drakit.launch import EXITED_MARK, PUBLISHED_EXIT_MARK, REGISTERED_MARK, LaunchSpec
from drakit.lifetime import parent_pipe
from sim.launcher import SERVING_MARK, SOURCE_ROOT, sim_command

START_TIMEOUT = 60.0
# How long start() waits for every node's driver to register (or to exit, which stops the run unless it
# published slices first); a driver still starting after this is left to preflight, which waits for its
# slices.
REGISTER_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


class SimProvider(Provider):
    name = "sim"
    simulated = True
    what = "the sim"  # how errors name the child process
    serving_mark = SERVING_MARK  # the line the child prints once it serves
    start_timeout = START_TIMEOUT

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        self.state_dir = config.work_dir / "sim-state"
        self.kubeconfig = config.work_dir / "sim-kubeconfig"
        self.log_path = config.work_dir / "sim.log"
        self.spec_path = config.work_dir / "sim-driver.json"
        self.proc: subprocess.Popen[bytes] | None = None
        self.launch: LaunchSpec | None = None
        self._serving = threading.Event()
        self._server_line = ""
        self._reader: threading.Thread | None = None
        self._drivers = threading.Condition()
        self._settled: set[str] = set()
        self._driver_failure = ""
        self._ended = False
        self._parent_fd: int | None = None  # write end of the pipe the sim watches (--exit-with-fd)

    def launch_spec(self) -> LaunchSpec:
        """The profile's sim: section as the sim kubelet's launch spec; ProviderError names the field."""
        cfg = self.config
        return resolve_launch(cfg.profile, cfg.driver_command, cfg.nodes, cfg.gpus)

    def command(self) -> list[str]:
        cfg = self.config
        assert self.launch is not None
        gates = ",".join(f"{k}={str(v).lower()}" for k, v in cfg.feature_gates.items())
        return sim_command(
            self.kubeconfig,
            cfg.nodes,
            state_dir=self.state_dir,
            driver_spec=self.spec_path,
            gpus=(cfg.gpus or DEFAULT_MOCK_GPUS) if "gpus" in self.launch.placeholders() else None,
            feature_gates=gates,
            kube_version=cfg.kube_version,
            slice_wipe_delay=cfg.slice_wipe_delay,
        )

    def start(self) -> ClusterHandle:
        self.launch = self.launch_spec()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.spec_path.write_text(json.dumps(self.launch.to_dict(), indent=2))
        cmd = self.command()
        self.spawn(cmd)
        self._wait_drivers()
        version = self.config.kube_version or ""
        return ClusterHandle(
            provider=self.name,
            kubeconfig=self.kubeconfig,
            kubernetes_version=version,
            simulated=True,
            nodes=tuple(self.config.nodes),
            details={
                "command": shlex.join(cmd),
                "server": self._server_line,
                "state_dir": str(self.state_dir),
                "driver": self.launch.describe(),
            },
        )

    def lifetime_args(self, read_fd: int) -> list[str]:
        """How the child learns that the suite is gone (EOF on ``read_fd``) and what it then removes."""
        return ["--exit-with-fd", str(read_fd), "--orphan-cleanup", str(self.config.work_dir)]

    def spawn(self, cmd: list[str]) -> None:
        """Start ``cmd`` (the sim, or another supervisor that prints ``serving_mark`` once it serves and
        the launch contract's driver lines) and wait until it serves; ProviderError quotes its last words
        when it exits first or does not serve in time."""
        pass_fds: tuple[int, ...] = ()
        if not self.config.keep_cluster:
            # The child dies with this process whatever kills it: it watches a pipe only we hold, and EOF
            # (we are gone) makes it stop its drivers and pods and remove what it made, as nobody else is
            # left to. A pipe rather than a parent-death signal: EOF waits for the child to be ready to
            # act on it, while a signal during its start-up would kill it before it could clean up.
            read_fd, self._parent_fd = parent_pipe()
            pass_fds = (read_fd,)
            cmd += self.lifetime_args(read_fd)
        # The child runs in its own session so that stop() can end it and every child it started.
        try:
            self.proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=SOURCE_ROOT,
                pass_fds=pass_fds,
            )
        finally:
            for fd in pass_fds:
                os.close(fd)
        self._reader = threading.Thread(target=self._pump, name=f"{self.name}-log", daemon=True)
        self._reader.start()
        if not self._serving.wait(self.start_timeout) or not self.kubeconfig.is_file():
            # The reader saw EOF (the child exited) or the bound passed: report the child's own words.
            try:
                code: int | None = self.proc.wait(5.0)
            except subprocess.TimeoutExpired:
                code = None
            tail = self._log_tail().strip()
            self.stop()
            what = (
                f"exited with code {code}"
                if code is not None
                else f"did not serve within {self.start_timeout:.0f}s"
            )
            last = tail.splitlines()[-1] if tail else "(no output)"
            raise self.start_failure(code, f"{self.what} {what}: {last} (command: {shlex.join(cmd)})", last)

    def start_failure(self, code: int | None, message: str, last_line: str) -> ProviderError:
        return ProviderError(message)

    def _wait_drivers(self) -> None:
        """Until every node's driver registered (or published and exited); a driver that exited before it
        registered and published nothing could not start: that stops the run."""
        nodes = set(self.config.nodes)
        with self._drivers:
            self._drivers.wait_for(
                lambda: self._driver_failure or self._ended or nodes <= self._settled,
                timeout=REGISTER_TIMEOUT,
            )
            failure = self._driver_failure
        if failure:
            self.stop()
            raise DriverInputError(f"driver profile {self.config.profile.name}: {failure}")

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with self.log_path.open("ab") as log:
            for line in iter(self.proc.stdout.readline, b""):
                log.write(line)
                log.flush()
                text = line.decode(errors="replace").strip()
                if not self._serving.is_set() and self.serving_mark in text:
                    self._server_line = text
                    self._serving.set()
                self._driver_line(text)
        self._serving.set()  # the sim exited: wake start() so it reports instead of waiting out the bound
        with self._drivers:
            self._ended = True
            self._drivers.notify_all()

    def _driver_line(self, text: str) -> None:
        with self._drivers:
            if text.startswith(REGISTERED_MARK):
                self._settled.add(text.removeprefix(REGISTERED_MARK).split(" ", 1)[0])
            elif text.startswith(PUBLISHED_EXIT_MARK):
                # It reached the cluster: preflight and publish judge what it left there.
                self._settled.add(text.removeprefix(PUBLISHED_EXIT_MARK).split(":", 1)[0])
            elif text.startswith(EXITED_MARK) and not self._driver_failure:
                self._driver_failure = text.removeprefix(EXITED_MARK).split(": ", 1)[-1]
            else:
                return
            self._drivers.notify_all()

    def _log_tail(self, limit: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_bytes()[-limit:].decode(errors="replace")
        return ""

    def deploy_driver(self) -> DriverDeployment:
        # The sim's kubelets start the driver processes with the cluster; what the chart would add on
        # a real cluster is the DeviceClass, so create it here unless the sim already has one.
        self._ensure_device_class()
        assert self.launch is not None
        return DriverDeployment(
            driver_name=self.config.profile.driver,
            image="(local process)",
            version=self.launch.describe(),
            installed_by_suite=True,
            details={"driver_command": self.launch.describe()},
        )

    def _ensure_device_class(self) -> None:
        from kubernetes import client, config

        profile = self.config.profile
        api = config.new_client_from_config(config_file=str(self.kubeconfig))
        try:
            resource = client.ResourceV1Api(api)
            names = {c.metadata.name for c in resource.list_device_class().items if c.metadata}
            if profile.device_class not in names:
                device_class = {
                    "apiVersion": "resource.k8s.io/v1",
                    "kind": "DeviceClass",
                    "metadata": {"name": profile.device_class},
                    "spec": {"selectors": [{"cel": {"expression": f'device.driver == "{profile.driver}"'}}]},
                }
                # The client's signature asks for a V1DeviceClass; it sends a dict body as is.
                resource.create_device_class(device_class)  # type: ignore[arg-type]
        finally:
            api.close()

    def teardown_driver(self) -> None:
        """The drivers and the DeviceClass go with the sim."""

    def driver_pid(self, node: str) -> int | None:
        """The running driver of ``node``: the sim kubelet's pid file, else a search of its children."""
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.state_dir / node / "driver.pid").read_text().strip())
            if Path(f"/proc/{pid}").exists():
                return pid
        if self.proc is None:
            return None
        for pid in _descendants(self.proc.pid):
            argv = _cmdline(pid)
            if "--node-name" in argv and argv[argv.index("--node-name") + 1 :][:1] == [node]:
                return pid
        return None

    def restart_driver(self, node: str) -> None:
        pid = self.driver_pid(node)
        if pid is None:
            raise ProviderError(
                f"no driver process for node {node} runs under the sim; check "
                f"{self.state_dir / node / 'driver.log'}."
            )
        # A crash, not a clean stop: the sim kubelet starts a new driver as a DaemonSet would.
        _kill_and_wait(pid, signal.SIGKILL, timeout=10.0)

    def driver_logs(self, node: str | None = None, tail: int = 200) -> dict[str, str]:
        logs: dict[str, str] = {}
        for n in [node] if node else list(self.config.nodes):
            path = self.state_dir / n / "driver.log"
            text = path.read_text(errors="replace") if path.is_file() else f"(no {path})"
            logs[n] = "\n".join(text.splitlines()[-tail:])
        return logs

    def node_cdi_specs(self, node: str) -> dict[str, dict[str, Any]] | None:
        cdi = self.state_dir / node / "cdi"
        if not cdi.is_dir():
            return None
        specs: dict[str, dict[str, Any]] = {}
        for path in sorted(cdi.iterdir()):
            if path.suffix in (".json", ".yaml"):
                with contextlib.suppress(OSError, yaml.YAMLError):  # a spec being replaced right now
                    specs[path.name] = yaml.safe_load(path.read_text()) or {}
        return specs

    def container_edits_unapplied(self, node: str) -> str:
        # The sim kubelet decides at start whether containers get a private mount namespace, and says so.
        path = self.state_dir / node / "container-isolation.json"
        try:
            said = json.loads(path.read_text())
        except (OSError, ValueError):
            return (
                f"the sim kubelet of {node} did not say whether it applies CDI device nodes and mounts "
                f"({path} is missing or unreadable)"
            )
        if said.get("applied") is True:
            return ""
        return str(said.get("reason") or "not applied (no reason given)")

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
        # A sim that was killed outright left its drivers and pods (own sessions, reparented): they are
        # the processes working in or pointing at this run's state dir.
        for pid in processes_using(self.state_dir):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if self._reader is not None:
            self._reader.join(STOP_TIMEOUT)
        self._close_parent_fd()

    def _close_parent_fd(self) -> None:
        fd, self._parent_fd = self._parent_fd, None
        if fd is not None:
            os.close(fd)


def resolve_launch(
    profile: DriverProfile, driver_command: str | None, nodes: Iterable[str], gpus: str | None
) -> LaunchSpec:
    """``resolve_sim_launch`` (conformance/profiles.py, which the input check calls too) as this
    provider's error."""
    try:
        return resolve_sim_launch(profile, driver_command, nodes, gpus)
    except ProfileError as exc:
        raise ProviderError(str(exc)) from None


def processes_using(directory: Path) -> list[int]:
    """Processes other than this one whose working directory, command line or environment points under
    ``directory``. The environment matters for drivers run through the launch contract: a vendor binary
    may take every path from env (KUBECONFIG, CDI_ROOT, ...) and name none on its command line."""
    root = str(directory.resolve())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cwd = os.readlink(entry / "cwd")
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            env = (entry / "environ").read_bytes().decode(errors="replace").split("\0")
            if cwd == root or cwd.startswith(root + "/") or any(root in a for a in (*argv, *env)):
                found.append(int(entry.name))
    return found


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
