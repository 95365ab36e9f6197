"""The capacity model: what a request consumes on a published device, and how many sharers fit.

Expectations in the scenarios come from here and from what the driver published (value and
requestPolicy), never from hard-coded sizes: 6Gi on a 24Gi card giving 4 sharers is a consequence.
The maths itself lives in ``drakit.quantity`` (the one home for quantity and capacity maths); this
module adapts a published device to it. A device may publish several consumable capacities (memory and
compute, say): ``DeviceCapacities`` covers all of them, because a request consumes from every one,
asked for or not, and the capacity that runs out first decides how many sharers fit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from drakit import quantity as q


def parse(value: Any) -> int:
    """Whole-unit value of a quantity (bytes for memory), rounded up like Quantity.Value()."""
    return value if isinstance(value, int) else q.parse_quantity(value).int_value()


def format_bytes(value: int) -> str:
    """As Kubernetes prints it (6442450944 -> 6Gi)."""
    return str(q.Quantity.from_int(value))


# How a sharer asks for one capacity (the profile's shareRequests values, besides fixed quantities).
SHARE = "share"  # the plan's share of this capacity (value / parts, on the policy grid)
PROPORTIONAL = "proportional"  # the same fraction of this capacity as the sharer asks of the shared one
Requests = dict[str, int]  # capacity key (as the device publishes it) -> whole units


@dataclass(frozen=True)
class Policy:
    default: int | None = None
    valid_values: tuple[int, ...] = ()
    min: int | None = None
    max: int | None = None
    step: int | None = None

    @property
    def kind(self) -> str:
        if self.valid_values:
            return "values"
        if self.min is not None:
            return "range"
        return "default-only"


@dataclass(frozen=True)
class Capacity:
    """One capacity of one published device (e.g. memory of gpu-0)."""

    name: str
    value: int
    policy: Policy | None
    raw: dict[str, Any]

    @classmethod
    def from_published(cls, name: str, published: dict[str, Any]) -> Capacity:
        value = parse(published["value"])
        rp = published.get("requestPolicy")
        policy = None
        if rp:
            rng = rp.get("validRange") or {}
            policy = Policy(
                default=parse(rp["default"]) if rp.get("default") is not None else None,
                valid_values=tuple(parse(v) for v in rp.get("validValues") or ()),
                min=parse(rng["min"]) if rng.get("min") is not None else None,
                max=parse(rng["max"]) if rng.get("max") is not None else None,
                step=parse(rng["step"]) if rng.get("step") is not None else None,
            )
        return cls(name=name, value=value, policy=policy, raw=published)

    def consumes(self, request: int | None) -> int | None:
        """Amount consumed by a request (None = no entry for this capacity); None when the policy
        forbids the amount, so the device is ineligible for that request."""
        amount = q.round_request(None if request is None else q.Quantity.from_int(request), self.raw)
        if q.violates_policy(amount, self.raw):
            return None
        return amount.int_value()

    def sharers_that_fit(self, request: int | None, used: int = 0) -> int:
        """k = floor(free / consumed(request)); 0 when the request is not allowed at all."""
        amount = self.consumes(request)
        if amount is None or amount > self.value - used:
            return 0
        if amount == 0:
            raise ValueError(f"a request of {request} consumes nothing on {self.name}; sharers are unbounded")
        return (self.value - used) // amount

    def policy_problems(self) -> list[str]:
        """Why the published requestPolicy is invalid (empty when valid), per the API rules."""
        p = self.policy
        if p is None:
            return []
        problems: list[str] = []
        if p.valid_values and p.min is not None:
            problems.append("both validValues and validRange are set (exactly one policy may be)")
        if (p.valid_values or p.min is not None) and p.default is None:
            problems.append("default is missing while a policy is set")
        if p.valid_values:
            if list(p.valid_values) != sorted(set(p.valid_values)):
                problems.append("validValues are not unique and ascending")
            if any(v > self.value for v in p.valid_values):
                problems.append("a validValue exceeds the capacity value")
            if p.default is not None and p.default not in p.valid_values:
                problems.append("default is not one of validValues")
        if p.min is not None:
            top = p.max if p.max is not None else self.value
            if p.min > self.value:
                problems.append("min exceeds the capacity value")
            if p.max is not None and not p.min <= p.max <= self.value:
                problems.append("max is not within [min, value]")
            if p.default is not None and not p.min <= p.default <= top:
                problems.append("default is not within [min, max]")
            if p.step:
                if p.min + p.step > self.value:
                    problems.append("min + step exceeds the capacity value")
                for label, amount in (("default", p.default), ("max", p.max)):
                    if amount is not None and (amount - p.min) % p.step:
                        problems.append(f"{label} is not min + n*step")
        return problems

    def largest_request(self) -> int:
        """The largest amount a single request may ask for under the policy."""
        p = self.policy
        if p is None:
            return self.value
        if p.valid_values:
            return max(p.valid_values)
        if p.max is not None:
            return p.max
        if p.min is not None and p.step:
            return p.min + (self.value - p.min) // p.step * p.step
        return self.value

    def share_size(self, parts: int = 4) -> int:
        """A request size that packs about ``parts`` sharers onto an idle device: value/parts,
        moved onto the policy grid so it consumes exactly what it asks (24Gi -> 6Gi)."""
        return self.on_grid(self.value // parts)

    def on_grid(self, target: int) -> int:
        """The largest amount at most ``target`` that the policy hands out as asked (so the request
        consumes exactly what it asks); the smallest allowed amount when ``target`` is below it."""
        target = min(target, self.largest_request())
        p = self.policy
        if p is None:
            return target
        if p.valid_values:
            fitting = [v for v in p.valid_values if 0 < v <= target]
            return max(fitting) if fitting else min(p.valid_values)
        if p.min is not None:
            if target <= p.min:
                return p.min
            if p.step:
                return p.min + (target - p.min) // p.step * p.step
        return target

    def format(self, amount: int) -> str:
        """``amount`` written the way this capacity is published (80Gi is BinarySI, 100 DecimalSI)."""
        fmt = q.parse_quantity(self.raw["value"]).format if "value" in self.raw else q.BINARY_SI
        return str(q.Quantity.from_int(amount, fmt))

    def default_consumption(self) -> int:
        """What a request that does not name this capacity consumes: the default, else everything."""
        amount = self.consumes(None)
        return self.value if amount is None else amount

    def describe(self) -> str:
        """One line for the report: value and requestPolicy (``24Gi, default 24Gi, range 1Mi..24Gi
        step 1Mi``)."""
        p, f = self.policy, self.format
        if p is None:
            return f"{f(self.value)}, no requestPolicy (a request takes what it asks; no request takes all)"
        parts = [f(self.value), f"default {f(p.default)}" if p.default is not None else "no default"]
        if p.valid_values:
            parts.append("validValues " + ", ".join(f(v) for v in p.valid_values))
        elif p.min is not None:
            rng = f"range {f(p.min)}..{f(p.max) if p.max is not None else f(self.value)}"
            parts.append(rng + (f" step {f(p.step)}" if p.step else ""))
        return ", ".join(parts)


def device_capacity(device: dict[str, Any], name: str) -> Capacity | None:
    """The named capacity of a published device (``spec.devices[]`` entry), or None."""
    published = (device.get("capacity") or {}).get(name)
    return Capacity.from_published(name, published) if published else None


@dataclass(frozen=True)
class DeviceCapacities:
    """Every consumable capacity one published device has, keyed as the device publishes them."""

    capacities: dict[str, Capacity] = field(default_factory=dict)

    @classmethod
    def from_device(cls, device: dict[str, Any], driver: str) -> DeviceCapacities:
        caps = {}
        for name, published in (device.get("capacity") or {}).items():
            if isinstance(published, dict) and published.get("value") is not None:
                key = q.capacity_key(name, driver)
                caps[key] = Capacity.from_published(key, published)
        return cls(caps)

    def __contains__(self, name: object) -> bool:
        return name in self.capacities

    def __getitem__(self, name: str) -> Capacity:
        return self.capacities[name]

    def names(self) -> list[str]:
        return sorted(self.capacities)

    def _published(self) -> dict[str, dict[str, Any]]:
        return {name: c.raw for name, c in self.capacities.items()}

    def consumes(self, requests: Mapping[str, int] | None) -> Requests | None:
        """What a request consumes of every capacity (asked for, defaulted or rounded by each
        policy); None when a policy forbids an amount or the request names a capacity the device
        lacks, so the device is ineligible for it."""
        asked = {k: q.Quantity.from_int(v) for k, v in (requests or {}).items()}
        try:
            consumed = q.consumed_capacity(asked, self._published())
        except q.MissingCapacity:
            return None
        return None if consumed is None else {k: v.int_value() for k, v in consumed.items()}

    def remaining(self, used: Iterable[Mapping[str, int]] = ()) -> Requests:
        left = q.remaining(self._published(), [_quantities(u) for u in used])
        return {k: v.int_value() for k, v in left.items()}

    def fit_per_capacity(
        self, requests: Mapping[str, int] | None, used: Iterable[Mapping[str, int]] = ()
    ) -> dict[str, int | None]:
        """Sharers of ``requests`` that each capacity leaves room for (None: it does not bound them);
        every capacity 0 when the request is not allowed at all."""
        consumed = self.consumes(requests)
        if consumed is None:
            return dict.fromkeys(self.capacities, 0)
        return q.sharers_that_fit(_quantities(consumed), self._published(), [_quantities(u) for u in used])

    def sharers_that_fit(
        self, requests: Mapping[str, int] | None, used: Iterable[Mapping[str, int]] = ()
    ) -> int:
        """k = min over capacities of floor(free / consumed); 0 when the request is not allowed."""
        bounds = [k for k in self.fit_per_capacity(requests, used).values() if k is not None]
        if not bounds:
            raise ValueError(
                f"a request of {requests} consumes nothing on this device; sharers are unbounded"
            )
        return min(bounds)


def _quantities(amounts: Mapping[str, int]) -> dict[str, q.Quantity]:
    return {k: q.Quantity.from_int(v) for k, v in amounts.items()}


def sharer_requests(
    caps: DeviceCapacities,
    primary: str,
    declared: Mapping[str, str],
    *,
    parts: int | None = None,
    amount: int | None = None,
) -> Requests:
    """The request vector of one sharer, as the profile declares a sharer asks (``shareRequests``).

    ``primary`` is the shared capacity (the profile's ``capacity``). The scenario either wants a
    1/``parts`` share of the device or names the amount of the shared capacity (``amount``: an off-step
    or oversized request). Per declared capacity: ``share`` is that share of it (for the shared
    capacity, ``amount`` when given), ``proportional`` the same fraction of it as the sharer asks of
    the shared capacity (never above what one request may take), and a quantity is asked as it is.
    Capacities not declared get no request: the device's policy default applies to them.
    """
    if (parts is None) == (amount is None):
        raise ValueError("give exactly one of parts and amount")
    base = caps[primary]
    how = declared.get(primary, SHARE)
    if amount is None:
        assert parts is not None
        amount = base.share_size(parts) if how in (SHARE, PROPORTIONAL) else parse(how)
    out: Requests = {primary: amount}
    for name, how in declared.items():
        if name == primary or name not in caps:
            continue
        cap = caps[name]
        if how == SHARE and parts is not None:
            out[name] = cap.share_size(parts)
        elif how in (SHARE, PROPORTIONAL):
            out[name] = cap.on_grid(amount * cap.value // base.value) if base.value else cap.value
        else:
            out[name] = parse(how)
    return out


@dataclass(frozen=True)
class SharePlan:
    """How a scenario shares one device: the request vector of each sharer and how many fit."""

    requests: Requests
    sharers: int  # k from every capacity
    by_primary: int  # k if only the shared capacity counted
    limits: dict[str, int | None]  # k per capacity (None: not bounded by it)

    def defaulted_blockers(self, want: int = 2) -> list[str]:
        """Capacities the sharer does not ask for that keep fewer than ``want`` sharers on the device
        although the shared capacity has room for them: their default takes (nearly) the device."""
        if self.sharers >= want or self.by_primary < want:
            return []
        return sorted(
            n for n, k in self.limits.items() if n not in self.requests and k is not None and k < want
        )


def share_plan(
    caps: DeviceCapacities, primary: str, declared: Mapping[str, str], parts: int = 4
) -> SharePlan:
    requests = sharer_requests(caps, primary, declared, parts=parts)
    limits = caps.fit_per_capacity(requests)
    by_primary = caps[primary].sharers_that_fit(requests[primary])
    bounds = [k for k in limits.values() if k is not None]
    return SharePlan(requests, min(bounds) if bounds else by_primary, by_primary, limits)


def consumed_mismatch(
    expected: Mapping[str, int], got: Mapping[str, int], caps: DeviceCapacities
) -> list[str]:
    """Every capacity whose consumedCapacity differs from the model, in words (empty: all match)."""

    def show(name: str, amount: int | None) -> str:
        if amount is None:
            return "absent"
        return caps[name].format(amount) if name in caps else str(amount)

    return [
        f"{name}={show(name, got.get(name))} (the published policy says {show(name, expected.get(name))})"
        for name in sorted(set(expected) | set(got))
        if expected.get(name) != got.get(name)
    ]
