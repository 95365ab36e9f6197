"""Benchmark of the simulated apiserver over HTTP (prints figures; asserts nothing).

The server runs as a real `python -m sim` subprocess; the client is raw urllib3 with one keep-alive
connection pool (not the kubernetes client, whose pydantic deserialisation would dominate the figures).
With N objects stored (default 10,000 pods), it measures p50/p99 latency of create, get, list and watch
delivery (write sent -> event read from a watch stream), and sequential and 4-thread writes per second.

    .venv/bin/python benchmarks/bench_apiserver.py [--objects 10000] [--samples 1000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.testing import running_sim

NS = "bench"


def pod(name: str, i: int) -> bytes:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "bench", "shard": str(i % 10)}},
            "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "1"]}]},
        }
    ).encode()


def claim(name: str) -> bytes:
    return json.dumps(
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": name},
            "spec": {
                "devices": {
                    "requests": [
                        {
                            "name": "gpu",
                            "exactly": {
                                "deviceClassName": "gpu.example.com",
                                "capacity": {"requests": {"memory": "6Gi"}},
                            },
                        }
                    ]
                }
            },
        }
    ).encode()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def report(label: str, seconds: list[float]) -> None:
    ms = [s * 1000 for s in seconds]
    print(
        f"{label:<34} n={len(ms):<6} p50={pct(ms, 50):7.2f} ms  p99={pct(ms, 99):7.2f} ms  "
        f"mean={statistics.fmean(ms):7.2f} ms"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=10_000)
    ap.add_argument("--samples", type=int, default=1000)
    args = ap.parse_args()
    with running_sim(nodes=["node-1"], subprocess=True) as sim:
        http = sim.http(maxsize=8)
        base = sim.url
        hdr = {"Content-Type": "application/json", **sim.auth}

        def call(method: str, path: str, body: bytes | None = None) -> Any:
            r = http.request(method, base + path, body=body, headers=hdr)
            if r.status >= 300:
                raise RuntimeError(f"{method} {path}: {r.status} {r.data[:300]!r}")
            return r

        call("POST", "/api/v1/namespaces", json.dumps({"metadata": {"name": NS}}).encode())
        pods = f"/api/v1/namespaces/{NS}/pods"
        t0 = time.perf_counter()
        for i in range(args.objects):
            call("POST", pods, pod(f"p-{i}", i))
        fill = time.perf_counter() - t0
        print(
            f"sim at {base}; stored {args.objects} pods sequentially in {fill:.1f} s "
            f"-> {args.objects / fill:,.0f} writes/s (1 client)"
        )

        claims = f"/apis/resource.k8s.io/v1/namespaces/{NS}/resourceclaims"
        lat = []
        for i in range(args.samples):
            t = time.perf_counter()
            call("POST", claims, claim(f"c-{i}"))
            lat.append(time.perf_counter() - t)
        report("create ResourceClaim", lat)
        lat = []
        for i in range(args.samples):
            t = time.perf_counter()
            call("POST", pods, pod(f"q-{i}", i))
            lat.append(time.perf_counter() - t)
        report("create Pod", lat)
        lat = []
        for i in range(args.samples):
            t = time.perf_counter()
            call("GET", f"{pods}/p-{(i * 7919) % args.objects}")
            lat.append(time.perf_counter() - t)
        report("get Pod", lat)
        from kubernetes import client as k8s

        api = sim.client()
        core = k8s.CoreV1Api(api)
        lat = []
        for i in range(min(args.samples, 300)):
            t = time.perf_counter()
            core.create_namespaced_config_map(NS, {"metadata": {"name": f"k-{i}"}, "data": {"i": str(i)}})
            lat.append(time.perf_counter() - t)
        report("create ConfigMap (official client)", lat)
        api.close()
        lat = []
        for _ in range(20):
            t = time.perf_counter()
            r = call("GET", pods)
            json.loads(r.data)
            lat.append(time.perf_counter() - t)
        report(f"list {args.objects + args.samples} Pods (+decode)", lat)
        lat = []
        for i in range(200):
            t = time.perf_counter()
            call("GET", f"{pods}?labelSelector=shard%3D{i % 10}&fieldSelector=metadata.name%3Dp-{i}")
            lat.append(time.perf_counter() - t)
        report("list Pods with selectors", lat)

        # watch delivery: time from sending a write to reading its event from a watch stream
        cm_path = f"/api/v1/namespaces/{NS}/configmaps"
        rv = json.loads(call("GET", cm_path).data)["metadata"]["resourceVersion"]
        stream = http.request(
            "GET",
            f"{base}{cm_path}?watch=true&resourceVersion={rv}&timeoutSeconds=300",
            preload_content=False,
        )
        sent: dict[str, float] = {}
        arrived: dict[str, float] = {}
        done = threading.Event()

        def read() -> None:
            buf = b""
            for chunk in stream.stream(65536):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    ev = json.loads(line)
                    arrived[ev["object"]["metadata"]["name"]] = time.perf_counter()
                    if len(arrived) == args.samples:
                        done.set()
                        return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        for i in range(args.samples):
            name = f"w-{i}"
            sent[name] = time.perf_counter()
            call("POST", cm_path, json.dumps({"metadata": {"name": name}, "data": {"i": str(i)}}).encode())
        if not done.wait(60):
            print(f"watch: only {len(arrived)} of {args.samples} events arrived within 60 s")
        report("watch delivery (write sent->event)", [arrived[n] - sent[n] for n in arrived])
        stream.release_conn()

        # concurrent writers
        n = 2000
        t0 = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            list(
                pool.map(
                    lambda i: call("POST", cm_path, json.dumps({"metadata": {"name": f"x-{i}"}}).encode()),
                    range(n),
                )
            )
        elapsed = time.perf_counter() - t0
        print(
            f"{'writes/s, 4 client threads':<34} {n / elapsed:,.0f} writes/s "
            f"({n} ConfigMaps in {elapsed:.1f} s)"
        )
    print("targets (issue 2, 2-core machine): p99 create < 10 ms, p99 watch delivery < 20 ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
