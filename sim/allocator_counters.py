"""Partitionable devices: shared counters (allocator-rules.md section 11).

A pool's slices may declare `sharedCounters` (counter sets); devices declare `consumesCounters`. A
device may be allocated only while every counter it consumes is still available in its pool. An
exclusive device takes its counters each time; a multi-allocatable one only on its first share.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from sim.quantity import Quantity

CounterKey = tuple[str, str, str]  # (driver, pool, counter set)


def _counters(obj: Mapping[str, Any]) -> dict[str, Decimal]:
    return {name: Quantity.parse(c["value"]).value for name, c in (obj.get("counters") or {}).items()}


def consumes(device: Mapping[str, Any]) -> list[tuple[str, dict[str, Decimal]]]:
    return [(c.get("counterSet", ""), _counters(c)) for c in device.get("consumesCounters") or []]


class CounterLedger:
    """Available counters per pool, built lazily from the pool and the committed allocations."""

    def __init__(self) -> None:
        self._available: dict[CounterKey, dict[str, Decimal]] = {}
        self._pools_done: set[tuple[str, str]] = set()

    def _load(self, pool: Any, devices: Iterable[Any], in_use: Any) -> None:
        key = (pool.driver, pool.name)
        if key in self._pools_done:
            return
        self._pools_done.add(key)
        for s in pool.slices:
            for counter_set in (s.get("spec") or {}).get("sharedCounters") or []:
                key_ = (pool.driver, pool.name, counter_set.get("name", ""))
                self._available[key_] = _counters(counter_set)
        for dev in devices:
            if dev.pool is pool and in_use(dev):
                self._take(dev, +1)

    def _take(self, dev: Any, sign: int) -> None:
        for set_name, need in consumes(dev.device):
            bucket = self._available.setdefault((dev.id[0], dev.id[1], set_name), {})
            for name, amount in need.items():
                bucket[name] = bucket.get(name, Decimal(0)) - sign * amount

    def fits(self, dev: Any, devices: Iterable[Any], in_use: Any) -> bool:
        self._load(dev.pool, devices, in_use)
        for set_name, need in consumes(dev.device):
            bucket = self._available.get((dev.id[0], dev.id[1], set_name))
            if bucket is None:
                return False  # consumes from a counter set the pool does not declare
            if any(name not in bucket or bucket[name] < amount for name, amount in need.items()):
                return False
        return True

    def take(self, dev: Any) -> None:
        self._take(dev, +1)

    def release(self, dev: Any) -> None:
        self._take(dev, -1)
