"""Kubelet side of the DRA node service: one client per registered driver, v1 or v1beta1.

The sim kubelet calls ``prepare``/``unprepare`` (errors as the kubelet reports them); the driver's own
tests call ``prepare_response``/``unprepare_response`` to see the raw gRPC answer. ``ClaimRef`` is what
both sides of the service name a claim by.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import grpc

from drakit.api import dra_v1_pb2, dra_v1_pb2_grpc, dra_v1beta1_pb2, dra_v1beta1_pb2_grpc

# The kubelet's default per-call timeout (defaultClientCallTimeout), dra-facts.md section 6.1.
CALL_TIMEOUT_S = 45.0

# Service names the kubelet supports, as they appear in PluginInfo.supported_versions.
SUPPORTED_SERVICES = {
    "v1.DRAPlugin": (dra_v1_pb2, dra_v1_pb2_grpc),
    "v1beta1.DRAPlugin": (dra_v1beta1_pb2, dra_v1beta1_pb2_grpc),
}


@dataclass(frozen=True)
class ClaimRef:
    namespace: str
    uid: str
    name: str

    def __str__(self) -> str:
        return f"ResourceClaim {self.namespace}/{self.name} (uid {self.uid})"


@dataclass(frozen=True)
class PreparedDevice:
    request_names: tuple[str, ...]
    pool_name: str
    device_name: str
    cdi_device_ids: tuple[str, ...]
    share_id: str | None


@dataclass
class ClaimPrepareResult:
    devices: list[PreparedDevice] = field(default_factory=list)
    error: str = ""


class DRACallError(Exception):
    """A gRPC-level failure: the whole response is discarded, as the kubelet does."""


def pick_service(supported_versions: list[str]) -> str | None:
    """The first entry of the plugin's own list that the kubelet supports (recent kubelet behaviour)."""
    for name in supported_versions:
        if name in SUPPORTED_SERVICES:
            return name
    return None


class DRAClient:
    def __init__(self, driver_name: str, endpoint: str, service: str):
        self.driver_name = driver_name
        self.endpoint = endpoint
        self.service = service
        self._pb2, pb2_grpc = SUPPORTED_SERVICES[service]
        self._channel = grpc.insecure_channel(f"unix://{endpoint}")
        self._stub = pb2_grpc.DRAPluginStub(self._channel)
        self._closed = threading.Event()

    def wait_connected(self, timeout: float) -> None:
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError as e:
            raise DRACallError(
                f"DRA driver {self.driver_name}: no connection to {self.endpoint} within {timeout:.0f}s"
            ) from e

    def _claims(self, claims: list[ClaimRef]) -> list[Any]:
        return [self._pb2.Claim(namespace=c.namespace, uid=c.uid, name=c.name) for c in claims]

    def prepare_response(self, claims: list[ClaimRef], timeout: float = CALL_TIMEOUT_S) -> Any:
        """The driver's NodePrepareResourcesResponse as is; gRPC errors are raised unchanged."""
        request = self._pb2.NodePrepareResourcesRequest(claims=self._claims(claims))
        return self._stub.NodePrepareResources(request, timeout=timeout)

    def unprepare_response(self, claims: list[ClaimRef], timeout: float = CALL_TIMEOUT_S) -> Any:
        """The driver's NodeUnprepareResourcesResponse as is; gRPC errors are raised unchanged."""
        request = self._pb2.NodeUnprepareResourcesRequest(claims=self._claims(claims))
        return self._stub.NodeUnprepareResources(request, timeout=timeout)

    def prepare(
        self, claims: list[ClaimRef], timeout: float = CALL_TIMEOUT_S
    ) -> dict[str, ClaimPrepareResult]:
        try:
            response = self.prepare_response(claims, timeout)
        except grpc.RpcError as e:
            raise DRACallError(_rpc_error_text(e)) from e
        except ValueError as e:  # the channel was closed because the driver deregistered meanwhile
            raise DRACallError(f"DRA driver {self.driver_name} deregistered during the call") from e
        out: dict[str, ClaimPrepareResult] = {}
        for uid, claim_response in response.claims.items():
            result = ClaimPrepareResult(error=claim_response.error)
            for d in claim_response.devices:
                share_id = d.share_id if self.service == "v1.DRAPlugin" and d.HasField("share_id") else None
                result.devices.append(
                    PreparedDevice(
                        request_names=tuple(d.request_names),
                        pool_name=d.pool_name,
                        device_name=d.device_name,
                        cdi_device_ids=tuple(d.cdi_device_ids),
                        share_id=share_id,
                    )
                )
            out[uid] = result
        return out

    def unprepare(self, claims: list[ClaimRef], timeout: float = CALL_TIMEOUT_S) -> dict[str, str]:
        """Per claim UID, the driver's error text ("" when it succeeded)."""
        try:
            response = self.unprepare_response(claims, timeout)
        except grpc.RpcError as e:
            raise DRACallError(_rpc_error_text(e)) from e
        except ValueError as e:
            raise DRACallError(f"DRA driver {self.driver_name} deregistered during the call") from e
        return {uid: r.error for uid, r in response.claims.items()}

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._channel.close()


def _rpc_error_text(e: grpc.RpcError) -> str:
    code = e.code() if hasattr(e, "code") else None
    details = e.details() if hasattr(e, "details") else str(e)
    name = code.name.title().replace("_", "") if code is not None else "Unknown"
    return f"rpc error: code = {name} desc = {details}"
