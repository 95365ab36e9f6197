"""Benchmark of the simulated kubelet with the real reference driver (prints figures; asserts nothing).

1. Pod create-to-Running latency, one pod at a time: each pod claims 1Gi of a shared mock RTX 3090 from a
   template, so every sample crosses the claim controller, the scheduler, NodePrepareResources in the real
   `python -m driver` (claim read from the API, CDI spec written), CDI resolution and a process start.
   Target: p99 under 500 ms.
2. 200 sharers packed onto 2 nodes x 4 GPUs (24Gi each, 960Mi per pod, 25 pods per GPU), all created at
   once: time until every pod is Running, in pods per second; then the time to delete them all (SIGTERM,
   NodeUnprepareResources, final delete).

Pods are created through the HTTP API with the official client; Running is observed on an in-process
Store watch (so that client-side deserialisation does not inflate the figures).

    .venv/bin/python benchmarks/bench_kubelet.py [--samples 200] [--sharers 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubernetes import client

from sim.kubelet.fleet import add_kubelets
from sim.scheduler import add_control_plane
from sim.testing import running_sim

DRIVER = "gpu.sharing.example.dev"
NS = "default"
FOUR_GPUS = """description: Four NVIDIA GeForce RTX 3090 (benchmark profile)
driverVersion: "550.54.15"
cudaDriverVersion: "12.4"
gpus:
  - model: NVIDIA GeForce RTX 3090
    count: 4
    memory: 24Gi
    brand: GeForce
    architecture: Ampere
    cudaComputeCapability: "8.6"
"""


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


def setup(api: client.ApiClient, memory: str) -> None:
    res = client.ResourceV1Api(api)
    selector = {"cel": {"expression": f"device.driver == '{DRIVER}'"}}
    res.create_device_class(
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "DeviceClass",
            "metadata": {"name": "gpu"},
            "spec": {"selectors": [selector]},
        }
    )
    res.create_namespaced_resource_claim_template(
        NS,
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaimTemplate",
            "metadata": {"name": "share"},
            "spec": {
                "spec": {
                    "devices": {
                        "requests": [
                            {
                                "name": "gpu",
                                "exactly": {
                                    "deviceClassName": "gpu",
                                    "capacity": {"requests": {"memory": memory}},
                                },
                            }
                        ]
                    }
                }
            },
        },
    )


def pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 5,
            "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "share"}],
            "containers": [
                {
                    "name": "c",
                    "image": "x",
                    "command": ["sleep", "600"],
                    "resources": {"claims": [{"name": "gpu"}]},
                }
            ],
        },
    }


def configure(gpus: str):
    def apply(cluster: Any) -> None:
        add_control_plane(cluster)
        add_kubelets(cluster, gpus)

    return apply


def wait_phase(w: Any, names: set[str], timeout: float, seen: dict[str, float]) -> None:
    deadline = time.monotonic() + timeout
    while not names <= set(seen):
        ev = w.get(timeout=max(0.0, deadline - time.monotonic()))
        if ev is None:
            missing = sorted(names - set(seen))
            raise TimeoutError(f"{len(missing)} pod(s) not Running after {timeout}s, e.g. {missing[:3]}")
        obj = ev.object
        if ev.type != "DELETED" and obj.get("status", {}).get("phase") == "Running":
            seen.setdefault(obj["metadata"]["name"], time.perf_counter())


def bench_latency(samples: int) -> None:
    with running_sim(nodes=["node-1"], configure=configure("rtx3090x2")) as sim:
        sim.cluster.kubelets["node-1"].wait_driver_registered(60)
        api = sim.client()
        core = client.CoreV1Api(api)
        setup(api, "1Gi")
        latencies = []
        for i in range(samples):
            name = f"lat-{i}"
            w = sim.store.watch(["pods"], field_selector=f"metadata.name={name}")
            t0 = time.perf_counter()
            core.create_namespaced_pod(NS, pod(name))
            seen: dict[str, float] = {}
            wait_phase(w, {name}, 30, seen)
            latencies.append((seen[name] - t0) * 1000)
            w.close()
            if (i + 1) % 40 == 0:  # 48 x 1Gi fit on 2 x 24Gi: free the GPUs now and then
                for j in range(i - 39, i + 1):
                    core.delete_namespaced_pod(f"lat-{j}", NS, grace_period_seconds=0)
        api.close()
    print(
        f"create-to-Running, 1 pod at a time, real driver (n={samples}): "
        f"p50 {statistics.median(latencies):.1f} ms, p90 {pct(latencies, 90):.1f} ms, "
        f"p99 {pct(latencies, 99):.1f} ms, max {max(latencies):.1f} ms "
        f"(sample #{latencies.index(max(latencies))}) (target p99 < 500 ms)"
    )


def bench_sharers(count: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        profile = Path(tmp) / "rtx3090x4.yaml"
        profile.write_text(FOUR_GPUS)
        with running_sim(nodes=["node-1", "node-2"], configure=configure(str(profile))) as sim:
            for k in sim.cluster.kubelets.values():
                k.wait_driver_registered(60)
            api = sim.client()
            core = client.CoreV1Api(api)
            per_gpu = -(-count // 8)
            setup(api, f"{24 * 1024 // per_gpu}Mi")
            names = {f"share-{i}" for i in range(count)}
            w = sim.store.watch(["pods"])
            t0 = time.perf_counter()
            for name in sorted(names):
                core.create_namespaced_pod(NS, pod(name))
            created = time.perf_counter()
            seen: dict[str, float] = {}
            wait_phase(w, names, 300, seen)
            done = time.perf_counter()
            w.close()
            nodes = {p["spec"]["nodeName"] for p in sim.store.list("pods")[0]}
            claims, _ = sim.store.list("resourceclaims.resource.k8s.io")
            gpus = {
                (
                    c["status"]["allocation"]["devices"]["results"][0]["pool"],
                    c["status"]["allocation"]["devices"]["results"][0]["device"],
                )
                for c in claims
            }
            print(
                f"{count} sharers on 2 nodes x 4 GPUs ({24 * 1024 // per_gpu}Mi each): all Running in "
                f"{done - t0:.2f} s = {count / (done - t0):.1f} pods/s (creates took {created - t0:.2f} s; "
                f"nodes used {len(nodes)}, GPUs used {len(gpus)})"
            )
            w = sim.store.watch(["pods"])
            t1 = time.perf_counter()
            for name in sorted(names):
                core.delete_namespaced_pod(name, NS)
            gone = 0
            deadline = time.monotonic() + 120
            while gone < count:
                ev = w.get(timeout=max(0.0, deadline - time.monotonic()))
                if ev is None:
                    raise TimeoutError(f"only {gone}/{count} pods were removed within 120 s")
                gone += ev.type == "DELETED"
            t2 = time.perf_counter()
            w.close()
            api.close()
            print(
                f"delete {count} sharers (SIGTERM, unprepare, final delete): {t2 - t1:.2f} s = "
                f"{count / (t2 - t1):.1f} pods/s"
            )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--sharers", type=int, default=200)
    args = p.parse_args()
    bench_latency(args.samples)
    bench_sharers(args.sharers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
