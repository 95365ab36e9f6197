"""sim/cel.py: the DRA device-selector CEL environment."""

from __future__ import annotations

import pytest

from sim.cel import CelCompileError, CelRuntimeError, compile_selector, device_variable

DRIVER = "gpu.example.com"
GPU = device_variable(
    DRIVER,
    {
        "name": "gpu-0",
        "allowMultipleAllocations": True,
        "attributes": {
            "productName": {"string": "NVIDIA GeForce RTX 3090"},
            "driverVersion": {"version": "550.54.15"},
            "cudaComputeCapability": {"version": "8.6.0"},
            "index": {"int": 0},
            "resource.kubernetes.io/pciBusID": {"string": "0000:01:00.0"},
        },
        "capacity": {"memory": {"value": "24Gi"}},
    },
)


def run(expr: str, dev: dict = GPU) -> bool:
    return compile_selector(expr).matches(dev)


@pytest.mark.parametrize(
    ("expr", "want"),
    [
        ('device.driver == "gpu.example.com"', True),
        ('device.capacity["gpu.example.com"].memory.compareTo(quantity("6Gi")) >= 0', True),
        ('device.capacity["gpu.example.com"].memory.compareTo(quantity("24576Mi")) == 0', True),
        ('device.capacity["gpu.example.com"].memory.isGreaterThan(quantity("30Gi"))', False),
        ('device.capacity["gpu.example.com"].memory.isLessThan(quantity("30Gi"))', True),
        ('device.capacity["gpu.example.com"].memory == quantity("24Gi")', True),
        ('device.attributes["gpu.example.com"].driverVersion.isGreaterThan(semver("540.0.0"))', True),
        (
            'device.attributes["gpu.example.com"].cudaComputeCapability.compareTo(semver("8.6", true)) == 0',
            True,
        ),
        ('device.attributes["gpu.example.com"].driverVersion.major() == 550', True),
        ('semver("1.0.0-alpha").isLessThan(semver("1.0.0"))', True),
        (
            'cel.bind(a, device.attributes["gpu.example.com"], a.index == 0 && '
            'a.productName.startsWith("NVIDIA"))',
            True,
        ),
        ('cel.bind(a, device.attributes["gpu.example.com"], cel.bind(i, a.index, i + 1 == 1))', True),
        ('has(device.attributes["gpu.example.com"].uuid)', False),
        ('has(device.attributes["other.example.org"].anything)', False),
        ('device.attributes["resource.kubernetes.io"].pciBusID == "0000:01:00.0"', True),
        ("device.allowMultipleAllocations == true", True),
        ('quantity("1500m").isInteger()', False),
        ('quantity("2Gi").add(quantity("1Gi")) == quantity("3Gi")', True),
        ('isQuantity("12Gi") && !isQuantity("12GB")', True),
    ],
)
def test_selector_evaluates_like_kubernetes(expr: str, want: bool) -> None:
    assert run(expr) is want


@pytest.mark.parametrize(
    ("expr", "text"),
    [
        ('device.attributes["gpu.example.com"].uuid == "x"', "no such key: uuid"),
        ('device.attributes["other.example.org"].uuid == "x"', "no such key: uuid"),
        ('device.attributes["gpu.example.com"].index', "instead of bool"),
        ('quantity("12GB") == quantity("1")', "quantity"),
        ('device.capacity["gpu.example.com"].memory.compareTo(semver("1.0.0")) == 0', "no such overload"),
    ],
)
def test_runtime_errors_carry_upstream_text(expr: str, text: str) -> None:
    with pytest.raises(CelRuntimeError) as err:
        run(expr)
    assert text in str(err.value)


@pytest.mark.parametrize(
    ("expr", "text"),
    [
        ("device.driver ==", "compilation failed: ERROR: <input>:1:"),
        ("nodevice.driver == 'x'", "undeclared reference to 'nodevice'"),
        ("frobnicate(device.driver)", "undeclared reference to 'frobnicate'"),
        ("cel.bind(x, 1)", "cel.bind() requires"),
    ],
)
def test_compile_errors(expr: str, text: str) -> None:
    with pytest.raises(CelCompileError) as err:
        compile_selector(expr)
    assert text in str(err.value)


def test_allow_multiple_allocations_absent_when_gate_off() -> None:
    dev = device_variable(DRIVER, {"name": "g", "allowMultipleAllocations": True}, consumable_capacity=False)
    with pytest.raises(CelRuntimeError):
        run("device.allowMultipleAllocations == true", dev)


def test_unsupported_attribute_value_is_an_error() -> None:
    with pytest.raises(CelRuntimeError, match="unsupported attribute value"):
        device_variable(DRIVER, {"name": "g", "attributes": {"weird": {}}})


def test_compiled_programs_are_cached() -> None:
    assert compile_selector('device.driver == "a"') is compile_selector('device.driver == "a"')
