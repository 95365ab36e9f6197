"""drakit/quantity.py: parsing and formatting like apimachinery, DRA rounding and policy checks."""

from __future__ import annotations

import pytest

from drakit.quantity import (
    MissingCapacity,
    Quantity,
    QuantityError,
    canonical,
    capacity_key,
    consumed_capacity,
    fits,
    parse_quantity,
    remaining,
    round_request,
    to_json,
    violates_policy,
)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("6Gi", "6Gi"),
        ("1024Mi", "1Gi"),
        ("1536Mi", "1536Mi"),
        ("1.5Gi", "1536Mi"),
        ("1536", "1536"),
        ("1500000", "1500k"),
        ("0.1", "100m"),
        ("100m", "100m"),
        ("1e3", "1e3"),
        ("1E", "1E"),
        ("0", "0"),
        ("10G", "10G"),
        ("0.5Ki", "512"),
    ],
)
def test_canonical_form_matches_kubernetes(text: str, want: str) -> None:
    assert canonical(text) == want


def test_semantic_equality_and_ordering() -> None:
    assert parse_quantity("1Gi") == parse_quantity("1024Mi")
    assert parse_quantity("1G") < parse_quantity("1Gi")
    assert parse_quantity("2Gi") - parse_quantity("512Mi") == parse_quantity("1536Mi")
    assert parse_quantity("100m").int_value() == 1  # Value() rounds up


def test_bad_quantity_names_field_and_fix() -> None:
    with pytest.raises(QuantityError) as err:
        parse_quantity("6GB", field="spec.devices.requests[0].exactly.capacity.requests.memory")
    assert str(err.value).startswith("spec.devices.requests[0].exactly.capacity.requests.memory: '6GB'")
    assert "6Gi" in str(err.value)


RANGE = {
    "value": "8Gi",
    "requestPolicy": {"default": "2Gi", "validRange": {"min": "2Gi", "step": "2Gi", "max": "8Gi"}},
}


@pytest.mark.parametrize(
    ("capacity", "asked", "consumed", "violates"),
    [  # allocator-rules.md section 3, rounding examples table
        ({"value": "16Gi"}, "3Gi", "3Gi", False),
        ({"value": "16Gi"}, None, "16Gi", False),
        (RANGE, None, "2Gi", False),
        (RANGE, "1Gi", "2Gi", False),
        (RANGE, "3Gi", "4Gi", False),
        (RANGE, "8Gi", "8Gi", False),
        (RANGE, "9Gi", "10Gi", True),
        (
            {"value": "8Gi", "requestPolicy": {"default": "1Gi", "validRange": {"min": "1Gi", "max": "8Gi"}}},
            "3500Mi",
            "3500Mi",
            False,
        ),
        ({"value": "4", "requestPolicy": {"default": "1", "validValues": ["1", "3"]}}, "2", "3", False),
        ({"value": "4", "requestPolicy": {"default": "1", "validValues": ["1", "2"]}}, "3", "3", True),
        ({"value": "4", "requestPolicy": {"default": "0", "validValues": ["0"]}}, None, "0", False),
        ({"value": "4", "requestPolicy": {"default": "0", "validValues": ["0"]}}, "1", "1", True),
    ],
)
def test_rounding_table(capacity: dict, asked: str | None, consumed: str, violates: bool) -> None:
    got = round_request(None if asked is None else parse_quantity(asked), capacity)
    assert got == parse_quantity(consumed)
    assert violates_policy(got, capacity) is violates


def test_consumed_capacity_covers_every_capacity_and_missing_names_raise() -> None:
    caps = {"memory": {"value": "24Gi"}, "compute": {"value": "100"}}
    assert to_json(consumed_capacity({"memory": "6Gi"}, caps)) == {"memory": "6Gi", "compute": "100"}
    with pytest.raises(MissingCapacity):
        consumed_capacity({"bandwidth": "1"}, caps)
    assert consumed_capacity({"memory": "9Gi"}, {"memory": RANGE}) is None


def test_fit_allows_equality_and_counts_everything_already_used() -> None:
    caps = {"memory": {"value": "24Gi"}}
    used = [{"memory": Quantity.parse("6Gi")}] * 3
    assert fits({"memory": Quantity.parse("6Gi")}, caps, used)
    assert not fits({"memory": Quantity.parse("6Gi") + Quantity.parse("1")}, caps, used)
    assert remaining(caps, used)["memory"] == parse_quantity("6Gi")


def test_unqualified_capacity_names_belong_to_the_driver() -> None:
    assert capacity_key("gpu.example.com/memory", "gpu.example.com") == "memory"
    assert capacity_key("memory", "gpu.example.com") == "memory"
    assert capacity_key("other.io/memory", "gpu.example.com") == "other.io/memory"
