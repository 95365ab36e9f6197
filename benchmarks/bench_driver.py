"""Reference driver figures: NodePrepareResources latency (one claim, a batch of 8; each claim read from the
simulated API server by the driver), publish time for 8 GPUs, and the driver process's resident memory.

Run: .venv/bin/python benchmarks/bench_driver.py [--rounds N]
The driver runs as its own process (`python -m driver`), as the kubelet would start it; the API server and
the kubelet-side gRPC client run in this process.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drakit.gpuprofiles import load_profile
from driver.kube import api_client
from driver.publisher import SlicePublisher
from driver.slices import PublishSettings
from sim.testing import sim_api, wait_for_file
from tests.support.driver_harness import (
    DRIVER,
    DRAClient,
    DriverProcess,
    allocated_claim,
    result,
    short_tmp_dir,
)


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="prepare calls per figure (default 200)")
    rounds = parser.parse_args().rounds
    with sim_api() as api, short_tmp_dir("bench") as root:
        args = [
            "--node-name",
            "node-1",
            "--kubeconfig",
            str(api.kubeconfig),
            "--gpus",
            "h100x8",
            "--plugin-dir",
            str(root / "plugins"),
            "--registry-dir",
            str(root / "registry"),
            "--cdi-dir",
            str(root / "cdi"),
            "--state-dir",
            str(root / "state"),
            "--log-level",
            "WARNING",
        ]
        started = time.perf_counter()
        with DriverProcess(args) as driver:
            wait_for_file(root / "registry", f"{DRIVER}-reg.sock", what="driver registration")
            startup = (time.perf_counter() - started) * 1000
            client = DRAClient(root / "plugins" / "dra.sock")
            try:
                figures = {}
                for batch in (1, 8):
                    samples = []
                    for i in range(rounds + 10):
                        claims = [
                            api.add_claim(
                                allocated_claim(
                                    f"b{batch}-{i}-{k}",
                                    results=[
                                        result(f"gpu-{k % 8}", share_id=str(uuid.uuid4()), memory="1Gi")
                                    ],
                                )
                            )
                            for k in range(batch)
                        ]
                        start = time.perf_counter()
                        response = client.prepare(claims)
                        elapsed = time.perf_counter() - start
                        assert all(r.error == "" for r in response.claims.values()), response
                        client.unprepare(claims)
                        if i >= 10:  # warm-up: first connections, imports
                            samples.append(elapsed * 1000)
                    figures[batch] = samples
                rss = rss_mib(driver.proc.pid)
            finally:
                client.close()
        publish = []
        settings = PublishSettings("node-2", DRIVER, True, "range", 1 << 20, 1 << 20)
        pub = SlicePublisher(api_client(str(api.kubeconfig)), load_profile("h100x8", "node-2"), settings)
        for _ in range(30):
            start = time.perf_counter()
            pub.publish()
            publish.append((time.perf_counter() - start) * 1000)
            pub.remove_all()
    print(
        f"NodePrepareResources, 1 claim  (incl. claim GET from the sim API): "
        f"p50 {statistics.median(figures[1]):.2f} ms, p99 {pct(figures[1], 99):.2f} ms ({rounds} calls)"
    )
    print(
        f"NodePrepareResources, 8 claims (incl. 8 claim GETs):               "
        f"p50 {statistics.median(figures[8]):.2f} ms, p99 {pct(figures[8], 99):.2f} ms ({rounds} calls)"
    )
    print(
        f"publish 8 GPUs (list + create + read-back check): median {statistics.median(publish):.2f} ms, "
        f"max {max(publish):.2f} ms (30 runs)"
    )
    print(f"driver resident memory (VmRSS) after the runs: {rss:.1f} MiB")
    print(
        f"driver start to registration socket (8 GPUs, includes interpreter start and publish): "
        f"{startup:.0f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
