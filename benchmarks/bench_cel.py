"""The sim's CEL environment (sim/cel.py over upstream's Go library): probe coverage and speed.

Prints how many of tests/data/cel/cel-probes.yaml get upstream's verdict and exact message, the time
to compile one new selector (median), the time of one cached compile_selector lookup, the time to
decode one device, and the time of one evaluation against one device (median of batches) for a few
typical selectors. Asserts nothing.

    python benchmarks/bench_cel.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.cel import compile_selector, device_variable
from tests.sim.test_cel_probes import PROBES, verdict

DEVICE = {
    "name": "gpu-0",
    "allowMultipleAllocations": True,
    "attributes": {
        "productName": {"string": "NVIDIA GeForce RTX 3090"},
        "driverVersion": {"version": "550.54.15"},
        "index": {"int": 0},
        "uuid": {"string": "GPU-0"},
    },
    "capacity": {"memory": {"value": "24Gi"}},
}
SELECTORS = {
    "driver": 'device.driver == "gpu.example.com"',
    "string attribute": "device.attributes['gpu.example.com'].productName == 'NVIDIA GeForce RTX 3090'",
    "quantity": 'device.capacity["gpu.example.com"].memory.isGreaterThan(quantity("6Gi"))',
    "semver + bind": 'cel.bind(a, device.attributes["gpu.example.com"], '
    'a.driverVersion.isGreaterThan(semver("540.0.0")) && a.index == 0)',
}


def per_call_us(fn, batch: int = 2000, rounds: int = 7) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        times.append((time.perf_counter() - t0) / batch)
    return statistics.median(times) * 1e6


def main() -> None:
    right = exact = 0
    for probe in PROBES["probes"]:
        got, message = verdict(probe["selector"])
        ok = got == probe["upstream"]
        right += ok
        want_msg = probe.get("upstreamMessage")
        exact += ok and (want_msg is None or (message or "").split("\n")[0] == want_msg)
    total = len(PROBES["probes"])
    print(f"probes: {right}/{total} verdicts as upstream, {exact} with upstream's exact message")

    compile_times = []
    for i in range(300):
        expr = f'device.attributes["gpu.example.com"].index == {i} && device.driver.startsWith("gpu")'
        t0 = time.perf_counter()
        compile_selector(expr)
        compile_times.append(time.perf_counter() - t0)
    print(f"compile (new expression): median {statistics.median(compile_times) * 1e6:.0f} us")
    print(f"compile (cached):         {per_call_us(lambda: compile_selector(SELECTORS['driver'])):.2f} us")
    print(
        f"device_variable (decode one device): "
        f"{per_call_us(lambda: device_variable('gpu.example.com', DEVICE), batch=500):.1f} us"
    )
    dev = device_variable("gpu.example.com", DEVICE)
    for name, expr in SELECTORS.items():
        program = compile_selector(expr)
        assert program.matches(dev)
        print(f"evaluate per device, {name:17s} {per_call_us(lambda p=program: p.matches(dev)):.1f} us")


if __name__ == "__main__":
    main()
