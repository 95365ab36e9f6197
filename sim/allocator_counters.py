"""Partitionable devices: shared counters (allocator-rules.md section 11), as upstream keeps them.

A pool's counter-set slices declare `sharedCounters`; devices declare `consumesCounters`. Available
counters per pool are the counter sets minus what committed devices consume (computed once per
Allocate call). Devices picked during the call add to `consumed`; a device fits while no counter of
any set of its pool is over. Upstream's bookkeeping is reproduced with its quirks: the maps are keyed
by pool *name* (not driver and pool), and callers release counters only where upstream does
(exclusive devices on backtracking, or a failed counter check), so counters taken by a
multi-allocatable device, or by a device that then fails a constraint, stay taken for the rest of the
call (R7, R14).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from sim.allocator_state import parse_quantity_cached

Counters = dict[str, dict[str, Decimal]]  # counter set -> counter -> amount


def _amounts(counters: Mapping[str, Any] | None) -> dict[str, Decimal]:
    return {
        name: parse_quantity_cached((c or {}).get("value", "0")).value for name, c in (counters or {}).items()
    }


def consumes(device: Mapping[str, Any]) -> list[tuple[str, dict[str, Decimal]]]:
    """A device's `consumesCounters`, parsed: [(counter set, {counter: amount})]."""
    return [
        (c.get("counterSet", ""), _amounts(c.get("counters"))) for c in device.get("consumesCounters") or []
    ]


class CounterLedger:
    """Counter accounting for one Allocate call."""

    def __init__(self, is_allocated: Callable[[tuple[str, str, str]], bool]) -> None:
        self._is_allocated = is_allocated
        self._available: dict[str, Counters] = {}
        self._consumed: dict[str, Counters] = {}

    def _available_for(self, pool: Any) -> Counters:
        hit = self._available.get(pool.name)
        if hit is not None:
            return hit
        available = {name: _amounts(counters) for name, counters in pool.counter_sets.items()}
        for group in (pool.slices, pool.other_slices):
            for s in group:
                for d in (s.get("spec") or {}).get("devices") or []:
                    if not self._is_allocated((pool.driver, pool.name, d.get("name", ""))):
                        continue
                    for set_name, need in consumes(d):
                        bucket = available.get(set_name)
                        if bucket is None:
                            continue
                        for name, amount in need.items():
                            if name in bucket:
                                bucket[name] -= amount  # may go negative: then nothing is left
        self._available[pool.name] = available
        return available

    def take_if_available(self, pool: Any, need: list[tuple[str, dict[str, Decimal]]]) -> bool:
        """upstream checkAvailableCounters: add `need`, then check every counter of the pool."""
        available = self._available_for(pool)
        consumed = self._consumed.setdefault(pool.name, {})
        for set_name, amounts in need:
            bucket = consumed.setdefault(set_name, {})
            for name, amount in amounts.items():
                bucket[name] = bucket.get(name, Decimal(0)) + amount
        for set_name, counters in available.items():
            used = consumed.get(set_name) or {}
            for name, value in counters.items():
                if value < used.get(name, 0):
                    self.release(pool, need)
                    return False
        return True

    def release(self, pool: Any, need: list[tuple[str, dict[str, Decimal]]]) -> None:
        consumed = self._consumed.get(pool.name) or {}
        for set_name, amounts in need:
            bucket = consumed.setdefault(set_name, {})
            for name, amount in amounts.items():
                bucket[name] = bucket.get(name, Decimal(0)) - amount
