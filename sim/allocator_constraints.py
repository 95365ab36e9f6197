"""Claim constraints: matchAttribute and distinctAttribute (allocator-rules.md sections 10 and 12)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def lookup_attribute(device: Mapping[str, Any], driver: str, name: str) -> tuple[str, Any] | None:
    """A fully qualified attribute of a device; the driver's own domain may be stored unqualified."""
    attrs = device.get("attributes") or {}
    attr = attrs.get(name)
    if attr is None:
        domain, _, ident = name.rpartition("/")
        if domain == driver:
            attr = attrs.get(ident)
    if not attr:
        return None
    for kind in ("string", "int", "bool", "version", "strings", "ints", "bools", "versions"):
        if attr.get(kind) is not None:
            value = attr[kind]
            return kind, tuple(value) if isinstance(value, list) else value
    return None


def _affects(names: list[str], request: str, sub: str | None) -> bool:
    if not names:
        return True
    return request in names or (sub is not None and f"{request}/{sub}" in names)


class MatchAttribute:
    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.requests: list[str] = list(spec.get("requests") or [])
        self.attribute: str = spec["matchAttribute"]
        self.value: tuple[str, Any] | None = None
        self.count = 0

    def add(self, request: str, sub: str | None, device: Mapping[str, Any], driver: str) -> bool:
        if not _affects(self.requests, request, sub):
            return True
        attr = lookup_attribute(device, driver, self.attribute)
        if attr is None:
            return False
        if self.count == 0:
            self.value = attr
        elif attr != self.value:
            return False
        self.count += 1
        return True

    def remove(self, request: str, sub: str | None, device: Mapping[str, Any], driver: str) -> None:
        if _affects(self.requests, request, sub):
            self.count -= 1


class DistinctAttribute:
    """Values are recorded per request name, as upstream's incubating variant does (a QUIRK: with
    count >= 3 a device is compared only with its request's most recent device)."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.requests: list[str] = list(spec.get("requests") or [])
        self.attribute: str = spec["distinctAttribute"]
        self.values: dict[str, tuple[str, Any]] = {}

    def add(self, request: str, sub: str | None, device: Mapping[str, Any], driver: str) -> bool:
        if not _affects(self.requests, request, sub):
            return True
        attr = lookup_attribute(device, driver, self.attribute)
        if attr is None:
            return False
        if any(attr == other for other in self.values.values()):
            return False
        self.values[request] = attr
        return True

    def remove(self, request: str, sub: str | None, device: Mapping[str, Any], driver: str) -> None:
        if _affects(self.requests, request, sub):
            self.values.pop(request, None)


def build_constraints(specs: list[Mapping[str, Any]], consumable_capacity: bool) -> list[Any]:
    out: list[Any] = []
    for spec in specs:
        if spec.get("matchAttribute"):
            out.append(MatchAttribute(spec))
        elif spec.get("distinctAttribute") and consumable_capacity:
            out.append(DistinctAttribute(spec))
    return out
