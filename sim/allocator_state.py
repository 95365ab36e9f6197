"""What other claims already hold (allocator-rules.md section 5), kept incrementally.

The scheduler feeds every allocated claim (committed and in flight) through `set_claim`; removing
or replacing a claim subtracts exactly what it added, so per-pod work never rescans the world.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from drakit.quantity import Quantity

# The same few quantity strings recur in every slice and result; Quantity is immutable.
parse_quantity_cached = functools.lru_cache(maxsize=8192)(Quantity.parse)

DeviceID = tuple[str, str, str]  # (driver, pool, device)


def device_id(result: Mapping[str, Any]) -> DeviceID:
    return (result.get("driver", ""), result.get("pool", ""), result.get("device", ""))


class AllocatedState:
    """Dedicated devices in use, shared IDs, and summed consumed capacity per device."""

    def __init__(self, consumable_capacity: bool = True) -> None:
        self.consumable_capacity = consumable_capacity
        self._dedicated: dict[DeviceID, int] = {}
        self._consumed: dict[DeviceID, dict[str, Decimal]] = {}
        self._shares: dict[DeviceID, int] = {}
        self._with_consumed: dict[DeviceID, int] = {}  # results whose consumedCapacity is set
        self._shared_ids: set[tuple[DeviceID, str]] = set()
        self._by_claim: dict[str, list[Mapping[str, Any]]] = {}
        self.version = 0

    # -- queries used by the allocator --
    def is_dedicated(self, dev: DeviceID) -> bool:
        return self._dedicated.get(dev, 0) > 0

    def consumed(self, dev: DeviceID) -> Mapping[str, Decimal]:
        return self._consumed.get(dev, {})

    def has_shares(self, dev: DeviceID) -> bool:
        return self._shares.get(dev, 0) > 0

    def has_consumed(self, dev: DeviceID) -> bool:
        """Upstream's `AggregatedCapacity` has an entry: some shared result carries consumedCapacity."""
        return self._with_consumed.get(dev, 0) > 0

    def is_allocated(self, dev: DeviceID) -> bool:
        """upstream IsDeviceAllocated (counter accounting): dedicated, shared, or consuming."""
        return dev in self._dedicated or dev in self._shares or dev in self._with_consumed

    def shared_ids(self) -> set[tuple[DeviceID, str]]:
        return set(self._shared_ids)

    # -- maintenance --
    def set_claim(self, key: str, allocation: Mapping[str, Any] | None) -> None:
        """Record (or replace, or with None drop) the allocation of claim `key` ("ns/name" or uid)."""
        old = self._by_claim.pop(key, None)
        if old:
            self._apply(old, -1)
        results = list(((allocation or {}).get("devices") or {}).get("results") or [])
        if results:
            self._by_claim[key] = results
            self._apply(results, +1)
        if old or results:
            self.version += 1

    def claims(self) -> set[str]:
        return set(self._by_claim)

    def _apply(self, results: list[Mapping[str, Any]], sign: int) -> None:
        for r in results:
            if r.get("adminAccess"):
                continue  # admin results neither use nor consume (section 5)
            dev = device_id(r)
            share = r.get("shareID")
            if self.consumable_capacity and share:
                self._shares[dev] = self._shares.get(dev, 0) + sign
                if self._shares[dev] <= 0:
                    del self._shares[dev]
                if sign > 0:
                    self._shared_ids.add((dev, share))
                else:
                    self._shared_ids.discard((dev, share))
                consumed = r.get("consumedCapacity")
                if consumed is not None:
                    count = self._with_consumed.get(dev, 0) + sign
                    totals = self._consumed.setdefault(dev, {})
                    for name, q in consumed.items():
                        totals[name] = totals.get(name, Decimal(0)) + sign * parse_quantity_cached(q).value
                    if count <= 0:
                        self._with_consumed.pop(dev, None)
                        self._consumed.pop(dev, None)
                    else:
                        self._with_consumed[dev] = count
            else:
                self._dedicated[dev] = self._dedicated.get(dev, 0) + sign
                if self._dedicated[dev] <= 0:
                    del self._dedicated[dev]
