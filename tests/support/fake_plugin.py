"""A small DRA plugin for tests: real gRPC on real unix sockets, registration + DRA v1/v1beta1 services.

It is a test double for a *driver* (the hardware side), never for the kubelet's interfaces: the kubelet
talks to it exactly as it talks to ``python -m driver``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from drakit.api import (
    dra_v1_pb2,
    dra_v1_pb2_grpc,
    dra_v1beta1_pb2,
    dra_v1beta1_pb2_grpc,
    pluginregistration_pb2,
    pluginregistration_pb2_grpc,
)

# prepare(claim namespace, uid, name) -> (devices, error); a device is a dict with request_names,
# pool_name, device_name, cdi_device_ids and optional share_id.
PrepareFn = Callable[[str, str, str], tuple[list[dict], str]]


@dataclass
class FakePlugin:
    registry_dir: Path
    plugin_dir: Path
    name: str = "gpu.test.example.dev"
    plugin_type: str = "DRAPlugin"
    versions: list[str] = field(default_factory=lambda: ["v1.DRAPlugin", "v1beta1.DRAPlugin"])
    prepare_fn: PrepareFn | None = None
    prepare_calls: list[tuple[str, list[str]]] = field(default_factory=list)  # (service, claim uids)
    unprepare_calls: list[tuple[str, list[str]]] = field(default_factory=list)
    notifications: list[tuple[bool, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        self._servers: list[grpc.Server] = []

    @property
    def endpoint(self) -> Path:
        return self.plugin_dir / "dra.sock"

    @property
    def registration_socket(self) -> Path:
        return self.registry_dir / f"{self.name}-reg.sock"

    def start(self) -> FakePlugin:
        self.plugin_dir.mkdir(parents=True, exist_ok=True)
        dra = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        dra_v1_pb2_grpc.add_DRAPluginServicer_to_server(_DRA(self, "v1.DRAPlugin", dra_v1_pb2), dra)
        beta = _DRA(self, "v1beta1.DRAPlugin", dra_v1beta1_pb2)
        dra_v1beta1_pb2_grpc.add_DRAPluginServicer_to_server(beta, dra)
        dra.add_insecure_port(f"unix://{self.endpoint}")
        dra.start()  # the DRA service listens before the registration socket appears (dra-facts 6.2)
        reg = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        pluginregistration_pb2_grpc.add_RegistrationServicer_to_server(_Registration(self), reg)
        reg.add_insecure_port(f"unix://{self.registration_socket}")
        reg.start()
        self._servers = [dra, reg]
        return self

    def stop(self) -> None:
        for s in self._servers:
            s.stop(grace=None).wait()
        self._servers = []
        for p in (self.registration_socket, self.endpoint):
            p.unlink(missing_ok=True)

    def wait_notified(self, timeout: float = 10.0) -> tuple[bool, str]:
        with self._cond:
            if not self._cond.wait_for(lambda: self.notifications, timeout=timeout):
                raise TimeoutError(
                    f"the kubelet sent no NotifyRegistrationStatus to {self.name} in {timeout}s"
                )
            return self.notifications[-1]

    def _notify(self, ok: bool, error: str) -> None:
        with self._cond:
            self.notifications.append((ok, error))
            self._cond.notify_all()


class _Registration(pluginregistration_pb2_grpc.RegistrationServicer):
    def __init__(self, plugin: FakePlugin):
        self._p = plugin

    def GetInfo(self, request, context):
        p = self._p
        return pluginregistration_pb2.PluginInfo(
            type=p.plugin_type, name=p.name, endpoint=str(p.endpoint), supported_versions=p.versions
        )

    def NotifyRegistrationStatus(self, request, context):
        self._p._notify(request.plugin_registered, request.error)
        return pluginregistration_pb2.RegistrationStatusResponse()


class _DRA:
    def __init__(self, plugin: FakePlugin, service: str, pb2):
        self._p = plugin
        self._service = service
        self._pb2 = pb2

    def NodePrepareResources(self, request, context):
        self._p.prepare_calls.append((self._service, [c.uid for c in request.claims]))
        out = self._pb2.NodePrepareResourcesResponse()
        for c in request.claims:
            devices, error = (self._p.prepare_fn or _no_devices)(c.namespace, c.uid, c.name)
            entry = out.claims[c.uid]
            entry.error = error
            for d in devices:
                dev = entry.devices.add(
                    request_names=d.get("request_names", []),
                    pool_name=d["pool_name"],
                    device_name=d["device_name"],
                    cdi_device_ids=d.get("cdi_device_ids", []),
                )
                if d.get("share_id") and self._service == "v1.DRAPlugin":
                    dev.share_id = d["share_id"]
        return out

    def NodeUnprepareResources(self, request, context):
        self._p.unprepare_calls.append((self._service, [c.uid for c in request.claims]))
        out = self._pb2.NodeUnprepareResourcesResponse()
        for c in request.claims:
            out.claims[c.uid].error = ""
        return out


def _no_devices(namespace: str, uid: str, name: str) -> tuple[list[dict], str]:
    return [], ""
