"""Real client-go, protobuf only, against the sim (prints figures; exits 1 if client-go fails).

Builds `benchmarks/clientgo_protobuf` (client-go v0.36; ContentType and AcceptContentTypes both
`application/vnd.kubernetes.protobuf`, so no JSON fallback) once into a cache folder outside the
worktree, starts a sim, and runs it: create/get/update/list/delete of a ResourceSlice with N devices
(delete with a uid precondition), an Event, a Node get, a NotFound Status, and a watch with
sendInitialEvents and the initial-events-end bookmark. Needs `go`, and the Go module proxy the first
time; without `go` it says so and exits 0.

    .venv/bin/python benchmarks/bench_clientgo_protobuf.py [--devices 128]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.testing import running_sim

SOURCE = Path(__file__).resolve().parent / "clientgo_protobuf"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gpu-sharing-conformance"


def build() -> Path | None:
    go = shutil.which("go")
    if go is None:
        print("skipped: no `go` on PATH to build the client-go program")
        return None
    binary = CACHE / "clientgo-protobuf"
    sources = [SOURCE / n for n in ("main.go", "go.mod", "go.sum")]
    if binary.exists() and all(binary.stat().st_mtime >= s.stat().st_mtime for s in sources):
        return binary
    CACHE.mkdir(parents=True, exist_ok=True)
    print(f"building {binary} (client-go; the first build takes minutes)", flush=True)
    done = subprocess.run(
        [go, "build", "-o", str(binary), "."], cwd=SOURCE, capture_output=True, text=True, timeout=1800
    )
    if done.returncode != 0:  # e.g. no Go module proxy reachable: nothing was measured
        print(f"skipped: building the client-go program failed:\n{done.stderr.strip()[-2000:]}")
        return None
    return binary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--devices", type=int, default=128)
    args = parser.parse_args()
    binary = build()
    if binary is None:
        return 0
    with running_sim(nodes=["node-1"]) as sim:
        out = subprocess.run(
            [str(binary), str(sim.kubeconfig), str(args.devices)], capture_output=True, text=True, timeout=120
        )
    print(out.stdout.strip())
    if out.returncode != 0:
        print(out.stderr.strip()[-3000:])
    return 0 if out.returncode == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
