"""Nothing a local run started outlives it, however it ends: the control plane's processes (parent-death
signal) and the sim's nodes (the suite's pipe) die with a SIGKILLed suite, and the work dir goes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from conformance.providers.sim import processes_using

REPO = Path(__file__).resolve().parents[2]


def _control_plane_pids(root: Path) -> list[int]:
    return [p for p in processes_using(root) if p != os.getpid()]


def test_a_killed_suite_leaves_no_process_and_no_directory(local_release: str) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="lt-", dir="/tmp"))  # the run's TMPDIR: its gsc-* work dir lands here
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "conformance",
            "--cluster=local",
            f"--kube-version={local_release}",
            "--nodes=node-1",
            f"--report-dir={tmp / 'report'}",
            "-m",
            "sharing",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # until the control plane serves and the nodes' driver registered
        seen.append(line)
        if "control plane: real Kubernetes" in line:
            break
    else:
        raise AssertionError("".join(seen)[-3000:])
    work = [d for d in tmp.iterdir() if d.name.startswith("gsc-")]
    assert work, "the run made no work dir"
    assert _control_plane_pids(work[0]), "nothing runs under the work dir, so the test proves nothing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (_control_plane_pids(work[0]) or work[0].exists()):
        time.sleep(0.5)  # the orphans' own exits are the signal; this only bounds the look
    assert _control_plane_pids(work[0]) == [], "processes outlived the killed suite"
    assert not work[0].exists(), f"{work[0]} outlived the killed suite"
    proc.stdout.close()
    subprocess.run(["rm", "-rf", str(tmp)], check=True)
