"""Helpers for tests of the driver (used by tests/driver/test_driver_*.py and benchmarks/bench_driver.py).

The sim-backed ones (an API server on loopback, waiting for a socket file) are in sim/testing.py: the
driver never imports the sim.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from drakit import draclient
from drakit.draclient import ClaimRef

DRIVER = "gpu.sharing.example.dev"


@contextlib.contextmanager
def short_tmp_dir(prefix: str = "drv") -> Iterator[Path]:
    """A temporary directory with a short path: unix socket paths are limited to 107 bytes, and pytest's
    tmp_path can be longer than that."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _requests_for(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Claim requests that match the results' request names ("main" or "main/sub"), so the API server
    accepts the allocation."""
    subs: dict[str, list[str]] = {}
    for r in results or [{"request": "gpu"}]:
        main, _, sub = r["request"].partition("/")
        names = subs.setdefault(main, [])
        if sub and sub not in names:
            names.append(sub)
    return [
        {"name": main, "firstAvailable": [{"name": n, "deviceClassName": "gpu"} for n in names]}
        if names
        else {"name": main, "exactly": {"deviceClassName": "gpu"}}
        for main, names in subs.items()
    ]


def allocated_claim(
    name: str,
    namespace: str = "default",
    *,
    uid: str | None = None,
    results: list[dict[str, Any]] | None = None,
    node: str = "node-1",
    config: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A ResourceClaim JSON object with status.allocation, as the scheduler would leave it."""
    claim: dict[str, Any] = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace, "uid": uid or str(uuid.uuid4())},
        "spec": {"devices": {"requests": _requests_for(results or [])}},
    }
    if results is not None:
        claim["status"] = {
            "allocation": {
                "devices": {"results": results, "config": config or []},
                "nodeSelector": {
                    "nodeSelectorTerms": [
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
                    ]
                },
            }
        }
    return claim


def result(
    device: str = "gpu-0",
    *,
    request: str = "gpu",
    share_id: str | None = None,
    memory: str | None = None,
    driver: str = DRIVER,
    pool: str = "node-1",
) -> dict[str, Any]:
    r: dict[str, Any] = {"request": request, "driver": driver, "pool": pool, "device": device}
    if share_id is not None:
        r["shareID"] = share_id
    if memory is not None:
        r["consumedCapacity"] = {"memory": memory}
    return r


def _ref(claim: dict[str, Any]) -> ClaimRef:
    meta = claim["metadata"]
    return ClaimRef(namespace=meta["namespace"], uid=meta["uid"], name=meta["name"])


class DRAClient:
    """The kubelet-side client (drakit's, the one the sim kubelet uses) over a real unix socket, taking
    claims as JSON objects and answering with the raw gRPC responses, v1 or v1beta1."""

    def __init__(self, socket: Path) -> None:
        self._clients = {
            version: draclient.DRAClient(DRIVER, str(socket), f"{version}.DRAPlugin")
            for version in ("v1", "v1beta1")
        }

    def prepare(self, claims: list[dict[str, Any]], version: str = "v1", timeout: float = 10) -> Any:
        return self._clients[version].prepare_response([_ref(c) for c in claims], timeout)

    def unprepare(self, claims: list[dict[str, Any]], version: str = "v1", timeout: float = 10) -> Any:
        return self._clients[version].unprepare_response([_ref(c) for c in claims], timeout)

    def close(self) -> None:
        for client in self._clients.values():
            client.close()


class DriverProcess:
    """`python -m driver` as a real child process; its stderr is collected so tests can wait for log lines.
    Always stopped on exit (SIGTERM, then SIGKILL after 10 s)."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        import os
        import subprocess
        import sys
        import threading

        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "driver", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
            cwd=Path(__file__).resolve().parents[2],
        )
        self._reader = threading.Thread(target=self._read, name="driver-log", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def log(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for_log(self, text: str, timeout: float = 20.0) -> str:
        """Wait until a log line contains `text` (or the process ends); returns the line."""

        def found() -> str | None:
            return next((line for line in self.lines if text in line), None)

        with self._cond:
            ok = self._cond.wait_for(
                lambda: found() is not None or (self.proc.poll() is not None and not self._reader.is_alive()),
                timeout,
            )
            line = found()
        if line is None:
            state = "still running" if self.proc.poll() is None else f"exited {self.proc.returncode}"
            raise AssertionError(
                f"driver log never showed {text!r} within {timeout}s "
                f"({'process ended' if ok else 'timed out'}, {state}); log:\n{self.log}"
            )
        return line

    def stop(self, sig: int | None = None, timeout: float = 10.0) -> int:
        import signal
        import subprocess

        if self.proc.poll() is None:
            self.proc.send_signal(sig or signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout)
        return self.proc.returncode

    def __enter__(self) -> DriverProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        self.stop(signal.SIGKILL if exc[0] is not None else None)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
