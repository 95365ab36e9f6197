"""Containers as local processes: env from the pod spec plus CDI edits, no shell, logs to files.

Images are not pulled and are ignored: the container's ``command`` + ``args`` run directly on the host.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.lifetime import die_with_parent

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
                    f'couldn\'t find key {ref["key"]} in {"ConfigMap" if is_cm else "Secret"} '
                    f'{ns}/{ref["name"]}'
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
        raise StartError(f'exec: "{exe}": stat {exe}: no such file or directory'
                         if not os.path.exists(exe) else f'exec: "{exe}": permission denied')
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
        return self.popen.wait()


def start_process(argv: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> RunningProcess:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab", buffering=0) as log:
        try:
            popen = subprocess.Popen(
                argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True, preexec_fn=die_with_parent(),
            )  # fmt: skip
        except OSError as e:
            raise StartError(f'exec: "{argv[0]}": {e.strerror}') from e
    return RunningProcess(popen=popen, log_path=log_path)


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
