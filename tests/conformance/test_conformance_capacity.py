"""The capacity model: expectations follow what a device published, never hard-coded sizes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from conformance.capacity import Capacity, format_bytes, parse

GI, MI = 1 << 30, 1 << 20


def cap(value: str, policy: dict | None = None) -> Capacity:
    published: dict = {"value": value}
    if policy:
        published["requestPolicy"] = policy
    return Capacity.from_published("memory", published)


REFERENCE_24G = {"default": "24Gi", "validRange": {"min": "1Mi", "max": "24Gi", "step": "1Mi"}}


def test_six_gi_on_a_24gi_card_gives_four_sharers() -> None:
    c = cap("24Gi", REFERENCE_24G)
    r = c.share_size(4)
    assert format_bytes(r) == "6Gi"
    assert c.sharers_that_fit(r) == 4
    assert c.sharers_that_fit(parse("6Gi"), used=parse("6Gi")) == 3


def test_sharer_count_follows_the_card_not_a_constant() -> None:
    assert (
        cap("12Gi", {"default": "12Gi", "validRange": {"min": "1Mi", "step": "1Mi"}}).sharers_that_fit(
            parse("6Gi")
        )
        == 2
    )
    odd = cap(str(16380 * MI))
    assert odd.sharers_that_fit(odd.share_size(4)) == 4


def test_no_capacity_request_consumes_default_or_everything() -> None:
    assert cap("24Gi", REFERENCE_24G).consumes(None) == 24 * GI
    assert cap("24Gi").consumes(None) == 24 * GI
    assert cap("24Gi", {"default": "1Gi", "validRange": {"min": "1Gi", "step": "1Gi"}}).consumes(None) == GI


def test_off_step_request_rounds_up_to_the_step() -> None:
    c = cap("24Gi", {"default": "24Gi", "validRange": {"min": "1Gi", "step": "1Gi"}})
    assert c.consumes(5 * GI + 1) == 6 * GI
    assert c.consumes(MI) == GI  # below min -> min


def test_request_above_max_is_not_allowed() -> None:
    c = cap("24Gi", {"default": "8Gi", "validRange": {"min": "1Gi", "max": "16Gi", "step": "1Gi"}})
    assert c.consumes(17 * GI) is None
    assert c.largest_request() == 16 * GI


def test_valid_values_round_to_the_next_value() -> None:
    c = cap("24Gi", {"default": "24Gi", "validValues": ["6Gi", "12Gi", "24Gi"]})
    assert c.consumes(7 * GI) == 12 * GI
    assert c.consumes(25 * GI) is None
    assert c.share_size(4) == 6 * GI


def test_invalid_published_policies_are_diagnosed() -> None:
    assert cap("24Gi", REFERENCE_24G).policy_problems() == []
    assert (
        "max is not within [min, value]"
        in cap("24Gi", {"default": "1Gi", "validRange": {"min": "1Gi", "max": "48Gi"}}).policy_problems()
    )
    assert (
        "default is not min + n*step"
        in cap("24Gi", {"default": "1500Mi", "validRange": {"min": "1Gi", "step": "1Gi"}}).policy_problems()
    )
    assert (
        "default is not one of validValues"
        in cap("24Gi", {"default": "5Gi", "validValues": ["6Gi"]}).policy_problems()
    )


@given(
    value_mi=st.integers(min_value=64, max_value=200_000),
    parts=st.integers(min_value=1, max_value=16),
    step_mi=st.sampled_from([1, 2, 64, 1024]),
)
def test_k_sharers_fit_and_one_more_does_not(value_mi: int, parts: int, step_mi: int) -> None:
    c = cap(
        f"{value_mi}Mi",
        {
            "default": f"{value_mi // step_mi * step_mi}Mi",
            "validRange": {"min": f"{step_mi}Mi", "step": f"{step_mi}Mi"},
        },
    )
    if step_mi * 2 > value_mi:
        return
    r = c.share_size(parts)
    k = c.sharers_that_fit(r)
    used = c.consumes(r)
    assert used is not None and used >= r
    assert k * used <= c.value < (k + 1) * used
