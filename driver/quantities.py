"""The driver's seam onto quantity maths: whole bytes in, Kubernetes quantity strings out.

All parsing and formatting is delegated to `sim/quantity.py`, the project's one home for quantity and
capacity maths (contracts, docs/architecture.md); the driver adds only its "whole, non-negative bytes" rule.
"""

from __future__ import annotations

from decimal import Decimal

from sim import quantity

QuantityError = quantity.QuantityError


def parse_bytes(value: str | int, what: str) -> int:
    """Parse `value` (e.g. "24Gi", "1Mi", 4096) into an integer number of bytes; errors name `what`."""
    q = quantity.parse_quantity(value, field=what)
    if q.value != q.value.to_integral_value():
        raise QuantityError(f"{what}: {value!r} is not a whole number of bytes")
    if q.value < 0:
        raise QuantityError(f"{what}: {value!r} must not be negative")
    return int(q.value)


def format_bytes(n: int) -> str:
    """Bytes as Kubernetes prints a BinarySI quantity: 25769803776 -> "24Gi", 17175674880 -> "16380Mi"."""
    return quantity.format_quantity(Decimal(n), quantity.BINARY_SI)
