"""Plugin registration as the kubelet's plugin watcher does it for DRA drivers (dra-facts.md 6.2).

Watches ``plugins_registry/`` for ``*-reg.sock``, calls GetInfo, picks the first service version in the
plugin's list that the kubelet supports, connects to the endpoint, then NotifyRegistrationStatus.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from drakit.api import pluginregistration_pb2, pluginregistration_pb2_grpc
from drakit.draclient import SUPPORTED_SERVICES, DRACallError, DRAClient, pick_service
from sim.kubelet.inotify import DirectoryWatcher

log = logging.getLogger(__name__)

DRA_PLUGIN_TYPE = "DRAPlugin"
REGISTRATION_TIMEOUT_S = 10.0
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# A socket can appear a moment before its server accepts; retry while it still exists, then give up.
_RETRY_DELAYS_S = (0.05, 0.2, 0.5, 1.0, 2.0)


@dataclass
class RegisteredPlugin:
    name: str
    client: DRAClient
    registration_socket: Path


class PluginManager:
    """Keeps the DRA drivers registered on one node.

    ``on_change(driver_name, reachable)`` is called when a driver registers (True) and when its
    registration socket goes away (False); the kubelet uses it to schedule or cancel slice wiping. The
    kubelet also reports its own supervised driver unreachable when that process exits.
    """

    def __init__(self, registry_dir: Path, on_change: Callable[[str, bool], None] | None = None):
        self._registry_dir = registry_dir
        self._on_change = on_change or (lambda name, reachable: None)
        self._lock = threading.Condition()
        self._plugins: dict[str, RegisteredPlugin] = {}
        self._rejections: dict[str, str] = {}
        self._queue: queue.Queue[tuple[str, bool] | None] = queue.Queue()
        self._stop = threading.Event()
        self._watcher = DirectoryWatcher(registry_dir, self._enqueue, name=f"plugin-watch:{registry_dir}")
        self._worker = threading.Thread(target=self._run, name="plugin-registration", daemon=True)

    def start(self) -> PluginManager:
        self._worker.start()
        self._watcher.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._watcher.stop()
        self._queue.put(None)
        if self._worker.ident is not None:
            self._worker.join(timeout=15)
        with self._lock:
            plugins = list(self._plugins.values())
            self._plugins.clear()
        for p in plugins:
            p.client.close()

    # -- queries -----------------------------------------------------------------------------------
    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Block until ``predicate()`` holds after a registration change (for tests and the kubelet)."""
        with self._lock:
            if not self._lock.wait_for(predicate, timeout=timeout):
                raise TimeoutError(f"{what}: not seen within {timeout:.0f}s")

    def client(self, driver_name: str) -> DRAClient | None:
        with self._lock:
            p = self._plugins.get(driver_name)
            return p.client if p else None

    def registered(self) -> list[str]:
        with self._lock:
            return sorted(self._plugins)

    def rejection(self, socket_name: str) -> str | None:
        """Why the registration through ``socket_name`` was refused, if it was."""
        with self._lock:
            return self._rejections.get(socket_name)

    def wait_registered(
        self, driver_name: str, timeout: float, newer_than: DRAClient | None = None
    ) -> DRAClient:
        """Block until ``driver_name`` is registered (with a client other than ``newer_than``)."""
        with self._lock:
            ok = self._lock.wait_for(
                lambda: (p := self._plugins.get(driver_name)) is not None and p.client is not newer_than,
                timeout=timeout,
            )
            if not ok:
                raise TimeoutError(
                    f"DRA driver {driver_name} did not register through {self._registry_dir} within "
                    f"{timeout:.0f}s (registered: {sorted(self._plugins) or 'none'})"
                )
            return self._plugins[driver_name].client

    def wait_rejected(self, socket_name: str, timeout: float) -> str:
        with self._lock:
            if not self._lock.wait_for(lambda: socket_name in self._rejections, timeout=timeout):
                raise TimeoutError(
                    f"registration through {socket_name} was neither refused nor seen in {timeout}s"
                )
            return self._rejections[socket_name]

    # -- watcher side --------------------------------------------------------------------------------
    def _enqueue(self, name: str, created: bool) -> None:
        # Like the kubelet's plugin watcher: every socket in the directory, dot-files ignored.
        if not name.startswith("."):
            self._queue.put((name, created))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._stop.is_set():
                return
            name, created = item
            path = self._registry_dir / name
            try:
                if created:
                    self._register(path)
                else:
                    self._deregister(path)
            except Exception:  # the watcher must outlive one bad plugin
                log.exception("plugin registration for %s failed", path)

    def _register(self, path: Path) -> None:
        last_error = ""
        for delay in (0.0, *_RETRY_DELAYS_S):
            if delay and self._stop.wait(delay):
                return
            if not _is_socket(path):
                return  # removed again before we could register it
            try:
                self._register_once(path)
                return
            except _Rejected as e:
                with self._lock:
                    self._rejections[path.name] = str(e)
                    self._lock.notify_all()
                log.warning("plugin %s rejected: %s", path.name, e)
                return
            except (grpc.RpcError, DRACallError) as e:
                last_error = str(e)
        with self._lock:
            self._rejections[path.name] = f"registration failed: {last_error}"
            self._lock.notify_all()
        log.warning("plugin %s: registration failed after retries: %s", path.name, last_error)

    def _register_once(self, path: Path) -> None:
        with grpc.insecure_channel(f"unix://{path}") as channel:
            stub = pluginregistration_pb2_grpc.RegistrationStub(channel)
            info = stub.GetInfo(pluginregistration_pb2.InfoRequest(), timeout=REGISTRATION_TIMEOUT_S)
            try:
                client = self._validate_and_connect(info)
            except _Rejected as e:
                stub.NotifyRegistrationStatus(
                    pluginregistration_pb2.RegistrationStatus(plugin_registered=False, error=str(e)),
                    timeout=REGISTRATION_TIMEOUT_S,
                )
                raise
            with self._lock:
                old = self._plugins.get(info.name)
                self._plugins[info.name] = RegisteredPlugin(info.name, client, path)
                self._rejections.pop(path.name, None)
            if old is not None and old.client is not client:
                old.client.close()
            stub.NotifyRegistrationStatus(
                pluginregistration_pb2.RegistrationStatus(plugin_registered=True),
                timeout=REGISTRATION_TIMEOUT_S,
            )
        log.info("registered DRA driver %s (%s at %s)", info.name, client.service, client.endpoint)
        with self._lock:
            self._lock.notify_all()
        self._on_change(info.name, True)

    def _validate_and_connect(self, info: pluginregistration_pb2.PluginInfo) -> DRAClient:
        if info.type != DRA_PLUGIN_TYPE:
            raise _Rejected(
                f"no handler registered for plugin type: {info.type!r} (want {DRA_PLUGIN_TYPE!r})"
            )
        if not info.name or not _DNS_SUBDOMAIN.match(info.name) or len(info.name) > 63:
            raise _Rejected(
                f"plugin name {info.name!r} is not a valid DRA driver name (DNS subdomain, <= 63)"
            )
        if not os.path.isabs(info.endpoint):
            raise _Rejected(
                f"endpoint {info.endpoint!r} of plugin {info.name} must be an absolute socket path"
            )
        service = pick_service(list(info.supported_versions))
        if service is None:
            raise _Rejected(
                f"none of services supported by the plugin {list(info.supported_versions)} are supported by "
                f"the kubelet {sorted(SUPPORTED_SERVICES)}"
            )
        client = DRAClient(info.name, info.endpoint, service)
        try:
            client.wait_connected(REGISTRATION_TIMEOUT_S)
        except DRACallError as e:
            client.close()
            raise _Rejected(str(e)) from e
        return client

    def _deregister(self, path: Path) -> None:
        with self._lock:
            gone = [p for p in self._plugins.values() if p.registration_socket == path]
            for p in gone:
                del self._plugins[p.name]
            self._rejections.pop(path.name, None)
        for p in gone:
            p.client.close()
            log.info("DRA driver %s deregistered (%s removed)", p.name, path.name)
            self._on_change(p.name, False)
        with self._lock:
            self._lock.notify_all()


class _Rejected(Exception):
    pass


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(path.stat().st_mode)
    except FileNotFoundError:
        return False
