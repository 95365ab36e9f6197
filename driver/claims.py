"""Turn an allocated ResourceClaim (a JSON dict as the API serves it) into what this node prepares: a pure
function, so every rule about which results count and how devices are named is in one testable place."""

from __future__ import annotations

import re
from typing import Any

from drakit.draclient import ClaimRef
from drakit.quantity import QuantityError, parse_bytes
from driver import cdi
from driver.inventory import GpuInfo

CONFIG_KIND = "GpuConfig"
_SHARE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")


class ClaimError(Exception):
    """This claim cannot be prepared; the message names the claim and what is wrong with it."""


def config_api_version(driver_name: str) -> str:
    return f"{driver_name}/v1alpha1"


def check_opaque_config(ref: ClaimRef, driver_name: str, allocation: dict[str, Any]) -> None:
    """Opaque config for this driver must be a GpuConfig. It has no options yet; anything else is a
    mistake the user should hear about rather than have ignored."""
    for i, entry in enumerate((allocation.get("devices") or {}).get("config") or []):
        opaque = (entry or {}).get("opaque") or {}
        if opaque.get("driver") != driver_name:
            continue
        where = f"{ref}: status.allocation.devices.config[{i}].opaque.parameters"
        params = opaque.get("parameters")
        if not isinstance(params, dict):
            raise ClaimError(f"{where}: expected an object with apiVersion and kind, got {params!r}")
        allowed = {"apiVersion", "kind"}
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise ClaimError(
                f"{where}: unknown key {unknown[0]!r}; {CONFIG_KIND} accepts only {sorted(allowed)}"
            )
        want = config_api_version(driver_name)
        if params.get("apiVersion") != want or params.get("kind") != CONFIG_KIND:
            raise ClaimError(
                f"{where}: expected apiVersion {want!r} and kind {CONFIG_KIND!r}, got "
                f"{params.get('apiVersion')!r} and {params.get('kind')!r}"
            )


def plan_claim(
    ref: ClaimRef,
    claim: dict[str, Any] | None,
    driver_name: str,
    node_name: str,
    gpus: dict[str, GpuInfo],
    real_gpu: bool,
) -> list[dict[str, Any]]:
    """The devices to prepare for `claim`, one per (GPU, shareID), as stored in the checkpoint:
    {"requests", "pool", "device", "shareID", "cdiName", "env"}. Raises ClaimError."""
    if claim is None:
        raise ClaimError(f"{ref}: not found in the API (deleted before prepare)")
    meta = claim.get("metadata") or {}
    if meta.get("uid") != ref.uid:
        raise ClaimError(f"{ref}: the API has uid {meta.get('uid')!r}; the claim was replaced")
    allocation = (claim.get("status") or {}).get("allocation")
    if not allocation:
        raise ClaimError(f"{ref}: not allocated (status.allocation is empty)")
    check_opaque_config(ref, driver_name, allocation)
    planned: dict[tuple[str, str | None], dict[str, Any]] = {}
    results = (allocation.get("devices") or {}).get("results") or []
    for i, result in enumerate(results):
        if result.get("driver") != driver_name:
            continue
        where = f"{ref}: status.allocation.devices.results[{i}]"
        if result.get("pool") != node_name:
            raise ClaimError(f"{where}: pool {result.get('pool')!r} is not this node's pool {node_name!r}")
        gpu = gpus.get(result.get("device", ""))
        if gpu is None:
            raise ClaimError(f"{where}: device {result.get('device')!r} is not a GPU on node {node_name}")
        share_id = result.get("shareID") or None
        if share_id is not None and not _SHARE_ID.match(share_id):
            raise ClaimError(f"{where}: shareID {share_id!r} is not a UID")
        consumed = (result.get("consumedCapacity") or {}).get("memory")
        try:
            # No consumedCapacity means an exclusive allocation: the container gets the whole GPU.
            memory = (
                gpu.memory_bytes if consumed is None else parse_bytes(consumed, f"{where}.consumedCapacity")
            )
        except QuantityError as err:
            raise ClaimError(str(err)) from err
        if memory > gpu.memory_bytes:
            raise ClaimError(
                f"{where}: consumedCapacity.memory {consumed} exceeds {gpu.device_name}'s "
                f"{gpu.memory_bytes} bytes"
            )
        # The kubelet matches request names against containers[].resources.claims[].request, which never
        # names a subrequest.
        request = str(result.get("request", "")).split("/", 1)[0]
        key = (gpu.device_name, share_id)
        if key in planned:
            if request not in planned[key]["requests"]:
                planned[key]["requests"].append(request)
            continue
        planned[key] = {
            "requests": [request],
            "pool": node_name,
            "device": gpu.device_name,
            "shareID": share_id,
            "cdiName": cdi.device_name(ref.uid, gpu.index, share_id),
            "env": cdi.container_env(gpu.index, gpu.uuid, memory, share_id),
            "uuid": gpu.uuid,
        }
    if not planned:
        # The kubelet only asks a driver about claims with devices from it; anything else is a mix-up.
        others = sorted({str(r.get("driver")) for r in results})
        raise ClaimError(
            f"{ref}: no device in status.allocation is from driver {driver_name} "
            f"(allocated by: {', '.join(others) or 'nobody'})"
        )
    devices = list(planned.values())
    if real_gpu:
        _add_visible_devices(devices)
    for d in devices:
        del d["uuid"]
    return devices


def _add_visible_devices(devices: list[dict[str, Any]]) -> None:
    """NVIDIA_VISIBLE_DEVICES for each CDI device. A container that gets several GPUs of one request
    (count: 2) gets one CDI device per GPU, and with equal env keys the last one wins; so each device names
    every GPU that serves one of its requests, and all of them agree."""
    for d in devices:
        uuids = [o["uuid"] for o in devices if set(o["requests"]) & set(d["requests"])]
        d["env"].append(cdi.visible_devices_env(list(dict.fromkeys(uuids))))
