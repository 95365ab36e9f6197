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
    """One resource pool seen from one node.

    `slices` are the device slices that target the node, sorted by name; `counter_sets` maps each
    counter set name to its counters (quantity strings); `other_slices` are device slices of the pool
    that do not target the node (they still consume shared counters). An incomplete or invalid pool
    carries no slices: nothing is allocated from it.
    """

    driver: str
    name: str
    generation: int
    slices: list[Mapping[str, Any]] = field(default_factory=list)
    incomplete: bool = False
    invalid: bool = False
    invalid_reason: str = ""
    counter_sets: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    other_slices: list[Mapping[str, Any]] = field(default_factory=list)
    cross_node: bool = False  # judged from slices beyond the node's own (a cache of it depends on them)

    @property
    def usable(self) -> bool:
        return not (self.incomplete or self.invalid)


def _spec(s: Mapping[str, Any]) -> Mapping[str, Any]:
    return s.get("spec") or {}


def _pool_key(s: Mapping[str, Any]) -> tuple[str, str]:
    spec = _spec(s)
    return spec.get("driver", ""), (spec.get("pool") or {}).get("name", "")


def _generation(s: Mapping[str, Any]) -> int:
    return int((_spec(s).get("pool") or {}).get("generation") or 0)


def _slice_count(s: Mapping[str, Any]) -> int:
    return int((_spec(s).get("pool") or {}).get("resourceSliceCount") or 0)


def _targets_node(spec: Mapping[str, Any], node: Mapping[str, Any], partitionable: bool) -> bool:
    """upstream GatherPools: counter-set slices always belong; otherwise node, all, selector, or
    per-device selection; anything else is an unknown extension and skipped."""
    if not partitionable and (spec.get("perDeviceNodeSelection") is not None or spec.get("sharedCounters")):
        return False
    if spec.get("sharedCounters"):
        return True
    if spec.get("nodeName") or spec.get("allNodes") or spec.get("nodeSelector") is not None:
        return slice_visible(spec, node)
    if spec.get("perDeviceNodeSelection"):
        return any(device_visible(spec, d, node) for d in spec.get("devices") or [])
    return False


def _invalid_reason(
    device_slices: list[Mapping[str, Any]],
    counter_slices: list[Mapping[str, Any]],
    other_slices: list[Mapping[str, Any]],
    partitionable: bool,
    counter_sets: dict[str, Mapping[str, Any]],
) -> str:
    seen: set[str] = set()
    for s in device_slices:
        for d in _spec(s).get("devices") or []:
            if d.get("name") in seen:
                return f"duplicate device name {d.get('name')}"
            seen.add(d.get("name"))
    if not partitionable:
        return ""
    for s in counter_slices:
        for cs in _spec(s).get("sharedCounters") or []:
            if cs.get("name", "") in counter_sets:
                return f"duplicate counter set name {cs.get('name', '')}"
            counter_sets[cs.get("name", "")] = cs.get("counters") or {}
    for group in (device_slices, other_slices):
        for s in group:
            for d in _spec(s).get("devices") or []:
                for use in d.get("consumesCounters") or []:
                    set_name = use.get("counterSet", "")
                    counters = counter_sets.get(set_name)
                    if counters is None:
                        return f"counter set {set_name} not found"
                    for counter in use.get("counters") or {}:
                        if counter not in counters:
                            return f"counter {counter} not found in counter set {set_name}"
    return ""


def gather_pools(
    slices: Iterable[Mapping[str, Any]],
    node: Mapping[str, Any],
    partitionable: bool = True,
    all_slices: Iterable[Mapping[str, Any]] | None = None,
) -> list[Pool]:
    """Pools visible from `node`, sorted by driver then pool name; slices in a pool sorted by name.

    As upstream's GatherPools: only the newest generation counts; a pool whose published slices do
    not add up to `resourceSliceCount` is incomplete (an obsolete generation is dropped); duplicate
    device names, duplicate counter sets and devices consuming counters a pool does not define make
    it invalid. `all_slices` (default: `slices`) is every slice of the cluster, consulted as upstream
    does when the node's view of a pool looks incomplete.
    """
    slices = list(slices)
    everything_known = slices if all_slices is None else list(all_slices)
    node_name = (node.get("metadata") or {}).get("name")
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    generations: dict[tuple[str, str], int] = {}  # of each group's slices
    for s in slices:
        spec = _spec(s)
        slice_node = spec.get("nodeName")
        if (
            slice_node
            and not spec.get("sharedCounters")
            and (partitionable or spec.get("perDeviceNodeSelection") is None)
        ):
            if slice_node != node_name:  # the common case: a device slice of some node
                continue
        elif not _targets_node(spec, node, partitionable):
            continue
        pool = spec.get("pool") or {}
        key = (spec.get("driver", ""), pool.get("name", ""))
        gen = int(pool.get("generation") or 0)
        group = groups.get(key)
        if group is None or gen > generations[key]:
            groups[key] = [s]
            generations[key] = gen
        elif gen == generations[key]:
            group.append(s)
    result = []
    for key in sorted(groups):
        group = groups[key]
        gen = generations[key]
        want = _slice_count(group[0])
        everything: list[Mapping[str, Any]] | None = None
        if len(group) != want:
            same_gen = [s for s in everything_known if _pool_key(s) == key and _generation(s) >= gen]
            if any(_generation(s) > gen for s in same_gen):
                continue  # the driver is replacing this generation: ignore the old one
            everything = same_gen
            if len(everything) != want:
                result.append(Pool(key[0], key[1], gen, incomplete=True, cross_node=True))
                continue
        group.sort(key=lambda s: (s.get("metadata") or {}).get("name", ""))
        if partitionable:
            device_slices = [s for s in group if not _spec(s).get("sharedCounters")]
            counter_slices = [s for s in group if _spec(s).get("sharedCounters")]
        else:
            device_slices, counter_slices = group, []
        names = {id(s) for s in group}
        other = [s for s in everything or [] if id(s) not in names and not _spec(s).get("sharedCounters")]
        counter_sets: dict[str, Mapping[str, Any]] = {}
        reason = _invalid_reason(device_slices, counter_slices, other, partitionable, counter_sets)
        if reason:
            result.append(
                Pool(
                    key[0],
                    key[1],
                    gen,
                    invalid=True,
                    invalid_reason=reason,
                    cross_node=everything is not None,
                )
            )
            continue
        result.append(
            Pool(
                key[0],
                key[1],
                gen,
                device_slices,
                counter_sets=counter_sets,
                other_slices=other,
                cross_node=everything is not None,
            )
        )
    return result
