"""publish: the driver publishes each GPU once, shareable, with memory and a valid requestPolicy."""

from __future__ import annotations

from collections import Counter

import pytest

from conformance.capacity import format_bytes
from conformance.session import Suite

pytestmark = pytest.mark.publish


def test_consumable_capacity_fields_survive_in_the_api_server(suite: Suite) -> None:
    pf = suite.preflight
    assert pf.gate_on is not False, pf.gate_detail
    if pf.gate_on is None:
        pytest.skip(f"could not probe the DRAConsumableCapacity gate: {pf.gate_detail}")


def test_every_node_publishes_its_gpus(suite: Suite) -> None:
    missing = suite.preflight.nodes_without_slices
    assert not missing, (
        f"no ResourceSlice of driver {suite.profile.driver} with devices on node(s) "
        f"{', '.join(missing)}; check the driver's logs on those nodes"
    )


def test_each_gpu_appears_once_with_identity_and_product(suite: Suite) -> None:
    gpus = suite.preflight.gpus
    assert gpus, f"driver {suite.profile.driver} published no devices"
    no_id = [g.device for g in gpus if not g.identity]
    assert not no_id, f"devices without the identity attribute {suite.profile.identity_attribute!r}: {no_id}"
    no_product = [g.device for g in gpus if not g.product]
    assert not no_product, (
        f"devices without the product attribute {suite.profile.product_attribute!r}: {no_product}"
    )
    twice = [ident for ident, n in Counter(g.identity for g in gpus).items() if n > 1]
    assert not twice, f"GPUs published more than once (same {suite.profile.identity_attribute}): {twice}"


def test_gpus_are_shareable_with_memory_capacity(suite: Suite) -> None:
    pf = suite.preflight
    assert pf.gate_on is not False, pf.gate_detail
    gpus = pf.gpus
    assert gpus, f"driver {suite.profile.driver} published no devices"
    if suite.profile.sharing:
        exclusive = [g.label for g in gpus if not g.shareable]
        assert not exclusive, (
            "devices without allowMultipleAllocations: true although the profile says the "
            f"driver shares GPUs: {', '.join(exclusive)}"
        )
    no_cap = [g.label for g in gpus if g.capacity is None or g.capacity.value <= 0]
    assert not no_cap, f"devices without a positive {suite.profile.capacity!r} capacity: {', '.join(no_cap)}"


def test_request_policy_is_valid_and_as_claimed(suite: Suite) -> None:
    claimed = suite.profile.request_policy
    problems = []
    for g in suite.preflight.gpus:
        # Every consumable capacity's policy counts: a request consumes from each, asked for or not.
        for name in g.capacities.names():
            if name != suite.profile.shared_capacity:
                problems += [f"{g.label}: {name}: {p}" for p in g.capacities[name].policy_problems()]
        if g.capacity is None:
            continue
        for p in g.capacity.policy_problems():
            problems.append(f"{g.label}: {p}")
        kind = g.capacity.policy.kind if g.capacity.policy else "none"
        if claimed != "any" and kind != claimed and not (claimed == "none" and kind == "default-only"):
            problems.append(f"{g.label}: requestPolicy is {kind!r}, the profile says {claimed!r}")
    assert not problems, "; ".join(problems)


def test_published_memory_matches_the_gpu(suite: Suite) -> None:
    memories = [(g, suite.real_memory(g)) for g in suite.preflight.gpus if g.capacity is not None]
    known = [(g, m) for g, m in memories if m is not None]
    if not known:
        pytest.skip("the GPUs' real memory is not known to the suite (no mock GPU profile for these models)")
    wrong = [
        f"{g.label} publishes {format_bytes(g.capacity.value)} but has {format_bytes(m)}"
        for g, m in known
        if g.capacity is not None and g.capacity.value != m
    ]
    assert not wrong, "; ".join(wrong)
