"""The GPUs the driver under test published, read from its ResourceSlices."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from conformance.capacity import Capacity, DeviceCapacities, device_capacity
from conformance.profiles import DriverProfile


@dataclass(frozen=True)
class Gpu:
    node: str
    pool: str
    slice_name: str
    device: str
    identity: str  # value of the profile's identity attribute (the uuid)
    product: str
    attributes: dict[str, Any]  # flattened: attribute id (driver domain) or "domain/id" -> value
    capacity: Capacity | None  # the profile's capacity (memory), None when not published
    shareable: bool  # allowMultipleAllocations == true
    raw: dict[str, Any] = field(repr=False, default_factory=dict)
    # every consumable capacity the device publishes (memory, compute, ...): a request consumes of all
    capacities: DeviceCapacities = field(default_factory=DeviceCapacities)

    def selector(self, profile: DriverProfile) -> str:
        """CEL expression that matches exactly this GPU (pins a scenario to it)."""
        return f"{profile.cel_ref('attributes', profile.identity_attribute)} == {json.dumps(self.identity)}"

    @property
    def label(self) -> str:
        return f"{self.node}/{self.device} ({self.product}, {self.identity})"


def attribute_value(attr: dict[str, Any]) -> Any:
    for kind in ("string", "int", "bool", "version"):
        if kind in attr:
            return attr[kind]
    return None


def flatten_attributes(device: dict[str, Any], driver: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, attr in (device.get("attributes") or {}).items():
        domain, _, ident = name.rpartition("/")
        out[ident if domain in ("", driver) else name] = attribute_value(attr or {})
    return out


def slice_node(slice_: dict[str, Any]) -> str:
    spec = slice_.get("spec") or {}
    return spec.get("nodeName") or (spec.get("pool") or {}).get("name", "")


def driver_slices(slices: list[dict[str, Any]], driver: str) -> list[dict[str, Any]]:
    return [s for s in slices if (s.get("spec") or {}).get("driver") == driver]


def gpus_from_slices(slices: list[dict[str, Any]], profile: DriverProfile) -> list[Gpu]:
    gpus = []
    for s in sorted(driver_slices(slices, profile.driver), key=lambda s: s["metadata"]["name"]):
        spec = s["spec"]
        for dev in spec.get("devices") or ():
            attrs = flatten_attributes(dev, profile.driver)
            ident_key = profile.identity_attribute
            prod_key = profile.product_attribute
            gpus.append(
                Gpu(
                    node=slice_node(s),
                    pool=(spec.get("pool") or {}).get("name", ""),
                    slice_name=s["metadata"]["name"],
                    device=dev["name"],
                    identity=str(attrs.get(ident_key, "")),
                    product=str(attrs.get(prod_key, "")),
                    attributes=attrs,
                    capacity=device_capacity(dev, profile.capacity),
                    shareable=dev.get("allowMultipleAllocations") is True,
                    raw=dev,
                    capacities=DeviceCapacities.from_device(dev, profile.driver),
                )
            )
    return gpus


def capacities_by_device(gpus: list[Gpu]) -> dict[str, dict[str, dict[str, Any]]]:
    """For the report: node/device -> capacity -> what was published (value, requestPolicy) and a
    summary in words."""
    return {
        f"{g.node}/{g.device}": {
            name: {"published": g.capacities[name].raw, "summary": g.capacities[name].describe()}
            for name in g.capacities.names()
        }
        for g in gpus
    }


def by_node(gpus: list[Gpu]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for g in gpus:
        mem = f", {g.capacity.value} bytes" if g.capacity else ""
        out.setdefault(g.node, []).append(f"{g.device}: {g.product} ({g.identity}{mem})")
    return out
