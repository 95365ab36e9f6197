"""Helpers for tests: a running sim with its kubeconfig, in-process or as a `python -m sim` subprocess.

with running_sim(nodes=["node-1"]) as sim:          # in-process: sim.store, sim.cluster available
    api = sim.client()                              # a kubernetes.client.ApiClient for this sim
    CoreV1Api(api).list_node()

with running_sim(nodes=["node-1"], subprocess=True) as sim:   # a real process; sim.process
    ...
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess as sp
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drakit.kubeconfig import write_kubeconfig
from drakit.launch import REFERENCE_DRIVER_NAME
from drakit.names import CLAIMS, SLICES

from .apiserver.server import ApiServer
from .apiserver.store import DEFAULT_HISTORY, Store
from .cluster import Cluster
from .config import DEFAULT_VERSION, SimConfig
from .kubelet.inotify import DirectoryWatcher
from .launcher import SOURCE_ROOT, serving_url, sim_command

REPO_ROOT = SOURCE_ROOT  # the name tests import


@dataclass
class SimHandle:
    kubeconfig: Path
    url: str
    token: str  # the bearer token every request needs (it is in the kubeconfig)
    ca_pem: bytes  # the certificate the sim serves (in the kubeconfig as certificate-authority-data)
    cluster: Cluster | None = None
    process: sp.Popen[str] | None = None
    output: list[str] = field(default_factory=list)

    @property
    def store(self) -> Any:
        if self.cluster is None:
            raise RuntimeError("the Store is only reachable in-process; this sim runs as a subprocess")
        return self.cluster.store

    @property
    def auth(self) -> dict[str, str]:
        """The header a raw HTTP request to this sim needs."""
        return {"Authorization": f"Bearer {self.token}"}

    def http(self, **kw: Any) -> Any:
        """A urllib3.PoolManager that trusts this sim's certificate (send `headers=sim.auth` too)."""
        import urllib3

        return urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_cert_data=self.ca_pem.decode(), **kw)

    def client(self) -> Any:
        """A fresh kubernetes.client.ApiClient for this sim (does not touch the global configuration)."""
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=cfg)
        return client.ApiClient(cfg)


def kubeconfig_credentials(path: Path) -> tuple[str, bytes]:
    """(bearer token, CA certificate PEM) of a kubeconfig the sim wrote (it writes the file before it
    says it serves)."""
    import base64

    import yaml

    doc = yaml.safe_load(path.read_text())
    ca = base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"])
    return str(doc["users"][0]["user"]["token"]), ca


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str, cond: threading.Condition) -> None:
    deadline = time.monotonic() + timeout
    with cond:
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"gave up after {timeout:.0f}s waiting for {what}")
            cond.wait(remaining)


@contextmanager
def running_sim(
    nodes: list[str] | tuple[str, ...] = ("node-1",),
    *,
    kube_version: str = DEFAULT_VERSION,
    feature_gates: str = "",
    subprocess: bool = False,
    extra_args: list[str] | tuple[str, ...] = (),
    workdir: str | os.PathLike[str] | None = None,
    timeout: float = 60.0,
    configure: Callable[[Cluster], None] | None = None,
    watch_history: int = DEFAULT_HISTORY,
) -> Iterator[SimHandle]:
    """Start a sim, yield its handle, and stop it (no thread or process left) on exit.

    configure(cluster) runs before start in-process: tests add components there. watch_history is
    how many events a watch can resume across (in-process only; older versions get 410 Expired).
    """
    with tempfile.TemporaryDirectory(prefix="sim-", dir=workdir) as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        if not subprocess:
            cluster = Cluster(
                SimConfig.from_flags(kube_version, feature_gates),
                nodes=list(nodes),
                watch_history=watch_history,
            )
            if configure is not None:
                configure(cluster)
            cluster.start()
            try:
                cluster.write_kubeconfig(kubeconfig)
                yield SimHandle(
                    kubeconfig=kubeconfig,
                    url=cluster.url,
                    token=cluster.token,
                    ca_pem=cluster.server.ca_pem,
                    cluster=cluster,
                )
            finally:
                cluster.stop()
            return
        yield from _run_subprocess(kubeconfig, nodes, kube_version, feature_gates, extra_args, timeout)


def _run_subprocess(
    kubeconfig: Path, nodes: Any, kube_version: str, feature_gates: str, extra_args: Any, timeout: float
) -> Iterator[SimHandle]:
    cmd = sim_command(
        kubeconfig, nodes, feature_gates=feature_gates, kube_version=kube_version, extra_args=extra_args
    )
    proc = sp.Popen(cmd, cwd=REPO_ROOT, stdout=sp.PIPE, stderr=sp.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    cond = threading.Condition()
    url_box: queue.SimpleQueue[str] = queue.SimpleQueue()
    finished = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with cond:
                lines.append(line.rstrip("\n"))
                url = serving_url(line)
                if url is not None:
                    url_box.put(url)
                cond.notify_all()
        with cond:
            finished.set()
            cond.notify_all()

    reader = threading.Thread(target=pump, name="sim-output", daemon=True)
    reader.start()
    try:
        _wait_for(
            lambda: not url_box.empty() or finished.is_set(),
            timeout,
            f"`{' '.join(cmd)}` to print 'sim: serving'",
            cond,
        )
        if url_box.empty():
            raise RuntimeError(
                f"python -m sim exited with {proc.wait()} before serving:\n" + "\n".join(lines)
            )
        token, ca_pem = kubeconfig_credentials(kubeconfig)
        yield SimHandle(
            kubeconfig=kubeconfig, url=url_box.get(), token=token, ca_pem=ca_pem, process=proc, output=lines
        )
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except sp.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        reader.join(timeout=10)


class SimApi:
    """The simulated API server (sim.apiserver Store + HTTP) on loopback, with a kubeconfig file: what the
    driver's tests run the driver against (tests/driver/test_driver_*.py)."""

    def __init__(self, root: Path, kube_version: str = "1.36", gates: dict[str, bool] | None = None) -> None:
        self.store = Store(SimConfig(kube_version=kube_version, feature_gates=gates or {}))
        self.server = ApiServer(self.store)
        self.server.start()
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

    def slices(self, driver: str = REFERENCE_DRIVER_NAME) -> list[dict[str, Any]]:
        items, _ = self.store.list(SLICES, field_selector=f"spec.driver={driver}")
        return sorted(items, key=lambda o: o["metadata"]["name"])

    def wait_for_slices(self, want: Any, timeout: float = 10.0, what: str = "slices") -> list[dict[str, Any]]:
        """Wait (on the store's watch, bounded) until want(slices) is true; returns the slices."""
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


@contextmanager
def sim_api(kube_version: str = "1.36", gates: dict[str, bool] | None = None) -> Iterator[SimApi]:
    # A short path under /tmp: the driver's unix sockets go next to the kubeconfig, and pytest's
    # tmp_path can pass the 107-byte socket path limit.
    root = Path(tempfile.mkdtemp(prefix="simapi", dir="/tmp"))
    try:
        api = SimApi(root, kube_version, gates)
        try:
            yield api
        finally:
            api.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def wait_for_file(directory: Path, name: str, timeout: float = 20.0, what: str = "") -> Path:
    """Wait (inotify, bounded) until `directory/name` exists."""
    directory.mkdir(parents=True, exist_ok=True)
    seen = threading.Event()
    watcher = DirectoryWatcher(directory, lambda n, created: created and n == name and seen.set()).start()
    try:
        if not seen.wait(timeout):
            raise AssertionError(f"{directory / name} did not appear within {timeout}s ({what})")
    finally:
        watcher.stop()
    return directory / name
