"""Containers as local processes: env from the pod spec plus CDI edits, no shell, logs to files.

Images are not pulled and are ignored: the container's ``command`` + ``args`` run directly on the host.
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The environment every simulated container starts from, before the pod's env and CDI edits; PATH is the
# host's so that commands resolve as they would in an image that has them.
_BASE_ENV_KEYS = ("PATH", "LANG", "LC_ALL", "TZ")
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)")


class ContainerConfigError(Exception):
    """The kubelet's CreateContainerConfigError: the container spec cannot be turned into a process."""


class StartError(Exception):
    """The runtime could not start the process (containerd's StartError, exit code 128)."""


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion: defined names are replaced, undefined ones kept, $$ escapes a $."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR_REF.sub(sub, text)


def field_ref(pod: dict[str, Any], path: str, node_name: str) -> str:
    meta = pod.get("metadata", {})
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": node_name,
        "spec.serviceAccountName": pod.get("spec", {}).get("serviceAccountName", "default"),
        "status.hostIP": "127.0.0.1",
        "status.hostIPs": "127.0.0.1",
        "status.podIP": "127.0.0.1",
        "status.podIPs": "127.0.0.1",
    }
    if path in simple:
        return simple[path]
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if m:
        return (meta.get(m.group(1)) or {}).get(m.group(2), "")
    raise ContainerConfigError(f"unsupported fieldRef fieldPath {path!r}")


def container_env(
    pod: dict[str, Any],
    container: dict[str, Any],
    node_name: str,
    lookup: Callable[[str, str, str], dict[str, Any] | None],
) -> dict[str, str]:
    """The env the pod spec gives ``container``. ``lookup(resource, namespace, name)`` reads configmaps
    and secrets; it returns None when the object does not exist."""
    ns = pod["metadata"].get("namespace", "default")
    env: dict[str, str] = {k: os.environ[k] for k in _BASE_ENV_KEYS if k in os.environ}
    env["HOSTNAME"] = pod["metadata"]["name"]
    cname = container["name"]

    def data_of(resource: str, ref: dict[str, Any], what: str) -> dict[str, str] | None:
        obj = lookup(resource, ns, ref.get("name", ""))
        if obj is None:
            if ref.get("optional"):
                return None
            raise ContainerConfigError(f'{what} "{ref.get("name", "")}" not found')
        data = dict(obj.get("data") or {})
        if resource == "secrets":
            data = {k: base64.b64decode(v).decode(errors="replace") for k, v in data.items()}
        elif obj.get("binaryData"):
            binary = obj["binaryData"].items()
            data.update({k: base64.b64decode(v).decode(errors="replace") for k, v in binary})
        return data

    for i, src in enumerate(container.get("envFrom") or []):
        prefix = src.get("prefix", "")
        if "configMapRef" in src:
            data = data_of("configmaps", src["configMapRef"], "configmap")
        elif "secretRef" in src:
            data = data_of("secrets", src["secretRef"], "secret")
        else:
            raise ContainerConfigError(f"containers[{cname}].envFrom[{i}]: needs configMapRef or secretRef")
        for k, v in (data or {}).items():
            env[prefix + k] = v
    for i, var in enumerate(container.get("env") or []):
        name = var["name"]
        if "valueFrom" not in var:
            env[name] = expand(var.get("value", ""), env)
            continue
        source = var["valueFrom"]
        if "fieldRef" in source:
            env[name] = field_ref(pod, source["fieldRef"]["fieldPath"], node_name)
        elif "configMapKeyRef" in source or "secretKeyRef" in source:
            is_cm = "configMapKeyRef" in source
            ref = source["configMapKeyRef" if is_cm else "secretKeyRef"]
            data = data_of("configmaps" if is_cm else "secrets", ref, "configmap" if is_cm else "secret")
            if data is None:
                continue
            if ref["key"] not in data:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(
                    f"couldn't find key {ref['key']} in {'ConfigMap' if is_cm else 'Secret'} "
                    f"{ns}/{ref['name']}"
                )
            env[name] = data[ref["key"]]
        else:
            raise ContainerConfigError(
                f"containers[{cname}].env[{i}].valueFrom: only fieldRef, configMapKeyRef and "
                "secretKeyRef are "
                "supported by the simulated kubelet"
            )
    return env


def resolve_argv(container: dict[str, Any], env: dict[str, str]) -> list[str]:
    command = list(container.get("command") or [])
    args = list(container.get("args") or [])
    if not command:
        raise ContainerConfigError(
            f"container {container['name']!r} has no command: the simulated kubelet does not pull or run "
            f"images (image {container.get('image', '')!r} is ignored); set command (and args)"
        )
    argv = [expand(a, env) for a in command + args]
    exe = argv[0]
    if "/" not in exe:
        found = shutil.which(exe, path=env.get("PATH", os.defpath))
        if found is None:
            raise StartError(f'exec: "{exe}": executable file not found in $PATH')
        argv[0] = found
    elif not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
        raise StartError(
            f'exec: "{exe}": stat {exe}: no such file or directory'
            if not os.path.exists(exe)
            else f'exec: "{exe}": permission denied'
        )
    return argv


@dataclass
class RunningProcess:
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def terminate(self, grace_seconds: float) -> int:
        """SIGTERM to the process group, SIGKILL after the grace period; returns the exit code."""
        if self.popen.poll() is None:
            self.signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout=max(grace_seconds, 0))
            except subprocess.TimeoutExpired:
                pass
        # Children of the container's main process die with it, as they would with its PID namespace.
        self.signal_group(signal.SIGKILL)
        code = self.popen.wait()
        _wait_group_dead(self.popen.pid, timeout=GROUP_DEATH_TIMEOUT_S)
        return code


# SIGKILL is delivered asynchronously: a grandchild may still be running for a moment after killpg
# returns, and "no process outlives the container" must hold when terminate() returns.
GROUP_DEATH_TIMEOUT_S = 5.0


def _wait_group_dead(pgid: int, timeout: float) -> None:
    """Until no process of group ``pgid`` is still alive (zombies have exited), at most ``timeout``.
    The kernel offers no notification for another process's death, so this polls /proc briefly."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while _live_group_members(pgid) and time.monotonic() < deadline:
        pause.wait(0.01)


def _live_group_members(pgid: int) -> bool:
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


MOUNTNS_HELPER = Path(__file__).resolve().with_name("mountns.py")
SETUP_TIMEOUT_S = 30.0


def start_process(
    argv: list[str], env: dict[str, str], cwd: Path, log_path: Path, mounts: dict[str, Any] | None = None
) -> RunningProcess:
    """Start the container's process. With ``mounts`` (a ``Resolution.mount_plan``), it starts in a
    private mount namespace set up by the mountns helper, which then execs ``argv`` with ``env``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if mounts is not None:
        return _start_isolated(argv, env, cwd, log_path, mounts)
    with open(log_path, "ab", buffering=0) as log:
        try:
            popen = subprocess.Popen(
                argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True,
            )  # fmt: skip
        except OSError as e:
            raise StartError(f'exec: "{argv[0]}": {e.strerror}') from e
    return RunningProcess(popen=popen, log_path=log_path)


def _start_isolated(
    argv: list[str], env: dict[str, str], cwd: Path, log_path: Path, mounts: dict[str, Any]
) -> RunningProcess:
    # The plan (argv, env, mounts) goes through a pipe, not a file: env may hold secrets. The status pipe
    # reads EOF when the helper's exec succeeded, or the setup error when it did not.
    plan_r, plan_w = os.pipe()
    status_r, status_w = os.pipe()
    try:
        with open(log_path, "ab", buffering=0) as log:
            try:
                popen = subprocess.Popen(
                    [sys.executable, "-I", "-S", str(MOUNTNS_HELPER), str(plan_r), str(status_w)], env={},
                    cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True, close_fds=True, pass_fds=(plan_r, status_w),
                )  # fmt: skip
            except OSError as e:
                raise StartError(f"the mount namespace helper did not start: {e.strerror}") from e
        os.close(plan_r)
        plan_r = -1
        os.close(status_w)
        status_w = -1
        with os.fdopen(plan_w, "wb") as f:
            plan_w = -1
            f.write(json.dumps({**mounts, "argv": argv, "env": env, "cwd": str(cwd)}).encode())
        error = _read_until_eof(status_r, SETUP_TIMEOUT_S)
    except BrokenPipeError:
        error = _read_until_eof(status_r, SETUP_TIMEOUT_S) or "the mount namespace helper exited early"
    finally:
        for fd in (plan_r, plan_w, status_w):
            if fd >= 0:
                os.close(fd)
        os.close(status_r)
    if error is not None:
        RunningProcess(popen=popen, log_path=log_path).terminate(0)
        raise StartError(f"container setup in a private mount namespace failed: {error}")
    return RunningProcess(popen=popen, log_path=log_path)


def _read_until_eof(fd: int, timeout: float) -> str | None:
    """None at EOF with nothing written (the exec happened), else what the helper wrote."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return f"no exec within {timeout:.0f}s"
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            return data.decode(errors="replace") if data else None
        data += chunk


def exit_code(returncode: int) -> int:
    """A signal death reads as 128+signal, as a container runtime reports it."""
    return 128 - returncode if returncode < 0 else returncode


class ProcessReaper:
    """One thread per process that waits for it and calls ``on_exit``: no polling for exits."""

    def __init__(self, proc: RunningProcess, on_exit: Callable[[RunningProcess], None], name: str):
        self._thread = threading.Thread(target=self._wait, args=(proc, on_exit), name=name, daemon=True)
        self._thread.start()

    @staticmethod
    def _wait(proc: RunningProcess, on_exit: Callable[[RunningProcess], None]) -> None:
        proc.popen.wait()
        on_exit(proc)
