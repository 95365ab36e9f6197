"""The simulated kubelet of one node: wires registration, the DRA manager, pod workers and the driver."""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

from drakit.launch import NodeLaunch
from drakit.names import SLICES
from drakit.nodedirs import NodeDirs
from sim.apiserver.errors import ApiError
from sim.kubelet.cdi import Registry
from sim.kubelet.claims import ClaimCache
from sim.kubelet.driverproc import DriverSupervisor
from sim.kubelet.events import EventRecorder
from sim.kubelet.mountns import host_unavailable_reason
from sim.kubelet.podworker import PodWorker
from sim.kubelet.registration import PluginManager

log = logging.getLogger(__name__)

DEFAULT_DRIVER_NAME = "gpu.sharing.example.dev"
DEFAULT_SLICE_WIPE_DELAY_S = 30.0  # the kubelet's defaultWipingDelay
REPO_ROOT = Path(__file__).resolve().parents[2]


class DriverStartError(RuntimeError):
    """The node's driver exited before it registered with the kubelet; the message quotes its output."""


class Kubelet:
    def __init__(
        self,
        store: Any,
        node_name: str,
        state_dir: Path,
        *,
        driver: NodeLaunch | None = None,
        slice_wipe_delay: float = DEFAULT_SLICE_WIPE_DELAY_S,
        crash_backoff_s: float = 10.0,
        shutdown_grace_s: float = 2.0,
    ):
        self.store = store
        self.node_name = node_name
        self.dirs = NodeDirs(Path(state_dir) / node_name)
        self.driver_config = driver
        self.slice_wipe_delay = slice_wipe_delay
        self.crash_backoff_s = crash_backoff_s
        self.shutdown_grace_s = shutdown_grace_s
        if driver is not None:
            self.dirs.check_socket_room(driver.driver_name)
        self.dirs.create()
        self.events = EventRecorder(store, node_name)
        self.plugins = PluginManager(self.dirs.plugins_registry, self._driver_reachability)
        self.claims = ClaimCache(self.plugins)
        self.cdi = Registry([self.dirs.cdi])
        # None: containers get a private mount namespace with their CDI device nodes and mounts; else why
        # not (recorded for the suite, which then skips what depends on it).
        self.isolation_reason = host_unavailable_reason()
        self.dirs.write_isolation(self.isolation_reason)
        self.driver: DriverSupervisor | None = None
        # First start of the driver: registered, or exited before it did (the code), for wait_driver_started.
        self._start_cond = threading.Condition()
        self._registered_once = False
        self._early_exit: int | None = None
        self._early_exit_published = False
        self._driver_start_rv = 0
        self._lock = threading.Lock()
        self._workers: dict[str, PodWorker] = {}
        self._by_key: dict[tuple[str, str], PodWorker] = {}
        # Pods whose worker has finished: late events about them must not start them again.
        self._finished: set[str] = set()
        self._wipes: dict[str, threading.Event] = {}
        self._wipe_threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._watch: Any = None
        self._watch_thread = threading.Thread(
            target=self._watch_pods, name=f"kubelet:{node_name}", daemon=True
        )

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> Kubelet:
        self.store.register_kubelet(self.node_name)
        self._wipe_slices(driver=None)  # the kubelet deletes its node's slices when it starts
        self.plugins.start()
        pods, rv = self.store.list("pods", field_selector=f"spec.nodeName={self.node_name}")
        self._watch = self.store.watch(["pods"], since=rv, field_selector=f"spec.nodeName={self.node_name}")
        for pod in pods:
            self._on_pod("ADDED", pod)
        self._watch_thread.start()
        if self.driver_config is not None:
            self._start_driver(self.driver_config)
        return self

    def stop(self) -> None:
        """Stop pods, the driver and the watchers; no process started here outlives this call."""
        self._stop.set()
        if self._watch is not None:
            self._watch.close()
        if self._watch_thread.is_alive():
            self._watch_thread.join(timeout=10)
        with self._lock:
            workers = list(self._workers.values())
            for e in self._wipes.values():
                e.set()
        for w in workers:
            w.stop_for_shutdown()
        deadline = time.monotonic() + self.shutdown_grace_s + 10
        for w in workers:
            w.thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if self.driver is not None:
            self.driver.stop()
        self.plugins.stop()
        self.store.unregister_kubelet(self.node_name)

    # -- driver ---------------------------------------------------------------------------------------
    def _start_driver(self, launch: NodeLaunch) -> None:
        d = self.dirs
        own = self._slice_selector(launch.driver_name)
        self._driver_start_rv = self.store.list(SLICES, field_selector=own)[1]
        self.driver = DriverSupervisor(
            launch.argv,
            log_path=d.root / "driver.log",
            pid_path=d.root / "driver.pid",
            cwd=REPO_ROOT,
            env=launch.process_env(REPO_ROOT),
            on_exit=self._driver_exited,
            name=f"{launch.driver_name}@{self.node_name}",
        ).start()

    def wait_driver_started(self, timeout: float) -> bool:
        """Block until the driver registered for the first time (True), or exited before that having
        published ResourceSlices (False: it talked to the cluster; what it published can be judged).
        Raises DriverStartError, quoting its last output, when it exited before registering and before
        publishing anything (a driver that cannot start), TimeoutError after ``timeout``."""
        if self.driver_config is None:
            raise RuntimeError(f"node {self.node_name} runs no driver")
        with self._start_cond:
            done = self._start_cond.wait_for(
                lambda: self._registered_once or self._early_exit is not None, timeout=timeout
            )
            registered, code, published = self._registered_once, self._early_exit, self._early_exit_published
        if registered:
            return True
        argv0 = self.driver_config.argv[0]
        if not done:
            raise TimeoutError(
                f"the driver {argv0} on {self.node_name} did not register within "
                f"{timeout:.0f}s; its last output: {self.driver_output_tail()}"
            )
        if published:
            return False
        raise DriverStartError(
            f"the driver {argv0} exited with code {code} on {self.node_name} before it "
            f"registered with the kubelet; its last output: {self.driver_output_tail()}"
        )

    def driver_output_tail(self, lines: int = 5) -> str:
        """The driver's last output lines (and the kubelet's word when it could not exec it), joined
        with ' | '."""
        try:
            text = (self.dirs.root / "driver.log").read_text(errors="replace")
        except OSError:
            return "(no output)"
        own = [
            ln.strip()
            for ln in text.splitlines()
            if ln.strip() and not ln.startswith("=== sim kubelet: starting ")
        ]
        return " | ".join(own[-lines:]) or "(no output)"

    @property
    def driver_pid(self) -> int | None:
        return self.driver.pid if self.driver else None

    def kill_driver(self, sig: int = signal.SIGKILL) -> int:
        """Crash the driver on purpose (tests, the lifecycle scenario); it is restarted like a "
        "DaemonSet pod."""
        if self.driver is None:
            raise RuntimeError(f"node {self.node_name} runs no driver (sim --gpus or --driver-spec)")
        return self.driver.kill(sig)

    def restart_driver(self) -> None:
        """SIGTERM the driver and start a new one at once."""
        if self.driver is None:
            raise RuntimeError(f"node {self.node_name} runs no driver (sim --gpus or --driver-spec)")
        self.driver.restart()

    def stop_driver(self) -> None:
        """Take the driver away (SIGTERM, not restarted) until start_driver(): its slices are wiped after
        the wipe delay, as for a driver that stays unreachable."""
        if self.driver is None:
            raise RuntimeError(f"node {self.node_name} runs no driver (sim --gpus or --driver-spec)")
        self.driver.pause()

    def start_driver(self) -> None:
        if self.driver is None:
            raise RuntimeError(f"node {self.node_name} runs no driver (sim --gpus or --driver-spec)")
        self.driver.resume()

    def cdi_devices(self, namespace: str, name: str, container: str) -> list[str]:
        """The CDI device ids the container's current (or last) run received."""
        with self._lock:
            worker = self._by_key.get((namespace, name))
        if worker is None:
            raise KeyError(f"pod {namespace}/{name} is not on node {self.node_name}")
        return worker.cdi_devices(container)

    def wait_driver_registered(self, timeout: float = 30.0, newer_than: Any = None) -> Any:
        name = self.driver_config.driver_name if self.driver_config else DEFAULT_DRIVER_NAME
        return self.plugins.wait_registered(name, timeout, newer_than=newer_than)

    def _driver_exited(self, code: int) -> None:
        with self._start_cond:
            if not self._registered_once and self._early_exit is None:
                self._early_exit = code
                self._early_exit_published = self._published_since_start()
            self._start_cond.notify_all()
        if self.driver_config is not None:
            self._driver_reachability(self.driver_config.driver_name, False)

    def _driver_reachability(self, driver_name: str, reachable: bool) -> None:
        """Schedule (or cancel) wiping the driver's slices for this node, as the kubelet does after 30 s."""
        if reachable and self.driver_config is not None and driver_name == self.driver_config.driver_name:
            with self._start_cond:
                self._registered_once = True
                self._start_cond.notify_all()
        if self._stop.is_set():
            return  # the node is going away with its driver: nothing to schedule
        with self._lock:
            pending = self._wipes.pop(driver_name, None)
            if pending is not None:
                pending.set()  # cancels the pending wipe
            if reachable:
                workers = list(self._workers.values())
            else:
                cancel = threading.Event()
                self._wipes[driver_name] = cancel
                workers = []
        if reachable:
            for w in workers:
                w.poke()  # pods waiting for this driver retry now
            return
        t = threading.Thread(
            target=self._wipe_after_delay,
            args=(driver_name, cancel),
            name=f"wipe:{driver_name}@{self.node_name}",
            daemon=True,
        )
        with self._lock:
            self._wipe_threads = [w for w in self._wipe_threads if w.is_alive()] + [t]
        t.start()

    def join_wipes(self, timeout: float) -> None:
        """Wait until every scheduled slice wipe has either fired or been cancelled."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._wipe_threads)
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                raise TimeoutError(f"slice wipe {t.name} still pending after {timeout:.0f}s")

    def _wipe_after_delay(self, driver_name: str, cancel: threading.Event) -> None:
        if cancel.wait(self.slice_wipe_delay) or self._stop.is_set():
            return
        with self._lock:
            if self._wipes.get(driver_name) is not cancel:
                return
            del self._wipes[driver_name]
        log.info(
            "DRA driver %s unreachable for %ss: wiping its slices on %s",
            driver_name,
            self.slice_wipe_delay,
            self.node_name,
        )
        self._wipe_slices(driver=driver_name)

    def _slice_selector(self, driver: str | None) -> str:
        return f"spec.nodeName={self.node_name}" + (f",spec.driver={driver}" if driver else "")

    def _published_since_start(self) -> bool:
        """Whether the driver wrote a ResourceSlice of this node since it was first started (it may have
        removed it again before exiting, as a driver that finds fields dropped does)."""
        if self.driver_config is None:
            return False
        try:
            events = self.store.history(
                SLICES, self._driver_start_rv, self._slice_selector(self.driver_config.driver_name)
            )
        except ApiError:
            return True  # the history is gone: it cannot be told, so what the driver left is judged
        return any(ev.type == "ADDED" for ev in events)

    def _wipe_slices(self, driver: str | None) -> None:
        slices, _ = self.store.list(SLICES, field_selector=self._slice_selector(driver))
        for s in slices:
            try:
                self.store.delete(SLICES, s["metadata"]["name"])
            except ApiError as e:
                if e.code != 404:
                    raise

    # -- pods -----------------------------------------------------------------------------------------
    def _watch_pods(self) -> None:
        while not self._stop.is_set():
            ev = self._watch.get(timeout=None)
            if ev is None:
                if self._stop.is_set():
                    return
                self._relist()
                continue
            self._on_pod(ev.type, ev.object)

    def _relist(self) -> None:
        """The watch ended on its own: list again and resume, as an informer does."""
        pods, rv = self.store.list("pods", field_selector=f"spec.nodeName={self.node_name}")
        self._watch = self.store.watch(["pods"], since=rv, field_selector=f"spec.nodeName={self.node_name}")
        seen = set()
        for pod in pods:
            seen.add(pod["metadata"]["uid"])
            self._on_pod("MODIFIED", pod)
        with self._lock:
            gone = [w for uid, w in self._workers.items() if uid not in seen]
        for w in gone:
            w.deleted()

    def _on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            if uid in self._finished:
                if kind == "DELETED":
                    self._finished.discard(uid)
                return
            worker = self._workers.get(uid)
            if worker is None and kind != "DELETED" and not self._stop.is_set():
                worker = PodWorker(self, pod)
                self._workers[uid] = worker
                self._by_key[worker.key] = worker
                worker.thread.start()
                return
        if worker is None:
            return
        if kind == "DELETED":
            worker.deleted()
        else:
            worker.update(pod)

    def worker_done(self, worker: PodWorker) -> None:
        with self._lock:
            if self._workers.get(worker.uid) is worker:
                del self._workers[worker.uid]
            if self._by_key.get(worker.key) is worker:
                del self._by_key[worker.key]
            if not worker.saw_deletion:
                self._finished.add(worker.uid)
        self.events.forget(worker.uid)

    def patch_status(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        meta = pod["metadata"]
        try:
            self.store.patch(
                "pods",
                meta["name"],
                {"status": status},
                "merge",
                namespace=meta.get("namespace", "default"),
                subresource="status",
            )
        except ApiError as e:
            if e.code not in (404, 409):
                raise

    def final_delete(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        try:
            self.store.delete(
                "pods", meta["name"], namespace=meta.get("namespace", "default"), grace_period_seconds=0
            )
        except ApiError as e:
            if e.code != 404:
                raise

    def lookup_config(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.store.get(resource, name, namespace=namespace)
        except ApiError as e:
            if e.code == 404:
                return None
            raise

    def pods(self) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(self._by_key)

    # -- logs -----------------------------------------------------------------------------------------
    def read_log(
        self, namespace: str, name: str, container: str | None = None, previous: bool = False
    ) -> bytes:
        with self._lock:
            worker = self._by_key.get((namespace, name))
        if worker is None:
            raise ApiError(404, "NotFound", f'pods "{name}" not found on node {self.node_name}')
        names = [c.name for c in worker.containers]
        if container is None:
            if len(names) != 1:
                raise ApiError(
                    400,
                    "BadRequest",
                    f"a container name must be specified for pod {name}, choose one of: [{' '.join(names)}]",
                )
            container = names[0]
        if container not in names + [c.name for c in worker.init_containers]:
            raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {name}")
        path = worker.log_path(container, previous)
        if path is None:
            state = next(c for c in worker.init_containers + worker.containers if c.name == container).state
            if previous:
                raise ApiError(
                    400,
                    "BadRequest",
                    f'previous terminated container "{container}" in pod "{name}" not found',
                )
            reason = state.get("waiting", {}).get("reason", "ContainerCreating")
            raise ApiError(
                400, "BadRequest", f'container "{container}" in pod "{name}" is waiting to start: {reason}'
            )
        return path.read_bytes()
