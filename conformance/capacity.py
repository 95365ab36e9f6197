"""The capacity model: what a request consumes on a published device, and how many sharers fit.

Expectations in the scenarios come from here and from what the driver published (value and
requestPolicy), never from hard-coded sizes: 6Gi on a 24Gi card giving 4 sharers is a consequence.
The maths itself lives in ``sim.quantity`` (the one home for quantity and capacity maths); this
module adapts a published device to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sim import quantity as q


def parse(value: Any) -> int:
    """Whole-unit value of a quantity (bytes for memory), rounded up like Quantity.Value()."""
    return value if isinstance(value, int) else q.parse_quantity(value).int_value()


def format_bytes(value: int) -> str:
    """As Kubernetes prints it (6442450944 -> 6Gi)."""
    return str(q.Quantity.from_int(value))


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
        target = self.value // parts
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


def device_capacity(device: dict[str, Any], name: str) -> Capacity | None:
    """The named capacity of a published device (``spec.devices[]`` entry), or None."""
    published = (device.get("capacity") or {}).get(name)
    return Capacity.from_published(name, published) if published else None
