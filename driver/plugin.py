"""The kubelet plugin: DRA v1 and v1beta1 services on the DRA socket, and plugin registration on the
registration socket. The DRA socket listens before the registration socket appears, because the kubelet
dials the endpoint as soon as it sees the registration socket."""

from __future__ import annotations

import logging
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from drakit.api import (
    dra_v1_pb2,
    dra_v1_pb2_grpc,
    dra_v1beta1_pb2,
    dra_v1beta1_pb2_grpc,
    pluginregistration_pb2,
    pluginregistration_pb2_grpc,
)
from driver.claims import ClaimRef
from driver.metrics import Metrics
from driver.state import DeviceState

log = logging.getLogger(__name__)

PLUGIN_TYPE = "DRAPlugin"
# Service names; the kubelet takes the first one it supports, so the newest comes first.
SUPPORTED_VERSIONS = ["v1.DRAPlugin", "v1beta1.DRAPlugin"]


class _DRAService:
    """One implementation for both API versions; `pb` is the version's message module."""

    def __init__(self, state: DeviceState, metrics: Metrics, pb: Any, version: str) -> None:
        self.state, self.metrics, self.pb, self.version = state, metrics, pb, version

    def NodePrepareResources(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.metrics.observe("prepare", self.version):
            refs = [ClaimRef(c.namespace, c.uid, c.name) for c in request.claims]
            results = self.state.prepare(refs)
            response = self.pb.NodePrepareResourcesResponse()
            for uid, result in results.items():
                entry = response.claims[uid]
                if result.error:
                    entry.error = result.error
                    log.warning("prepare failed: %s", result.error)
                    continue
                for d in result.devices:
                    device = entry.devices.add(
                        request_names=d["request_names"],
                        pool_name=d["pool_name"],
                        device_name=d["device_name"],
                        cdi_device_ids=d["cdi_device_ids"],
                    )
                    if d["share_id"] and self.version == "v1":
                        device.share_id = d["share_id"]
            self.metrics.claims.labels("prepare").inc(len(results))
            self.metrics.claim_errors.labels("prepare").inc(sum(1 for r in results.values() if r.error))
            self.metrics.prepared.set(self.state.prepared_count())
            return response

    def NodeUnprepareResources(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.metrics.observe("unprepare", self.version):
            refs = [ClaimRef(c.namespace, c.uid, c.name) for c in request.claims]
            errors = self.state.unprepare(refs)
            response = self.pb.NodeUnprepareResourcesResponse()
            for uid, error in errors.items():
                response.claims[uid].error = error
                if error:
                    log.warning("unprepare failed: %s", error)
            self.metrics.claims.labels("unprepare").inc(len(errors))
            self.metrics.claim_errors.labels("unprepare").inc(sum(1 for e in errors.values() if e))
            self.metrics.prepared.set(self.state.prepared_count())
            return response


class DRAServicerV1(_DRAService, dra_v1_pb2_grpc.DRAPluginServicer):
    def __init__(self, state: DeviceState, metrics: Metrics) -> None:
        super().__init__(state, metrics, dra_v1_pb2, "v1")


class DRAServicerV1beta1(_DRAService, dra_v1beta1_pb2_grpc.DRAPluginServicer):
    def __init__(self, state: DeviceState, metrics: Metrics) -> None:
        super().__init__(state, metrics, dra_v1beta1_pb2, "v1beta1")


class RegistrationServicer(pluginregistration_pb2_grpc.RegistrationServicer):
    def __init__(self, driver_name: str, endpoint: Path) -> None:
        self.driver_name, self.endpoint = driver_name, endpoint
        self.registered = threading.Event()
        self.last_error = ""

    def GetInfo(self, request: Any, context: grpc.ServicerContext) -> Any:
        return pluginregistration_pb2.PluginInfo(
            type=PLUGIN_TYPE,
            name=self.driver_name,
            endpoint=str(self.endpoint),
            supported_versions=SUPPORTED_VERSIONS,
        )

    def NotifyRegistrationStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        if request.plugin_registered:
            log.info("kubelet registered driver %s", self.driver_name)
            self.last_error = ""
            self.registered.set()
        else:
            self.last_error = request.error
            log.error("kubelet rejected driver %s: %s", self.driver_name, request.error)
        return pluginregistration_pb2.RegistrationStatusResponse()


def _bind(server: grpc.Server, socket: Path) -> None:
    if len(str(socket).encode()) > 107:
        raise OSError(
            f"unix socket path {socket} is longer than the 107 bytes the kernel allows; "
            "use a shorter --plugin-dir or --registry-dir"
        )
    socket.parent.mkdir(parents=True, exist_ok=True)
    # A socket left by a killed predecessor would otherwise make the kubelet dial a dead endpoint.
    socket.unlink(missing_ok=True)
    if server.add_insecure_port(f"unix://{socket}") == 0:
        raise OSError(f"cannot listen on unix socket {socket}")


class KubeletPlugin:
    def __init__(
        self,
        state: DeviceState,
        metrics: Metrics,
        driver_name: str,
        dra_socket: Path,
        registration_socket: Path,
        workers: int = 8,
    ) -> None:
        self.dra_socket, self.registration_socket = dra_socket, registration_socket
        self.registration = RegistrationServicer(driver_name, dra_socket)
        self._dra = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dra"))
        dra_v1_pb2_grpc.add_DRAPluginServicer_to_server(DRAServicerV1(state, metrics), self._dra)
        dra_v1beta1_pb2_grpc.add_DRAPluginServicer_to_server(DRAServicerV1beta1(state, metrics), self._dra)
        self._reg = grpc.server(futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="reg"))
        pluginregistration_pb2_grpc.add_RegistrationServicer_to_server(self.registration, self._reg)
        self._stopped = False

    def start(self) -> None:
        _bind(self._dra, self.dra_socket)
        self._dra.start()  # listening from here on; only now may the kubelet learn about us
        _bind(self._reg, self.registration_socket)
        self._reg.start()
        log.info("DRA service on %s, registration on %s", self.dra_socket, self.registration_socket)

    def stop(self, grace: float = 5.0) -> None:
        """Safe to call more than once."""
        if self._stopped:
            return
        self._stopped = True
        # Registration goes first so the kubelet stops sending new calls; in-flight calls get `grace`.
        self._reg.stop(None).wait()
        self.registration_socket.unlink(missing_ok=True)
        self._dra.stop(grace).wait()
        self.dra_socket.unlink(missing_ok=True)
