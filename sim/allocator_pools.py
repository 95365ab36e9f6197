"""Resource pools as the allocator sees them from one node (allocator-rules.md section 12).

Pure functions over ResourceSlice dicts: node visibility, pool gathering (highest generation wins,
incomplete and invalid pools flagged), and the node-selector matching shared with the scheduler.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


def _requirement_matches(req: Mapping[str, Any], value: str | None) -> bool:
    op = req.get("operator")
    values = req.get("values") or []
    if op == "In":
        return value is not None and value in values
    if op == "NotIn":
        return value is None or value not in values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt") and value is not None and len(values) == 1:
        try:
            lhs, rhs = int(value), int(values[0])
        except ValueError:
            return False
        return lhs > rhs if op == "Gt" else lhs < rhs
    return False


def node_selector_term_matches(term: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    exprs = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not exprs and not fields:
        return False  # an empty term selects nothing, as core/v1 documents
    labels = (node.get("metadata") or {}).get("labels") or {}
    for req in exprs:
        if not _requirement_matches(req, labels.get(req.get("key", ""))):
            return False
    name = (node.get("metadata") or {}).get("name")
    for req in fields:
        value = name if req.get("key") == "metadata.name" else None
        if not _requirement_matches(req, value):
            return False
    return True


def node_selector_matches(selector: Mapping[str, Any] | None, node: Mapping[str, Any]) -> bool:
    """core/v1 NodeSelector: terms are ORed; nil selects every node."""
    if selector is None:
        return True
    return any(node_selector_term_matches(t, node) for t in selector.get("nodeSelectorTerms") or [])


def slice_visible(spec: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """Is (some device of) this slice usable from `node`?"""
    node_name = (node.get("metadata") or {}).get("name")
    if spec.get("nodeName"):
        return spec["nodeName"] == node_name
    if spec.get("allNodes"):
        return True
    if spec.get("nodeSelector") is not None:
        return node_selector_matches(spec["nodeSelector"], node)
    if spec.get("perDeviceNodeSelection"):
        return any(device_visible(spec, d, node) for d in spec.get("devices") or [])
    return False


def device_visible(spec: Mapping[str, Any], device: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    if not spec.get("perDeviceNodeSelection"):
        return True
    node_name = (node.get("metadata") or {}).get("name")
    if device.get("nodeName"):
        return device["nodeName"] == node_name
    if device.get("allNodes"):
        return True
    if device.get("nodeSelector") is not None:
        return node_selector_matches(device["nodeSelector"], node)
    return False


@dataclass
class Pool:
    driver: str
    name: str
    generation: int
    slices: list[Mapping[str, Any]] = field(default_factory=list)
    incomplete: bool = False
    invalid: bool = False
    invalid_reason: str = ""


def gather_pools(slices: Iterable[Mapping[str, Any]], node: Mapping[str, Any]) -> list[Pool]:
    """Pools visible from `node`, sorted by driver then pool name; slices in a pool sorted by name."""
    pools: dict[tuple[str, str], Pool] = {}
    for s in slices:
        spec = s.get("spec") or {}
        if not slice_visible(spec, node):
            continue
        pool_ref = spec.get("pool") or {}
        key = (spec.get("driver", ""), pool_ref.get("name", ""))
        gen = int(pool_ref.get("generation") or 0)
        current = pools.get(key)
        if current is None or gen > current.generation:
            pools[key] = Pool(key[0], key[1], gen, [s])
        elif gen == current.generation:
            current.slices.append(s)
    result = []
    for key in sorted(pools):
        pool = pools[key]
        pool.slices.sort(key=lambda s: s["metadata"]["name"])
        want = int(((pool.slices[0].get("spec") or {}).get("pool") or {}).get("resourceSliceCount") or 1)
        pool.incomplete = len(pool.slices) != want
        seen: set[str] = set()
        for s in pool.slices:
            for d in (s.get("spec") or {}).get("devices") or []:
                if d.get("name") in seen:
                    pool.invalid = True
                    pool.invalid_reason = f"duplicate device name {d.get('name')}"
                seen.add(d.get("name"))
        result.append(pool)
    return result
