"""The state of one conformance run, shared by the plugin and the scenarios."""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from conformance.devicenodes import device_node_probe
from conformance.inventory import Gpu
from conformance.kube import Kube
from conformance.observe import WaitTimeout, wait_for
from conformance.preflight import PreflightResult
from conformance.profiles import DriverProfile
from conformance.providers.base import ClusterHandle, DriverDeployment, Provider
from conformance.templates import ClaimTemplate, validate_object


@dataclass
class Suite:
    profile: DriverProfile
    provider: Provider
    handle: ClusterHandle
    deployment: DriverDeployment
    kube: Kube
    schema_version: str
    templates: list[ClaimTemplate]
    preflight: PreflightResult
    wait_timeout: float
    settle_seconds: float
    republish_timeout: float  # how long the driver may take to republish (profile)
    gpu_profile: dict[str, Any] | None = None  # mock GPU profile used (sim/kind), for real memory
    run_id: str = field(default_factory=lambda: secrets.token_hex(4))
    created_namespaces: list[str] = field(default_factory=list)
    rejections: list[Any] = field(default_factory=list)
    _next_gpu: int = 0

    def pod_command(self) -> list[str]:
        # Both the sim (a local process, no shell added) and a real node run this: print what the
        # container sees, then stay Running.
        view = "nvidia-smi -L" if self.profile.visibility.method == "nvidia-smi" else "env"
        return ["sh", "-c", f"{view}; {device_node_probe(self.profile, self.preflight.gpus)}exec sleep 3600"]

    def validate(self, body: dict[str, Any]) -> None:
        validate_object(body, self.schema_version, f"{body['kind']}/{body['metadata']['name']}")

    def usable_gpus(self) -> list[Gpu]:
        busy = {b.split(" held by ")[0] for b in self.preflight.busy}
        return [g for g in self.preflight.shareable_gpus if g.label not in busy]

    def pick_gpus(self, count: int = 1, same_node: bool = False) -> list[Gpu]:
        """Idle shareable GPUs, rotating so consecutive scenarios use different cards."""
        gpus = self.usable_gpus()
        if len(gpus) < count:
            return []
        start = self._next_gpu % len(gpus)
        ordered = gpus[start:] + gpus[:start]
        self._next_gpu += 1
        if not same_node:
            return ordered[:count]
        for first in ordered:
            peers = [g for g in ordered if g.node == first.node]
            if len(peers) >= count:
                return peers[:count]
        return []

    def real_memory(self, gpu: Gpu) -> int | None:
        """The memory the mock GPU profile gives this GPU's model (None when unknown)."""
        if not self.gpu_profile:
            return None
        from conformance.capacity import parse

        for entry in self.gpu_profile.get("gpus") or ():
            if entry.get("model") == gpu.product and entry.get("memory") is not None:
                return parse(entry["memory"])
        return None

    def delete_namespaces(self, namespaces: list[str]) -> list[str]:
        problems = []
        for ns in namespaces:
            with contextlib.suppress(ApiException):
                self.kube.core.delete_namespace(ns)
        wanted = set(namespaces)
        try:
            wait_for(
                self.kube.core.list_namespace,
                lambda st: True if not wanted & set(st) else None,
                timeout=self.wait_timeout,
                what=f"namespace(s) {', '.join(sorted(wanted))} to be deleted",
                describe=lambda st: ", ".join(sorted(wanted & set(st))),
            )
        except (WaitTimeout, ApiException) as exc:
            problems.append(str(exc))
        for ns in namespaces:
            if ns in self.created_namespaces and not problems:
                self.created_namespaces.remove(ns)
        return problems
