"""The allocator's caches across calls (issue 13, speed): keyed by device content, never by identity.

Selector outcomes and decoded `device` variables are shared by every call in the process, and what a
request takes of a device is shared by capacity content. A slice republished with other attributes or
capacity must be judged again, even when its name, uid and resourceVersion stay the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sim import cel
from sim.allocator import (
    CANNOT_ALLOCATE,
    NO_SUCH_KEY_HINT,
    AllocatorError,
    Features,
    Outcome,
    SelectorCache,
    allocate,
    clear_shared_cache,
)
from sim.allocator_state import AllocatedState
from tests.support.allocator_builders import DRIVER, claim, device, device_class, exactly, node, slice_

MODEL_A = f'device.attributes["{DRIVER}"].model == "a"'
# One cache for every call of a test, as the sim's scheduler keeps one for its lifetime.
CACHE = SelectorCache()


@pytest.fixture(autouse=True)
def _fresh_shared_cache() -> Iterator[None]:
    clear_shared_cache()
    yield
    clear_shared_cache()


def _slice(dev: dict[str, Any]) -> dict[str, Any]:
    s = slice_("node-1-gpus", [dev])
    # The same identity on every publication: only the content tells the versions apart.
    s["metadata"].update(uid="uid-1", resourceVersion="7")
    return s


def _run(
    dev: dict[str, Any],
    request: dict[str, Any] | None = None,
    selectors: list[str] | None = None,
    features: Features | None = None,
    cache: SelectorCache | None = None,
) -> Outcome:
    c = claim("a", ("gpu", request or exactly()))
    classes = {DRIVER: device_class(selectors=selectors)}
    return allocate(
        [c],
        node(),
        [_slice(dev)],
        classes,
        AllocatedState(),
        features or Features(),
        cache or CACHE,
    )


def _model(value: Any) -> dict[str, Any]:
    return device("gpu-0", attrs={"model": value})


def test_a_device_republished_with_other_attributes_is_evaluated_again() -> None:
    assert _run(_model({"string": "a"}), selectors=[MODEL_A]).ok
    outcome = _run(_model({"string": "b"}), selectors=[MODEL_A])
    assert outcome.reason == CANNOT_ALLOCATE
    assert _run(_model({"string": "a"}), selectors=[MODEL_A]).ok


def test_a_device_republished_with_less_capacity_is_measured_again() -> None:
    request = exactly(memory="6Gi")
    assert _run(device("gpu-0", memory="24Gi"), request).ok
    assert _run(device("gpu-0", memory="4Gi"), request).reason == CANNOT_ALLOCATE


def _consumed(outcome: Outcome) -> str:
    assert outcome.allocations is not None
    return outcome.allocations[0]["devices"]["results"][0]["consumedCapacity"]["memory"]


def test_a_device_republished_with_another_request_policy_rounds_anew() -> None:
    request = exactly(memory="1Gi")
    steps = {"default": "4Gi", "validRange": {"min": "4Gi", "step": "4Gi", "max": "24Gi"}}
    assert _consumed(_run(device("gpu-0", policy=steps), request)) == "4Gi"
    assert _consumed(_run(device("gpu-0"), request)) == "1Gi"


def test_a_runtime_error_surfaces_the_same_way_on_every_call() -> None:
    selector = f'device.attributes["{DRIVER}"].missing == "x"'
    texts = []
    for _ in range(2):
        with pytest.raises(AllocatorError) as err:
            _run(device("gpu-0"), selectors=[selector])
        texts.append(str(err.value))
    assert texts[0] == texts[1]
    assert texts[0].startswith(
        f"class {DRIVER}: selector #0 on device {DRIVER}/node-1/gpu-0: "
        "CEL runtime error: no such key: missing"
    )
    assert texts[0].endswith(NO_SUCH_KEY_HINT)


def test_a_runtime_cost_error_is_not_forgotten_nor_kept_after_the_device_changes() -> None:
    # Cost grows with the list attribute's length: long, the budget runs out; short, it matches.
    selector = (
        f'device.attributes["{DRIVER}"].ids.all(x, device.attributes["{DRIVER}"].ids.all(y, x + y >= 0))'
    )
    long_ids = {"ints": list(range(2000))}
    for _ in range(2):
        with pytest.raises(
            AllocatorError, match="CEL runtime error: operation cancelled: actual cost limit exceeded"
        ):
            _run(device("gpu-0", attrs={"ids": long_ids}), selectors=[selector])
    assert _run(device("gpu-0", attrs={"ids": {"ints": [1, 2]}}), selectors=[selector]).ok


def _decision(dev: dict[str, Any], selectors: list[str]) -> str:
    try:
        outcome = _run(dev, selectors=selectors)
    except AllocatorError as exc:
        return f"fatal: {exc}"
    return "allocated" if outcome.ok else outcome.reason


@pytest.mark.parametrize(
    "other",
    [
        pytest.param({"int": 1.0}, id="float-for-int"),
        pytest.param({"int": True}, id="bool-for-int"),
        pytest.param({"string": "1"}, id="string"),
    ],
)
def test_values_equal_in_python_but_not_in_json_are_different_devices(other: dict[str, Any]) -> None:
    selector = f'device.attributes["{DRIVER}"].model == 1'
    assert _decision(_model({"int": 1}), [selector]) == "allocated"
    # 1 == 1.0 == True in Python, but the device variable differs: a decode error or another type.
    assert _decision(_model(other), [selector]) != "allocated"


def test_a_device_that_could_not_be_decoded_is_decoded_again_once_fixed() -> None:
    with pytest.raises(
        AllocatorError, match="CEL runtime error: attribute weird: unsupported attribute value"
    ):
        _run(device("gpu-0", attrs={"weird": {}}), selectors=[MODEL_A])
    assert _run(
        device("gpu-0", attrs={"weird": {"int": 3}, "model": {"string": "a"}}), selectors=[MODEL_A]
    ).ok


def test_the_consumable_capacity_gate_changes_the_device_variable() -> None:
    shared_only = ["device.allowMultipleAllocations == true"]
    assert _run(device("gpu-0"), selectors=shared_only).ok
    # With the gate off the API server dropped the field: the selector sees false.
    off = _run(device("gpu-0"), selectors=shared_only, features=Features(consumable_capacity=False))
    assert off.reason == CANNOT_ALLOCATE


def _count_evaluations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = cel.Program.matches

    def counting(self: cel.Program, device: cel.DeviceInput) -> bool:
        seen.append(self.expression)
        return real(self, device)

    monkeypatch.setattr(cel.Program, "matches", counting)
    return seen


def test_an_unchanged_device_is_evaluated_once_across_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _count_evaluations(monkeypatch)
    for _ in range(3):
        assert _run(_model({"string": "a"}), selectors=[MODEL_A]).ok
    assert seen == [MODEL_A]


def test_a_private_cache_evaluates_again_on_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _count_evaluations(monkeypatch)
    for _ in range(3):
        assert _run(_model({"string": "a"}), selectors=[MODEL_A], cache=SelectorCache(shared=False)).ok
    assert seen == [MODEL_A] * 3
