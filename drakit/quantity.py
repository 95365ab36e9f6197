"""The one home for Kubernetes quantity and DRA capacity maths.

Used by the API server (validation), the allocator (rounding, policy, fit), the conformance
suite's capacity model, and the driver and the GPU profiles (whole bytes: ``parse_bytes``,
``format_bytes``). Parsing is `kubernetes.utils.parse_quantity`; everything else follows
apimachinery's `resource.Quantity` and the DRA allocator's `consumable_capacity.go` as restated in
allocator-rules.md section 3.
"""

from __future__ import annotations

import decimal
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from kubernetes.utils import parse_quantity as _k8s_parse_quantity

BINARY_SI = "BinarySI"
DECIMAL_SI = "DecimalSI"
DECIMAL_EXPONENT = "DecimalExponent"

# Quantities carry up to 63 bits of value and 9 fractional digits (nano); 60 digits is exact for all
# sums the allocator forms.
_CTX = decimal.Context(prec=60, rounding=decimal.ROUND_HALF_EVEN)
_NANO = Decimal("1e-9")
_EXPONENT = re.compile(r"\d[eE][+-]?\d+$")
_BINARY_SUFFIXES = ("Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
_DECIMAL_SUFFIXES = {-9: "n", -6: "u", -3: "m", 0: "", 3: "k", 6: "M", 9: "G", 12: "T", 15: "P", 18: "E"}


class QuantityError(ValueError):
    """A string that is not a Kubernetes quantity; the message names the field when one was given."""


def _format_of(text: str) -> str:
    t = text.strip()
    if t.endswith(_BINARY_SUFFIXES):
        return BINARY_SI
    if _EXPONENT.search(t):
        return DECIMAL_EXPONENT
    return DECIMAL_SI


@dataclass(frozen=True, slots=True)
class Quantity:
    """An exact quantity plus the format Kubernetes would print it in.

    Equality, ordering and hashing are semantic (`1Gi == 1024Mi`), as `resource.Quantity.Cmp`.
    """

    value: Decimal
    format: str = DECIMAL_SI

    @classmethod
    def parse(cls, text: Any, field: str | None = None) -> Quantity:
        if isinstance(text, Quantity):
            return text
        if isinstance(text, bool) or not isinstance(text, str | int | float | Decimal):
            raise QuantityError(_where(field) + f'{text!r} is not a quantity (want a string such as "6Gi")')
        raw = str(text)
        try:
            value = _k8s_parse_quantity(raw)
        except (ValueError, decimal.InvalidOperation, TypeError) as exc:
            raise QuantityError(
                _where(field) + f"{raw!r} is not a quantity: {exc}; use a number with an optional suffix "
                "such as 6Gi, 500Mi, 100m or 1e3"
            ) from None
        if not value.is_finite():
            raise QuantityError(_where(field) + f"{raw!r} is not a finite quantity")
        fmt = _format_of(raw) if isinstance(text, str) else DECIMAL_SI
        return cls(_round_up_nano(value), fmt)

    @classmethod
    def from_int(cls, value: int, fmt: str = BINARY_SI) -> Quantity:
        return cls(Decimal(value), fmt)

    def int_value(self) -> int:
        """`Quantity.Value()`: the value rounded up to a whole number."""
        return math.ceil(self.value)

    def __str__(self) -> str:
        return format_quantity(self.value, self.format)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Quantity):
            return self.value == other.value
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.value)

    def __lt__(self, other: Quantity) -> bool:
        return self.value < other.value

    def __le__(self, other: Quantity) -> bool:
        return self.value <= other.value

    def __gt__(self, other: Quantity) -> bool:
        return self.value > other.value

    def __ge__(self, other: Quantity) -> bool:
        return self.value >= other.value

    def __add__(self, other: Quantity) -> Quantity:
        return Quantity(_CTX.add(self.value, other.value), self.format)

    def __sub__(self, other: Quantity) -> Quantity:
        return Quantity(_CTX.subtract(self.value, other.value), self.format)


ZERO = Quantity(Decimal(0), DECIMAL_SI)


def _where(field: str | None) -> str:
    return f"{field}: " if field else ""


def _round_up_nano(value: Decimal) -> Decimal:
    # apimachinery keeps at most nano precision and rounds away from zero.
    if value == value.to_integral_value():
        return value
    return value.quantize(_NANO, rounding=decimal.ROUND_CEILING, context=_CTX)


def parse_quantity(text: Any, field: str | None = None) -> Quantity:
    """Parse a quantity string; errors name `field` and say what a valid value looks like."""
    return Quantity.parse(text, field)


def canonical(text: Any) -> str:
    """The string the API server would store for `text` (`"1024Mi"` -> `"1Gi"`)."""
    return str(Quantity.parse(text))


def format_quantity(value: Decimal, fmt: str = DECIMAL_SI) -> str:
    """Format like `resource.Quantity.String()` (canonical form, largest exact suffix)."""
    value = _round_up_nano(value)
    if value == 0:
        return "0"
    if fmt == BINARY_SI and value == value.to_integral_value() and abs(value) >= 1024:
        n, exp = int(value), 0
        while n % 1024 == 0 and exp < len(_BINARY_SUFFIXES):
            n //= 1024
            exp += 1
        if exp:
            return f"{n}{_BINARY_SUFFIXES[exp - 1]}"
        return str(n)
    if fmt == BINARY_SI and value == value.to_integral_value():
        return str(int(value))
    # Decimal SI (also the fallback for fractional binary values, as upstream does).
    scaled = int(_CTX.multiply(value, Decimal(10) ** 9))  # exact: nano precision
    exp = -9
    while scaled % 1000 == 0 and exp < 18:
        scaled //= 1000
        exp += 3
    if fmt == DECIMAL_EXPONENT:
        return f"{scaled}e{exp}" if exp else str(scaled)
    return f"{scaled}{_DECIMAL_SUFFIXES[exp]}"


# --- DRA capacity maths (allocator-rules.md section 3) ---------------------------------------------


def _policy(capacity: Mapping[str, Any]) -> Mapping[str, Any] | None:
    policy = capacity.get("requestPolicy")
    return policy if isinstance(policy, Mapping) else None


def _opt(obj: Mapping[str, Any] | None, key: str) -> Quantity | None:
    if not obj:
        return None
    raw = obj.get(key)
    return None if raw is None else Quantity.parse(raw)


def round_request(request: Quantity | None, capacity: Mapping[str, Any]) -> Quantity:
    """The amount one request consumes of one device capacity, before the policy check (rules 2-5).

    `request` is the request's `capacity.requests[name]`, or None when the request omits the name.
    """
    policy = _policy(capacity)
    if request is None:
        default = _opt(policy, "default")
        return default if default is not None else Quantity.parse(capacity["value"])
    if policy is None:
        return request
    valid_range = policy.get("validRange")
    if isinstance(valid_range, Mapping) and valid_range.get("min") is not None:
        minimum = Quantity.parse(valid_range["min"])
        if request < minimum:
            return minimum
        step = _opt(valid_range, "step")
        if step is None:
            return request
        req_v, min_v, step_v = request.int_value(), minimum.int_value(), step.int_value()
        if step_v <= 0:
            return request
        n = -(-(req_v - min_v) // step_v)  # ceil division on whole units, as upstream
        return Quantity.from_int(min_v + n * step_v, BINARY_SI)
    valid_values = policy.get("validValues")
    if valid_values:
        for candidate in sorted(Quantity.parse(v) for v in valid_values):
            if candidate >= request:
                return candidate
        return request
    return request


def violates_policy(value: Quantity, capacity: Mapping[str, Any]) -> bool:
    """`violatesPolicy` (rule 6): may a device hand out `value` of this capacity?"""
    policy = _policy(capacity)
    if policy is None:
        return False
    default = _opt(policy, "default")
    if default is not None and value == default:
        return False
    valid_range = policy.get("validRange")
    if isinstance(valid_range, Mapping) and valid_range.get("min") is not None:
        maximum = _opt(valid_range, "max")
        if maximum is not None and value > maximum:
            return True
        step = _opt(valid_range, "step")
        if step is not None and step.int_value() > 0:
            minimum = Quantity.parse(valid_range["min"])
            return (value.int_value() - minimum.int_value()) % step.int_value() != 0
        return False
    valid_values = policy.get("validValues")
    if valid_values:
        return all(value != Quantity.parse(v) for v in valid_values)
    return False


class MissingCapacity(LookupError):
    """The request names a capacity the device does not declare (rule 1: the device is ineligible)."""


def consumed_capacity(
    requests: Mapping[str, Any] | None, device_capacity: Mapping[str, Mapping[str, Any]]
) -> dict[str, Quantity] | None:
    """What one request takes from every capacity of one device (rules 1-6).

    Returns None when the device is ineligible (policy violation); raises MissingCapacity when the
    request names a capacity the device lacks. `requests` keys must already be normalised to the
    device's own capacity keys (see `capacity_key`).
    """
    requests = requests or {}
    for name in requests:
        if name not in device_capacity:
            raise MissingCapacity(name)
    consumed: dict[str, Quantity] = {}
    for name, cap in device_capacity.items():
        raw = requests.get(name)
        value = round_request(None if raw is None else Quantity.parse(raw), cap)
        if violates_policy(value, cap):
            return None
        consumed[name] = value
    return consumed


def fits(
    consumed: Mapping[str, Quantity],
    device_capacity: Mapping[str, Mapping[str, Any]],
    already: Iterable[Mapping[str, Quantity]] = (),
) -> bool:
    """Rule 7: does `consumed` fit on top of every consumption in `already`, for every capacity?"""
    totals: dict[str, Decimal] = {}
    for used in already:
        for name, q in used.items():
            totals[name] = _CTX.add(totals.get(name, Decimal(0)), q.value)
    for name, cap in device_capacity.items():
        need = consumed.get(name)
        if need is None:
            continue
        total = _CTX.add(totals.get(name, Decimal(0)), need.value)
        if total > Quantity.parse(cap["value"]).value:
            return False
    return True


def sharers_that_fit(
    consumed: Mapping[str, Quantity],
    device_capacity: Mapping[str, Mapping[str, Any]],
    already: Iterable[Mapping[str, Quantity]] = (),
) -> dict[str, int | None]:
    """How many more claims that each consume `consumed` fit next to `already`, per capacity.

    A capacity the claim takes nothing of does not bound the count (None). Rule 7 applied k times:
    k = floor(remaining / consumed) for every capacity, and the device fits the minimum of them.
    """
    left = remaining(device_capacity, already)
    out: dict[str, int | None] = {}
    for name in device_capacity:
        need = consumed.get(name)
        if need is None or need.value <= 0:
            out[name] = None
            continue
        free = left[name].value
        out[name] = 0 if free <= 0 else int(_CTX.divide_int(free, need.value))
    return out


def remaining(
    device_capacity: Mapping[str, Mapping[str, Any]], already: Iterable[Mapping[str, Quantity]] = ()
) -> dict[str, Quantity]:
    """What is left of each capacity after `already` (may be negative if a device shrank)."""
    left = {name: Quantity.parse(cap["value"]) for name, cap in device_capacity.items()}
    for used in already:
        for name, q in used.items():
            if name in left:
                left[name] = left[name] - q
    return left


def capacity_key(name: str, driver: str) -> str:
    """Normalise a capacity or attribute name to how the device stores it.

    Unqualified names belong to the driver's domain, so `<driver>/memory` and `memory` are the same.
    """
    prefix = driver + "/"
    return name[len(prefix) :] if name.startswith(prefix) else name


def to_json(consumed: Mapping[str, Quantity]) -> dict[str, str]:
    return {name: str(q) for name, q in consumed.items()}


def parse_bytes(value: str | int, what: str) -> int:
    """Parse `value` (e.g. "24Gi", "1Mi", 4096) into an integer number of bytes; errors name `what`.
    GPU memory is whole, non-negative bytes, a stricter rule than a quantity's."""
    q = parse_quantity(value, field=what)
    if q.value != q.value.to_integral_value():
        raise QuantityError(f"{what}: {value!r} is not a whole number of bytes")
    if q.value < 0:
        raise QuantityError(f"{what}: {value!r} must not be negative")
    return int(q.value)


def format_bytes(n: int) -> str:
    """Bytes as Kubernetes prints a BinarySI quantity: 25769803776 -> "24Gi", 17175674880 -> "16380Mi"."""
    return format_quantity(Decimal(n), BINARY_SI)
