"""The sim's allocator against upstream's Go allocator, decision by decision and in time (issue 13).

Builds benchmarks/upstream_allocator (a small Go program around k8s.io/dynamic-resource-allocation's
structured allocator, v0.37.2 from the Go module proxy: the nearest published version to the issue's
3d036712930c) and feeds it the random scenarios of tests/support/allocator_scenarios.py and the repros of
tests/fixtures/allocator-repros. Prints how many decisions agree (outcome, devices, shareIDs,
consumedCapacity, exact error text), the first disagreements, and the per-scenario median time of both
(state + one Allocate call; Go: median wall time of --repeat runs; sim: mean CPU time of --repeat runs,
once with selector outcomes shared across calls by device content as the sim runs, once evaluating
every selector per call as upstream does, and how many sim decisions differ between the two: none
should), then the large case of bench_allocator.py.

v0.37.2 is later than 3d036712930c and differs from it on purpose in places: it fixed the quirks R6, R7
and R14, words the R11 error differently ("adding N devices exceeds the claim limit ... with M already
accounted for") and fixes All mode's candidate set from static capacity only (devices whose remaining
capacity is too small now fail the request instead of dropping out). The repros record 3d036712930c;
disagreements of those kinds are expected here.
Needs the Go toolchain (and, the first time, the module proxy); prints why and stops otherwise.

    python benchmarks/bench_allocator_upstream.py --count 1000
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_allocator import POD_CLAIM, _large_cluster, large_case  # noqa: E402

from drakit.quantity import canonical  # noqa: E402
from sim.allocator import AllocatorError, Features, SelectorCache, allocate  # noqa: E402
from sim.allocator_state import AllocatedState  # noqa: E402
from tests.support.allocator_scenarios import CLASSES, NODE, generate, uuids  # noqa: E402

GATES = ("DRAConsumableCapacity", "DRAPrioritizedList", "DRAAdminAccess", "DRAPartitionableDevices")
REPROS = ROOT / "tests" / "fixtures" / "allocator-repros"


def _features(gates: dict[str, bool]) -> Features:
    return Features(
        consumable_capacity=gates.get("DRAConsumableCapacity", False),
        prioritized_list=gates.get("DRAPrioritizedList", False),
        admin_access=gates.get("DRAAdminAccess", False),
        partitionable_devices=gates.get("DRAPartitionableDevices", False),
    )


def _decision(outcome: Any) -> tuple:
    """A comparable decision from the sim (Outcome/AllocatorError) or the harness (dict)."""
    if isinstance(outcome, AllocatorError):
        return ("error", str(outcome))
    if isinstance(outcome, dict):
        if outcome["outcome"] == "error":
            return (
                ("unschedulable", outcome["error"])
                if outcome.get("failedOnNode")
                else ("error", outcome["error"])
            )
        if outcome["outcome"] == "unschedulable":
            return ("unschedulable", "cannot allocate all claims")
        allocations = outcome["results"]
    else:
        if not outcome.ok:
            return ("unschedulable", outcome.reason)
        allocations = outcome.allocations
    claims = []
    for a in allocations:
        claims.append(
            tuple(
                (
                    r["request"],
                    r["driver"],
                    r["pool"],
                    r["device"],
                    bool(r.get("adminAccess")),
                    "shareID" in r,
                    tuple(sorted((k, canonical(v)) for k, v in (r.get("consumedCapacity") or {}).items())),
                )
                for r in a["devices"]["results"]
            )
        )
    return ("allocated", tuple(claims))


def _sim(case: dict[str, Any], repeat: int, shared: bool = True) -> tuple[tuple, float]:
    """The sim's decision and mean CPU time; `shared=False` evaluates every selector afresh per call
    (as upstream's Allocate does) instead of reusing outcomes cached by device content."""
    feats = _features(case["features"])
    classes = {c["metadata"]["name"]: c for c in case["classes"]}
    outcome: Any = None
    t = time.process_time()  # one reading around the batch: reading the CPU clock costs ~10 us
    for _ in range(repeat):
        state = AllocatedState(feats.consumable_capacity)
        for c in case["existing"]:
            state.set_claim(
                f"{c['metadata'].get('namespace', '')}/{c['metadata']['name']}", c["status"]["allocation"]
            )
        try:
            outcome = allocate(
                case["claims"],
                case["node"],
                case["slices"],
                classes,
                state,
                feats,
                SelectorCache(shared=shared),
                new_uuid=uuids(7),
            )
        except AllocatorError as exc:
            outcome = exc
    seconds = (time.process_time() - t) / repeat
    # Outside the timing: the harness's time does not include turning its result into output either.
    return _decision(outcome), seconds


def _cases(count: int) -> list[tuple[str, dict[str, Any]]]:
    cases = []
    for path in sorted(REPROS.glob("R*.yaml")):
        r = yaml.safe_load(path.read_text())
        cases.append(
            (
                path.stem,
                {
                    "node": {
                        "metadata": {"name": r["node"]["name"], "labels": r["node"].get("labels") or {}}
                    },
                    "classes": r.get("deviceClasses") or [],
                    "slices": r.get("resourceSlices") or [],
                    "existing": r.get("existingAllocations") or [],
                    "claims": r["claims"],
                    "features": r.get("featureGates") or {},
                },
            )
        )
    for seed in range(count):
        sc = generate(seed)
        cases.append(
            (
                f"seed {seed}",
                {
                    "node": NODE,
                    "classes": list(CLASSES.values()),
                    "slices": sc.slices,
                    "existing": sc.existing,
                    "claims": sc.claims,
                    "features": dict.fromkeys(GATES, True),
                },
            )
        )
    return cases


def _build(workdir: Path) -> Path | None:
    go = shutil.which("go")
    if go is None:
        print("bench_allocator_upstream: skipped, no Go toolchain on PATH")
        return None
    binary = workdir / "upstream_allocator"
    done = subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=ROOT / "benchmarks" / "upstream_allocator",
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        print(f"bench_allocator_upstream: skipped, the Go harness did not build:\n{done.stderr[-2000:]}")
        return None
    return binary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="random scenarios (plus every repro)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per scenario, both sides")
    parser.add_argument("--show", type=int, default=8, help="disagreements to print")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-upstream-") as tmp:
        binary = _build(Path(tmp))
        if binary is None:
            return 0
        cases = _cases(args.count)
        nodes, slices, existing = _large_cluster()
        large = {
            "node": nodes[0],
            "nodes": nodes,
            "classes": list(CLASSES.values()),
            "slices": slices,
            "existing": existing,
            "claims": [POD_CLAIM],
            "features": dict.fromkeys(GATES, True),
            "repeat": 5,
        }
        lines = "".join(json.dumps({**c, "repeat": args.repeat}) + "\n" for _, c in cases)
        lines += json.dumps(large) + "\n"
        done = subprocess.run([str(binary)], input=lines, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            print(f"bench_allocator_upstream: the harness failed: {done.stderr[-2000:]}")
            return 1
        outputs = [json.loads(line) for line in done.stdout.splitlines()]
    agree, differ, go_ns, sim_s, fresh_s = 0, [], [], [], []
    cache_differs = 0  # the sim's own decision with and without outcomes shared across calls
    for (name, case), out in zip(cases, outputs[:-1], strict=True):
        mine, seconds = _sim(case, args.repeat)
        go_ns.append(out["nanos"])
        sim_s.append(seconds)
        fresh, fresh_seconds = _sim(case, args.repeat, shared=False)
        fresh_s.append(fresh_seconds)
        cache_differs += fresh != mine
        if mine == _decision(out):
            agree += 1
        else:
            differ.append((name, mine, _decision(out)))
    print(f"bench_allocator_upstream: {len(cases)} scenarios ({len(cases) - args.count} repros)")
    print(
        f"  decisions agreeing with upstream: {agree} ({100 * agree / len(cases):.1f}%), differing: "
        f"{len(differ)}"
    )
    print(f"  sim decisions that change when nothing is shared across calls: {cache_differs}")
    for name, mine, theirs in differ[: args.show]:
        print(f"  - {name}:\n      sim:      {str(mine)[:300]}\n      upstream: {str(theirs)[:300]}")
    go_ms = statistics.median(go_ns) / 1e6
    sim_ms = statistics.median(sim_s) * 1000
    fresh_ms = statistics.median(fresh_s) * 1000
    print(
        f"  per-scenario median (state + Allocate): upstream {go_ms:.3f} ms, sim {sim_ms:.3f} ms "
        f"({sim_ms / go_ms:.1f}x; selector outcomes cached by device content, as the sim runs), "
        f"{fresh_ms:.3f} ms ({fresh_ms / go_ms:.1f}x; every selector evaluated per call)"
    )
    state_ms, filter_ms, fits = large_case(nodes, slices, existing)
    go_large = outputs[-1]["nanos"] / 1e6
    print(
        f"  large case ({len(nodes)} nodes, {len(existing)} shares): upstream {go_large:.1f} ms "
        f"({outputs[-1]['outcome']}), sim {state_ms + filter_ms:.1f} ms (fits on {fits} nodes; "
        f"{(state_ms + filter_ms) / go_large:.1f}x)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
