"""Helpers for tests of the driver (used by tests/test_driver_*.py and benchmarks/bench_driver.py)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from driver.api import dra_v1_pb2, dra_v1_pb2_grpc, dra_v1beta1_pb2, dra_v1beta1_pb2_grpc

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


def _claim(pb: Any, claim: dict[str, Any]) -> Any:
    meta = claim["metadata"]
    return pb.Claim(namespace=meta["namespace"], uid=meta["uid"], name=meta["name"])


class DRAClient:
    """A kubelet-side client built from the same protos, over a real unix socket."""

    def __init__(self, socket: Path) -> None:
        self.channel = grpc.insecure_channel(f"unix://{socket}")
        self.v1 = dra_v1_pb2_grpc.DRAPluginStub(self.channel)
        self.v1beta1 = dra_v1beta1_pb2_grpc.DRAPluginStub(self.channel)

    def prepare(self, claims: list[dict[str, Any]], version: str = "v1", timeout: float = 10) -> Any:
        pb, stub = (dra_v1_pb2, self.v1) if version == "v1" else (dra_v1beta1_pb2, self.v1beta1)
        request = pb.NodePrepareResourcesRequest(claims=[_claim(pb, c) for c in claims])
        return stub.NodePrepareResources(request, timeout=timeout)

    def unprepare(self, claims: list[dict[str, Any]], version: str = "v1", timeout: float = 10) -> Any:
        pb, stub = (dra_v1_pb2, self.v1) if version == "v1" else (dra_v1beta1_pb2, self.v1beta1)
        request = pb.NodeUnprepareResourcesRequest(claims=[_claim(pb, c) for c in claims])
        return stub.NodeUnprepareResources(request, timeout=timeout)

    def close(self) -> None:
        self.channel.close()


SLICES = "resourceslices.resource.k8s.io"
CLAIMS = "resourceclaims.resource.k8s.io"


class SimApi:
    """The simulated API server (sim.apiserver Store + HTTP) on loopback, with a kubeconfig file."""

    def __init__(self, root: Path, kube_version: str = "1.36", gates: dict[str, bool] | None = None) -> None:
        from sim.apiserver.server import ApiServer
        from sim.apiserver.store import Store
        from sim.config import SimConfig

        self.store = Store(SimConfig(kube_version=kube_version, feature_gates=gates or {}))
        self.server = ApiServer(self.store)
        self.server.start()
        from sim.cluster import write_kubeconfig

        self.kubeconfig = write_kubeconfig(
            root / "kubeconfig", self.server.url, self.server.token, self.server.ca_pem
        )

    def add_claim(self, claim: dict[str, Any]) -> dict[str, Any]:
        """Create `claim` and write its status (allocation) the way the scheduler does; returns the stored
        claim, whose uid the API server assigned."""
        status = claim.get("status")
        spec_only = {k: v for k, v in claim.items() if k != "status"}
        spec_only["metadata"] = {k: v for k, v in claim["metadata"].items() if k != "uid"}
        stored = self.store.create(CLAIMS, spec_only, namespace=claim["metadata"]["namespace"])
        if status:
            stored["status"] = status
            stored = self.store.update(CLAIMS, stored, subresource="status")
        return stored

    def slices(self, driver: str = DRIVER) -> list[dict[str, Any]]:
        items, _ = self.store.list(SLICES, field_selector=f"spec.driver={driver}")
        return sorted(items, key=lambda o: o["metadata"]["name"])

    def wait_for_slices(self, want: Any, timeout: float = 10.0, what: str = "slices") -> list[dict[str, Any]]:
        """Wait (on the store's watch, bounded) until want(slices) is true; returns the slices."""
        import time

        watch = self.store.watch([SLICES])
        try:
            deadline = time.monotonic() + timeout
            while True:
                current = self.slices()
                if want(current):
                    return current
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timed out after {timeout}s waiting for {what}; slices now: "
                        f"{[(o['metadata']['name'], o['spec']['pool']) for o in current]}"
                    )
                watch.get(timeout=left)
        finally:
            watch.close()

    def close(self) -> None:
        self.server.stop()


@contextlib.contextmanager
def sim_api(kube_version: str = "1.36", gates: dict[str, bool] | None = None) -> Iterator[SimApi]:
    with short_tmp_dir("simapi") as root:
        api = SimApi(root, kube_version, gates)
        try:
            yield api
        finally:
            api.close()


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
            cwd=Path(__file__).resolve().parent.parent,
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


def wait_for_file(directory: Path, name: str, timeout: float = 20.0, what: str = "") -> Path:
    """Wait (inotify, bounded) until `directory/name` exists."""
    import threading

    from sim.kubelet.inotify import DirectoryWatcher

    directory.mkdir(parents=True, exist_ok=True)
    seen = threading.Event()
    watcher = DirectoryWatcher(directory, lambda n, created: created and n == name and seen.set()).start()
    try:
        if not seen.wait(timeout):
            raise AssertionError(f"{directory / name} did not appear within {timeout}s ({what})")
    finally:
        watcher.stop()
    return directory / name


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
