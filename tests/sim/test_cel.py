"""sim/cel.py: the DRA device-selector CEL environment."""

from __future__ import annotations

import pytest

from sim.cel import (
    MAX_COST,
    MAX_EXPRESSION_LENGTH,
    CelCompileError,
    CelRuntimeError,
    DeviceInput,
    SelectorProblem,
    compile_selector,
    device_variable,
    estimated_cost,
    validate_selector,
)

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


def run(expr: str, dev: DeviceInput = GPU) -> bool:
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
        ('sign(device.capacity["gpu.example.com"].memory) == 1', True),
        ('device.attributes["gpu.example.com"].productName.lowerAscii().contains("rtx")', True),
        ('device.attributes["gpu.example.com"].productName.split(" ").size() == 4', True),
        ('device.attributes["gpu.example.com"].productName.find("[0-9]+") == "3090"', True),
        ('device.attributes["gpu.example.com"].?uuid.orValue("none") == "none"', True),
        ('device.attributes["resource.kubernetes.io"].pciBusID.substring(5, 7) == "01"', True),
        ("[2, 1].sum() == 3 && [1, 2].isSorted() && sets.contains([1, 2], [2])", True),
        ('ip("10.0.0.1").family() == 4 && url("https://x/y").getHost() == "x"', True),
        ('type(device.attributes["gpu.example.com"].index) == int', True),
    ],
)
def test_selector_evaluates_like_kubernetes(expr: str, want: bool) -> None:
    assert run(expr) is want


@pytest.mark.parametrize(
    ("expr", "text"),
    [
        (
            'device.attributes["gpu.example.com"].uuid == "x"',
            "no such key: uuid. consider using CEL optional chaining (.? followed by orValue()) or guarding "
            "the check with has() for optional fields",
        ),
        ('device.attributes["other.example.org"].uuid == "x"', "no such key: uuid. consider using"),
        # Attributes are dyn, so a bare attribute compiles; a non-bool value fails when evaluated.
        (
            'device.attributes["gpu.example.com"].index',
            "CEL result of type int could not be converted to bool: "
            "unsupported type conversion from 'int' to bool",
        ),
        (
            'quantity("12GB") == quantity("1")',
            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
        ),
        ('semver("1.2") == semver("1.2.0")', "No Major.Minor.Patch elements found"),
        (
            'device.attributes["gpu.example.com"].productName.matches(device.driver + "[")',
            "error parsing regexp: missing closing ]: `[`",
        ),
    ],
)
def test_runtime_errors_carry_upstream_text(expr: str, text: str) -> None:
    with pytest.raises(CelRuntimeError) as err:
        run(expr)
    assert text in str(err.value)


@pytest.mark.parametrize(
    ("expr", "text"),
    [
        (
            "device.driver ==",
            "compilation failed: ERROR: <input>:1:17: Syntax error: mismatched input '<EOF>'",
        ),
        (
            "nodevice.driver == 'x'",
            "ERROR: <input>:1:1: undeclared reference to 'nodevice' (in container '')",
        ),
        ("frobnicate(device.driver)", "undeclared reference to 'frobnicate'"),
        ("cel.bind(x, 1)", "undeclared reference to 'cel'"),
        # Type-checked against the declared device: unknown fields and wrong types do not compile.
        ("device.name == 'gpu-0'", "ERROR: <input>:1:7: undefined field 'name'"),
        (
            'device.capacity["gpu.example.com"].memory.compareTo(semver("1.0.0")) == 0',
            "found no matching overload for 'compareTo' applied to 'kubernetes.Quantity.(kubernetes.Semver)'",
        ),
        ("device.driver", "must evaluate to bool or the unknown type, not string"),
        ('device.driver.matches("[")', "ERROR: <input>:1:23: invalid matches argument"),
        (
            'device.capacity["gpu.example.com"].memory',
            "must evaluate to bool or the unknown type, not kubernetes.Quantity",
        ),
    ],
)
def test_compile_errors_carry_upstream_text(expr: str, text: str) -> None:
    with pytest.raises(CelCompileError) as err:
        compile_selector(expr)
    assert text in str(err.value)


def test_a_nul_inside_an_expression_is_not_the_end_of_it() -> None:
    with pytest.raises(CelCompileError, match="token recognition error"):
        compile_selector("true\x00 && false")


def test_compile_error_shows_the_expression_and_a_caret() -> None:
    with pytest.raises(CelCompileError) as err:
        compile_selector("device.nope")
    assert str(err.value) == (
        "compilation failed: ERROR: <input>:1:7: undefined field 'nope'\n | device.nope\n | ......^"
    )


def test_allow_multiple_allocations_is_false_when_the_gate_dropped_it() -> None:
    dev = device_variable(DRIVER, {"name": "g", "allowMultipleAllocations": True}, consumable_capacity=False)
    assert run("device.allowMultipleAllocations == false", dev)
    assert run("device.allowMultipleAllocations == true")


def test_attribute_without_a_value_fails_when_evaluated() -> None:
    dev = device_variable(DRIVER, {"name": "g", "attributes": {"weird": {}}})
    with pytest.raises(CelRuntimeError, match=r"^attribute weird: unsupported attribute value$"):
        run("true", dev)


def test_list_attributes_are_lists() -> None:
    dev = device_variable(
        DRIVER,
        {
            "name": "g",
            "attributes": {
                "ids": {"ints": [3, 5]},
                "modes": {"strings": ["a", "b"]},
                "vers": {"versions": ["1.0.0"]},
            },
        },
    )
    assert run('5 in device.attributes["gpu.example.com"].ids', dev)
    assert run('device.attributes["gpu.example.com"].modes.exists(m, m == "b")', dev)
    assert run('device.attributes["gpu.example.com"].vers[0].isLessThan(semver("2.0.0"))', dev)


def test_compiled_programs_are_cached() -> None:
    assert compile_selector('device.driver == "a"') is compile_selector('device.driver == "a"')


def test_runtime_cost_budget_stops_an_expensive_selector() -> None:
    expr = (
        "[" + ",".join(["1"] * 100) + "].all(x, [" + ",".join(["1"] * 100) + "].all(y, "
        "[" + ",".join(["1"] * 100) + "].all(z, x + y + z == 3)))"
    )
    with pytest.raises(CelRuntimeError, match=r"^operation cancelled: actual cost limit exceeded$"):
        run(expr)


def test_validation_rejects_a_selector_whose_worst_case_cost_is_over_the_limit() -> None:
    attr = 'device.attributes["gpu.example.com"].productName'
    cheap = f'{attr}.startsWith("NVIDIA")'
    assert validate_selector(cheap) is None
    costly = f'{attr}.split("x").all(c, c.split("y").all(d, d.split("z").all(f, f.matches({attr}))))'
    assert estimated_cost(costly) > MAX_COST
    assert validate_selector(costly) == SelectorProblem("Forbidden", "too complex, exceeds cost limit")


def test_validation_uses_the_gated_device_fields_for_new_objects() -> None:
    expr = "device.allowMultipleAllocations"
    assert validate_selector(expr, consumable_capacity=True) is None
    problem = validate_selector(expr, consumable_capacity=False)
    assert problem is not None and problem.reason == "Invalid"
    assert problem.detail.startswith(
        "compilation failed: ERROR: <input>:1:7: undefined field 'allowMultipleAllocations'"
    )
    # The allocator compiles as for stored objects: every field and library, whatever the gates.
    assert run(expr)


def test_validation_rejects_a_too_long_selector_without_compiling() -> None:
    problem = validate_selector("true && " * 2000 + "true")
    assert problem == SelectorProblem("TooLong", f"may not be more than {MAX_EXPRESSION_LENGTH} bytes")
