"""Benchmark of the sim's Kubernetes protobuf codec (prints figures; asserts nothing).

Encodes and decodes a ResourceSlice of N devices (default 128) shaped like NVIDIA's gpu-kubelet-plugin
publishes them (a dozen attributes, memory and other capacities, a requestPolicy), and times the same
object through json.dumps/json.loads for scale. Also counts the fixture pairs under
tests/fixtures/k8s-protobuf that round-trip (decode .pb == .json, encode .json == .pb).

    .venv/bin/python benchmarks/bench_protobuf.py [--devices 128] [--rounds 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.apiserver import protobuf

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "k8s-protobuf"


def device(i: int) -> dict[str, Any]:
    return {
        "name": f"gpu-{i}",
        "attributes": {
            "architecture": {"string": "Hopper"},
            "brand": {"string": "Nvidia"},
            "cudaComputeCapability": {"version": "9.0.0"},
            "cudaDriverVersion": {"version": "12.8.0"},
            "driverVersion": {"version": "570.124.6"},
            "index": {"int": i},
            "minor": {"int": i},
            "productName": {"string": "NVIDIA H100 80GB HBM3"},
            "resource.kubernetes.io/pciBusID": {"string": f"0000:{i:02x}:00.0"},
            "type": {"string": "gpu"},
            "uuid": {"string": f"GPU-{i:08x}-06c0-7d70-1a51-e59b25b2c16c"},
        },
        "capacity": {
            "memory": {
                "value": "80Gi",
                "requestPolicy": {"default": "80Gi", "validRange": {"min": "1Gi", "step": "1Gi"}},
            },
            "multiprocessors": {"value": "132"},
        },
        "allowMultipleAllocations": True,
    }


def resource_slice(devices: int) -> dict[str, Any]:
    return {
        "kind": "ResourceSlice",
        "apiVersion": "resource.k8s.io/v1",
        "metadata": {
            "name": "node-1-gpu.nvidia.com-x7k2p",
            "generateName": "node-1-gpu.nvidia.com-",
            "uid": "6f1d2c3a-1b2c-4d5e-8f90-0a1b2c3d4e5f",
            "resourceVersion": "12345",
            "creationTimestamp": "2026-01-15T10:30:00Z",
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Node", "name": "node-1", "uid": "0a5b8f35", "controller": True}
            ],
        },
        "spec": {
            "driver": "gpu.nvidia.com",
            "pool": {"name": "node-1", "generation": 1, "resourceSliceCount": 1},
            "nodeName": "node-1",
            "devices": [device(i) for i in range(devices)],
        },
    }


def timed(fn: Any, rounds: int) -> str:
    """Best and median wall time: the best is what the code costs, the median what a busy machine adds."""
    samples = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return f"{min(samples) * 1000:8.2f} ms best {statistics.median(samples) * 1000:8.2f} ms median"


def fixture_round_trips() -> tuple[int, int]:
    index = json.loads((FIXTURES / "index.json").read_text())
    ok = 0
    for case in index["cases"]:
        pb = (FIXTURES / case["pbFile"]).read_bytes()
        text = (FIXTURES / case["jsonFile"]).read_text()
        decoded_file = FIXTURES / f"{case['name']}.from-pb.json"
        try:
            if case["kind"] == "WatchEvent":
                events = [json.loads(line) for line in text.splitlines() if line.strip()]
                good = protobuf.decode_watch_stream(pb) == events and pb == b"".join(
                    protobuf.watch_frame(e["type"], e["object"]) for e in events
                )
            else:
                want_decoded = json.loads(decoded_file.read_text() if decoded_file.exists() else text)
                good = protobuf.decode(pb) == want_decoded and protobuf.encode(json.loads(text)) == pb
        except Exception:  # a figure, not a test: count it as not round-tripping
            good = False
        ok += good
    return ok, len(index["cases"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--devices", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    obj = resource_slice(args.devices)
    data = protobuf.encode(obj)
    text = json.dumps(obj, separators=(",", ":")).encode()
    assert protobuf.decode(data)["spec"]["devices"][-1]["name"] == f"gpu-{args.devices - 1}"
    print(f"ResourceSlice with {args.devices} devices: {len(data)} bytes protobuf, {len(text)} bytes JSON")
    print(f"  protobuf encode  {timed(lambda: protobuf.encode(obj), args.rounds)}")
    print(f"  protobuf decode  {timed(lambda: protobuf.decode(data), args.rounds)}")
    print(f"  json.dumps       {timed(lambda: json.dumps(obj), args.rounds)}")
    print(f"  json.loads       {timed(lambda: json.loads(text), args.rounds)}")
    if FIXTURES.is_dir():
        ok, total = fixture_round_trips()
        print(f"fixture pairs round-tripping (client-go v0.36 serializer): {ok}/{total}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
