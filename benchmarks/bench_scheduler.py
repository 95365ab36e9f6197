"""Scheduler throughput (issue 3, item 8). Prints figures; asserts nothing.

N nodes x 8 shared GPUs of 24Gi (allowMultipleAllocations, memory capacity), N*32 pods each claiming
6Gi from one ResourceClaimTemplate, so the cluster ends exactly full. Everything runs in-process on
the sim's Store with the real claim controller and scheduler threads: pods are created in one burst,
and a watcher records when each pod is bound.

    python benchmarks/bench_scheduler.py                 # 100 nodes, then the 25/50/100/200 curve
    python benchmarks/bench_scheduler.py --nodes 100 --no-curve
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.apiserver.store import Store
from sim.controller import ClaimController
from sim.scheduler import Scheduler

DRIVER = "gpu.example.com"
GPUS_PER_NODE = 8
PODS_PER_GPU = 4  # 24Gi / 6Gi
SELECTOR = "device.attributes['gpu.example.com'].productName == 'NVIDIA GeForce RTX 3090'"


def populate(store: Store, nodes: int) -> None:
    store.create(
        "deviceclasses.resource.k8s.io",
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "DeviceClass",
            "metadata": {"name": DRIVER},
            "spec": {"selectors": [{"cel": {"expression": f'device.driver == "{DRIVER}"'}}]},
        },
    )
    for n in range(nodes):
        node = f"node-{n:03d}"
        store.create(
            "nodes",
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": node},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]},
            },
        )
        store.create(
            "resourceslices.resource.k8s.io",
            {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "ResourceSlice",
                "metadata": {"name": f"{node}-gpus"},
                "spec": {
                    "driver": DRIVER,
                    "nodeName": node,
                    "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
                    "devices": [
                        {
                            "name": f"gpu-{i}",
                            "allowMultipleAllocations": True,
                            "attributes": {
                                "uuid": {"string": f"GPU-{node}-{i}"},
                                "productName": {"string": "NVIDIA GeForce RTX 3090"},
                            },
                            "capacity": {"memory": {"value": "24Gi"}},
                        }
                        for i in range(GPUS_PER_NODE)
                    ],
                },
            },
        )
    store.create(
        "resourceclaimtemplates.resource.k8s.io",
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaimTemplate",
            "metadata": {"name": "gpu-6gi", "namespace": "default"},
            "spec": {
                "spec": {
                    "devices": {
                        "requests": [
                            {
                                "name": "gpu",
                                "exactly": {
                                    "deviceClassName": DRIVER,
                                    "capacity": {"requests": {"memory": "6Gi"}},
                                    "selectors": [{"cel": {"expression": SELECTOR}}],
                                },
                            }
                        ]
                    }
                }
            },
        },
    )


def run(nodes: int, timeout: float) -> dict[str, Any]:
    store = Store()
    populate(store, nodes)
    pods = nodes * GPUS_PER_NODE * PODS_PER_GPU
    controller, scheduler = ClaimController(store), Scheduler(store)
    controller.start()
    scheduler.start()
    created: dict[str, float] = {}
    bound_at: dict[str, float] = {}
    done = threading.Event()
    watch = store.watch(["pods"])

    def watcher() -> None:
        while len(bound_at) < pods:
            ev = watch.get_raw(timeout)
            if ev is None:
                break
            name = ev.object["metadata"]["name"]
            if ev.object["spec"].get("nodeName") and name not in bound_at:
                bound_at[name] = time.perf_counter()
        done.set()

    t = threading.Thread(target=watcher, daemon=True)
    t.start()
    try:
        start = time.perf_counter()
        for i in range(pods):
            name = f"p{i:05d}"
            created[name] = time.perf_counter()
            store.create(
                "pods",
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": name, "namespace": "default"},
                    "spec": {
                        "containers": [{"name": "c", "image": "x"}],
                        "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "gpu-6gi"}],
                    },
                },
            )
        create_s = time.perf_counter() - start
        if not done.wait(timeout):
            raise TimeoutError(f"only {len(bound_at)}/{pods} pods bound within {timeout}s")
        total = max(bound_at.values()) - start
    finally:
        watch.close()
        scheduler.stop()
        controller.stop()
    if len(bound_at) != pods:
        raise RuntimeError(f"only {len(bound_at)}/{pods} pods were bound (watch ended)")
    latencies = sorted(bound_at[n] - created[n] for n in created)
    return {
        "nodes": nodes,
        "pods": pods,
        "seconds": total,
        "create_s": create_s,
        "pods_per_s": pods / total,
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": latencies[int(0.99 * (len(latencies) - 1))] * 1e3,
        "us_per_pod": total / pods * 1e6,
        "errors": controller.errors + scheduler.errors,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--curve", default="25,50,100,200", help="node counts for the cost curve")
    p.add_argument("--no-curve", action="store_true")
    p.add_argument("--timeout", type=float, default=600.0)
    args = p.parse_args()
    print(f"bench_scheduler: {GPUS_PER_NODE} shared 24Gi GPUs per node, 6Gi per pod, burst creation")
    main_run = run(args.nodes, args.timeout)
    _print(main_run, headline=True)
    if not args.no_curve:
        print("cost curve (time per scheduled pod should grow no faster than linearly with nodes):")
        for n in (int(x) for x in args.curve.split(",") if x.strip()):
            _print(run(n, args.timeout), headline=False)
    return 0


def _print(r: dict[str, Any], headline: bool) -> None:
    prefix = "  " if not headline else ""
    print(
        f"{prefix}nodes={r['nodes']:4d} pods={r['pods']:5d} scheduled in {r['seconds']:.2f}s "
        f"-> {r['pods_per_s']:.0f} pods/s; "
        f"create-to-bound p50={r['p50_ms']:.0f} ms p99={r['p99_ms']:.0f} ms; "
        f"{r['us_per_pod']:.0f} us/pod (pod creation burst took {r['create_s']:.2f}s)"
        + (f"; ERRORS: {r['errors']}" if r["errors"] else "")
    )


if __name__ == "__main__":
    sys.exit(main())
