"""Pure allocator speed (issue 13 part 4). Prints figures; asserts nothing.

1. Per-scenario time over 1,000 random scenarios (tests/allocator_scenarios.py, seeds 0..999): one
   `allocate()` call from the slices, as upstream's Allocate runs (pools gathered, devices listed,
   CEL evaluated per call with compiled expressions cached). Each scenario runs --repeat times and
   counts with the mean; the figure is the median over scenarios. "warm" is how the sim's scheduler
   calls it: pools and devices precomputed per node and selector results cached across calls.
2. The large case: 100 nodes x 8 shared GPUs (24Gi, allowMultipleAllocations) with 2,400 existing
   shares of 6Gi (3 per GPU), and one pod claiming 6Gi: the state is built from the 2,400 allocated
   claims and the claim is tried on every node (one Filter pass), as upstream's PreFilter and Filter do.

Times are CPU time of this process (time.process_time), so that other load on the machine does not
inflate them. Upstream's Go allocator (k8s.io/dynamic-resource-allocation @ 3d036712930c, incubating)
took 0.051 ms median on the issue's 1,000 scenarios and 11 ms on the large case (issue 13); ratios
are against those.

    python benchmarks/bench_allocator.py
    python benchmarks/bench_allocator.py --profile large     # cProfile the large case
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from allocator_scenarios import CLASSES, NODE, generate, uuids  # noqa: E402

from sim.allocator import AllocatorError, SelectorCache, allocate, pool_devices  # noqa: E402
from sim.allocator_pools import gather_pools  # noqa: E402
from sim.allocator_state import AllocatedState  # noqa: E402

GO_MEDIAN_MS = 0.051
GO_LARGE_MS = 11.0
DRIVER = "gpu.example.com"


def _call(sc: Any, warm: dict | None) -> None:
    try:
        if warm is None:
            allocate(
                sc.claims, NODE, sc.slices, CLASSES, sc.state, sc.features, SelectorCache(), new_uuid=uuids(1)
            )
        else:
            allocate(
                sc.claims,
                NODE,
                [],
                CLASSES,
                sc.state,
                sc.features,
                warm["cache"],
                pools=warm["pools"],
                devices=warm["devices"],
                new_uuid=uuids(1),
            )
    except AllocatorError:
        pass


def scenarios_median(count: int, repeat: int, warm: bool) -> float:
    per_scenario = []
    for seed in range(count):
        sc = generate(seed)
        ctx = None
        if warm:
            pools = gather_pools(sc.slices, NODE)
            ctx = {"cache": SelectorCache(), "pools": pools, "devices": pool_devices(pools, NODE)}
            _call(sc, ctx)  # fill the selector cache as earlier scheduling cycles would
        # One clock reading around the batch: reading the CPU clock costs ~10 us itself.
        t = time.process_time()
        for _ in range(repeat):
            _call(sc, ctx)
        per_scenario.append((time.process_time() - t) / repeat)
    return statistics.median(per_scenario) * 1000


def _large_cluster(nodes: int = 100, gpus: int = 8, shares_per_gpu: int = 3) -> tuple[list, list, list]:
    node_objs, slices, claims = [], [], []
    for n in range(nodes):
        name = f"node-{n:03d}"
        node_objs.append({"metadata": {"name": name, "labels": {}}})
        slices.append(
            {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "ResourceSlice",
                "metadata": {"name": f"{name}-gpus", "uid": f"{name}-gpus", "resourceVersion": "1"},
                "spec": {
                    "driver": DRIVER,
                    "nodeName": name,
                    "pool": {"name": name, "generation": 1, "resourceSliceCount": 1},
                    "devices": [
                        {
                            "name": f"gpu-{i}",
                            "allowMultipleAllocations": True,
                            "attributes": {"uuid": {"string": f"GPU-{name}-{i}"}, "model": {"string": "a"}},
                            "capacity": {"memory": {"value": "24Gi"}},
                        }
                        for i in range(gpus)
                    ],
                },
            }
        )
        for i in range(gpus):
            for k in range(shares_per_gpu):
                claims.append(
                    {
                        "metadata": {"name": f"old-{name}-{i}-{k}", "namespace": "ns"},
                        "status": {
                            "allocation": {
                                "devices": {
                                    "results": [
                                        {
                                            "request": "gpu",
                                            "driver": DRIVER,
                                            "pool": name,
                                            "device": f"gpu-{i}",
                                            "shareID": f"{n:08d}-{i:04d}-4000-8000-{k:012d}",
                                            "consumedCapacity": {"memory": "6Gi"},
                                        }
                                    ]
                                }
                            }
                        },
                    }
                )
    return node_objs, slices, claims


POD_CLAIM = {
    "metadata": {"name": "new", "namespace": "ns", "uid": "uid-new"},
    "spec": {
        "devices": {
            "requests": [
                {
                    "name": "gpu",
                    "exactly": {
                        "deviceClassName": "shared",
                        "allocationMode": "ExactCount",
                        "count": 1,
                        "capacity": {"requests": {"memory": "6Gi"}},
                    },
                }
            ]
        }
    },
}


def large_case(
    nodes: list, slices: list, existing: list, cache: SelectorCache | None = None
) -> tuple[float, float, int]:
    """(ms to build the state, ms for one Filter pass over all nodes, nodes that fit)."""
    t0 = time.process_time()
    state = AllocatedState()
    for c in existing:
        state.set_claim(f"{c['metadata']['namespace']}/{c['metadata']['name']}", c["status"]["allocation"])
    t1 = time.process_time()
    by_node: dict[str, list] = {}
    for s in slices:  # upstream's NewAllocator indexes slices by node once
        by_node.setdefault(s["spec"]["nodeName"], []).append(s)
    fits = 0
    for node in nodes:
        outcome = allocate(
            [POD_CLAIM],
            node,
            by_node[node["metadata"]["name"]],
            CLASSES,
            state,
            cache=cache or SelectorCache(),
            new_uuid=uuids(2),
        )
        fits += outcome.ok
    t2 = time.process_time()
    return (t1 - t0) * 1000, (t2 - t1) * 1000, fits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="random scenarios")
    parser.add_argument("--repeat", type=int, default=5, help="runs per scenario")
    parser.add_argument("--profile", choices=["scenarios", "large"], help="print a cProfile of one part")
    args = parser.parse_args()
    nodes, slices, existing = _large_cluster()
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        if args.profile == "scenarios":
            scenarios_median(args.count, 1, warm=False)
        else:
            for _ in range(5):
                large_case(nodes, slices, existing)
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
        return 0
    cold = scenarios_median(args.count, args.repeat, warm=False)
    warm = scenarios_median(args.count, args.repeat, warm=True)
    print(f"bench_allocator: {args.count} random scenarios, mean of {args.repeat} runs each, CPU time")
    print(
        f"  per-scenario median, full call from slices: {cold:.3f} ms "
        f"({cold / GO_MEDIAN_MS:.1f}x upstream's {GO_MEDIAN_MS} ms)"
    )
    print(
        f"  per-scenario median, warm (pools and selector results cached, as the scheduler runs it): "
        f"{warm:.3f} ms ({warm / GO_MEDIAN_MS:.1f}x)"
    )
    runs = [large_case(nodes, slices, existing) for _ in range(5)]
    state_ms = statistics.median(r[0] for r in runs)
    filter_ms = statistics.median(r[1] for r in runs)
    total = state_ms + filter_ms
    print(
        f"large case: {len(nodes)} nodes x 8 shared GPUs, {len(existing)} existing shares, one 6Gi claim "
        f"(fits on {runs[0][2]} nodes); median of 5"
    )
    print(
        f"  state from {len(existing)} allocated claims: {state_ms:.1f} ms; Filter on every node: "
        f"{filter_ms:.1f} ms; total {total:.1f} ms "
        f"({total / GO_LARGE_MS:.1f}x upstream's {GO_LARGE_MS} ms)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
