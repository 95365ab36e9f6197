"""``--cluster local --nodes real``: upstream's kubelet and containerd v2 run the pods, and the suite's
verdicts are the ones it gives on sim. The reference driver, installed by its Helm chart as a DaemonSet
(as on kind), passes every capability; the mutants that matter most (run through the launch contract)
fail the capability they break for the same reason: e.g. the one whose prepare refuses a second claim
fails sharing in the driver's own words, which here come from a real kubelet's
FailedPrepareDynamicResources event. Nothing the run made is left afterwards, even when the
suite is SIGKILLed: no process, bridge, cgroup, mount point or directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from localkube import versions
from localkube.nodes import CGROUP_FS, NODE_PATHS
from tests.conformance.test_suite_bites import run_suite
from tests.local.test_local_verdicts import CHOSEN
from tests.support.suite import assert_fails_for, check_outcomes

REPO = Path(__file__).resolve().parents[2]
REAL_TIMEOUT = 600


@pytest.fixture(scope="module")
def real_release(local_release: str) -> str:
    missing = versions.missing_node_binaries(local_release)
    assert not missing, f"node binaries missing ({', '.join(missing)}); run make kube-bin first"
    return local_release


def _leftovers(host_dirs_before: set[str]) -> list[str]:
    """What a real-node run could leave on the host, if it left anything."""
    found = []
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    found += [f"bridge {line.split(':')[1].strip()}" for line in links.splitlines() if ": gsc" in line]
    for h in CGROUP_FS.iterdir():
        found += [f"cgroup {d}" for d in h.glob("gsc-*") if d.is_dir()]
    found += [f"host dir {p}" for p in NODE_PATHS if os.path.lexists(p) and p not in host_dirs_before]
    for table in ("mangle", "nat", "filter"):
        rules = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True).stdout
        found += [f"iptables {table}: {r}" for r in rules.splitlines() if "KUBE-" in r]
    procs = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    found += [
        f"process {a}" for a in procs.splitlines() if "localkube.noderun" in a or "containerd-shim" in a
    ]
    return found


def _host_dirs() -> set[str]:
    return {p for p in NODE_PATHS if os.path.lexists(p)}


@pytest.mark.timeout(REAL_TIMEOUT + 300)
def test_reference_driver_passes_on_real_nodes_as_on_sim(
    tmp_path: Path, real_release: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _host_dirs()
    args = ("--gpus=mixed",)
    sim, _, sim_wall = run_suite(tmp_path / "sim", "--nodes=node-1,node-2", *args, timeout=180)
    real, out, wall = run_suite(
        tmp_path / "real",
        "--cluster=local",
        f"--kube-version={real_release}",
        "--nodes=real",
        *args,
        timeout=REAL_TIMEOUT,
    )
    assert real["provider"] == "local" and real["simulated"] is False, out[-3000:]
    assert real["cluster"].startswith(f"real Kubernetes v{real_release}, local processes"), real["cluster"]
    assert real["pod_image"].startswith("localhost/gpu-share-conformance/pod:busybox-")
    assert {c: v["verdict"] for c, v in real["capabilities"].items()} == {
        c: v["verdict"] for c, v in sim["capabilities"].items()
    }, out[-3000:]
    assert check_outcomes(real) == check_outcomes(sim), out[-3000:]
    assert real["verdict"] == "pass", out[-3000:]
    assert _leftovers(before) == []
    with capsys.disabled():
        print(f"\nreference driver, whole suite: sim {sim_wall:.1f}s, local real nodes {wall:.1f}s wall")


@pytest.mark.timeout(REAL_TIMEOUT + 60)
@pytest.mark.parametrize(
    ("args", "capability", "reason"), [m[1:] for m in CHOSEN], ids=[m[0] for m in CHOSEN]
)
def test_mutant_fails_on_real_nodes_as_on_sim(
    tmp_path: Path,
    real_release: str,
    args: list[str],
    capability: str,
    reason: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    report, output, wall = run_suite(
        tmp_path,
        "--cluster=local",
        f"--kube-version={real_release}",
        "--nodes=real",
        *args,
        timeout=REAL_TIMEOUT,
    )
    assert_fails_for(report, output, capability, reason)
    assert report["verdict"] == "fail" and report["simulated"] is False
    with capsys.disabled():
        print(f"\n{capability} mutant on local real nodes: {wall:.1f}s wall")


@pytest.mark.timeout(400)
def test_a_killed_suite_leaves_nothing_of_its_real_nodes(real_release: str) -> None:
    before = _host_dirs()
    tmp = Path(tempfile.mkdtemp(prefix="lr-", dir="/tmp"))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "conformance",
            "--cluster=local",
            f"--kube-version={real_release}",
            "--nodes=real",
            f"--report-dir={tmp / 'report'}",
            "-m",
            "sharing",
        ],
        cwd=REPO,
        env={**os.environ, "TMPDIR": str(tmp)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while sum(x.startswith("bridge") for x in _leftovers(before)) < 2:  # both nodes are up
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-3000:]
        time.sleep(0.5)
    work = [d for d in tmp.iterdir() if d.name.startswith("gsc-")]
    assert work, "the run made no work dir"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    deadline = time.monotonic() + 150  # a node that was starting may first wait out its kubelet
    while time.monotonic() < deadline and (_leftovers(before) or work[0].exists()):
        time.sleep(0.5)  # the runner's own cleanup is the signal; this only bounds the look
    assert _leftovers(before) == []
    assert not work[0].exists(), sorted(str(p) for p in work[0].rglob("*"))[:20]
    subprocess.run(["rm", "-rf", str(tmp)], check=False)
