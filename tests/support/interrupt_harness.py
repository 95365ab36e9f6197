"""Interrupt a conformance run on sim at a chosen point with a chosen signal; report what outlived it.

    python tests/support/interrupt_harness.py POINT SIGNAL TARGET      # prints one JSON object

POINT: ``starting`` (the sim runs but does not serve yet), ``preflight`` (it serves; the suite waits for
the driver's slices), ``scenario`` (a pod process runs), ``teardown`` (the first scenario cleaned up
its pods, the second has not started). SIGNAL: SIGINT, SIGINTx2 (Ctrl-C, then Ctrl-C again one second
later, during the cleanup), SIGTERM or SIGKILL. TARGET: ``pytest`` or
``sim`` (the signal goes to the sim process instead).

The harness makes itself a child subreaper, so every process the run started, orphaned or not, stays
its descendant and can be counted. It runs in a process of its own (the tests call it as a script),
because a subreaper adopts every orphan below it. Leftovers: processes still alive ``GRACE_S`` after
pytest exited, ``gsc-*`` work dirs and sockets in the run's private TMPDIR. A false PASS: a report that
says PASS although the signal reached the run before its report was written.

Watching /proc for a point has no event to wait on, so the harness polls it (tests only).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PR_SET_CHILD_SUBREAPER = 36
POINT_TIMEOUT_S = 90.0
EXIT_TIMEOUT_S = 120.0
GRACE_S = 30.0
POLL_S = 0.05
FIRST = "test_released_capacity_lets_a_larger_claim_start"
SECOND = "test_sharers_from_two_namespaces_pack_one_gpu"
POINTS = ("starting", "preflight", "scenario", "teardown")
SIGNALS = ("SIGINT", "SIGINTx2", "SIGTERM", "SIGKILL")  # SIGINTx2: a second Ctrl-C while cleaning up
TARGETS = ("pytest", "sim")


def _procs() -> dict[int, tuple[int, list[str]]]:
    """pid -> (ppid, argv) for every live (non-zombie) process."""
    out: dict[int, tuple[int, list[str]]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if fields[0] == "Z":
                continue
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            out[int(entry.name)] = (int(fields[1]), [a for a in argv if a])
    return out


def descendants(root: int) -> dict[int, list[str]]:
    procs = _procs()
    out: dict[int, list[str]] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, argv) in procs.items():
            if ppid == parent and pid not in out:
                out[pid] = argv
                frontier.append(pid)
    return out


def _reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def _is_sim(argv: list[str]) -> bool:
    return argv[1:3] == ["-m", "sim"]


def _is_pod(argv: list[str]) -> bool:
    return bool(argv) and Path(argv[0]).name == "sleep"


def _work_dirs(tmp: Path) -> list[Path]:
    return sorted(tmp.glob("gsc-*"))


def _serving(tmp: Path) -> bool:
    for d in _work_dirs(tmp):
        with contextlib.suppress(OSError):
            if b"sim: serving" in (d / "sim.log").read_bytes():
                return True
    return False


def _sockets(tmp: Path) -> list[str]:
    found = []
    for path in tmp.rglob("*"):
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(path.lstat().st_mode):
                found.append(str(path))
    return found


def run_cell(point: str, sig_name: str, target: str) -> dict[str, object]:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    tmp = Path(tempfile.mkdtemp(prefix="gi-", dir="/tmp"))  # short: unix socket paths under it
    report_dir = tmp / "report"
    run_tmp = tmp / "t"
    run_tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(run_tmp)}
    selection = FIRST if point != "teardown" else f"{FIRST} or {SECOND}"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "conformance/scenarios",
        "-q",
        "-p",
        "no:cacheprovider",
        "--cluster=sim",
        "--nodes=node-1",
        f"--report-dir={report_dir}",
        "-k",
        selection,
    ]
    t0 = time.monotonic()
    log = open(tmp / "pytest.log", "wb")  # noqa: SIM115  (closed at the end of the cell)
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    result: dict[str, object] = {"point": point, "signal": sig_name, "target": target}
    seen_pod = False
    reached = False
    deadline = time.monotonic() + POINT_TIMEOUT_S
    victim = proc.pid
    while time.monotonic() < deadline and proc.poll() is None:
        kids = descendants(os.getpid())
        sims = [p for p, a in kids.items() if _is_sim(a)]
        pods = [p for p, a in kids.items() if _is_pod(a)]
        seen_pod = seen_pod or bool(pods)
        if point == "starting":
            reached = bool(sims) and not _serving(run_tmp)
        elif point == "preflight":
            reached = _serving(run_tmp) and not seen_pod
        elif point == "scenario":
            reached = bool(pods)
        else:
            reached = seen_pod and not pods
        if reached:
            if target == "sim":
                if not sims:
                    reached = False
                else:
                    victim = sims[0]
            if reached:
                break
        time.sleep(POLL_S)
    result["reached"] = reached
    report_before = (report_dir / "report.json").is_file()
    if reached:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, getattr(signal, sig_name.removesuffix("x2")))
    result["signal_at_s"] = round(time.monotonic() - t0, 2)
    if reached and sig_name.endswith("x2"):
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(1.0)
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, getattr(signal, sig_name.removesuffix("x2")))
    try:
        proc.wait(EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        result["pytest_hung"] = True
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    result["returncode"] = proc.returncode
    # Whatever outlives pytest has GRACE_S to go away on its own (the sim notices its parent died).
    grace_end = time.monotonic() + GRACE_S
    left = descendants(os.getpid())
    while left and time.monotonic() < grace_end:
        _reap()
        time.sleep(POLL_S)
        left = descendants(os.getpid())
    result["cleanup_s"] = round(time.monotonic() - t0 - float(result["signal_at_s"]), 2)
    result["leftover_processes"] = [" ".join(a)[:120] for a in left.values()]
    result["leftover_work_dirs"] = [d.name for d in _work_dirs(run_tmp)]
    result["leftover_sockets"] = _sockets(run_tmp)
    verdict = None
    with contextlib.suppress(OSError, ValueError):
        verdict = json.loads((report_dir / "report.json").read_text()).get("verdict")
    result["verdict"] = verdict
    result["false_pass"] = verdict == "pass" and reached and not report_before
    result["leftovers"] = len(left) + len(result["leftover_work_dirs"]) + len(result["leftover_sockets"])
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _reap()
    log.close()
    result["log_tail"] = (tmp / "pytest.log").read_text(errors="replace")[-1500:]
    shutil.rmtree(tmp, ignore_errors=True)
    return result


def main(argv: list[str]) -> int:
    point, sig_name, target = argv
    if point not in POINTS or sig_name not in SIGNALS or target not in TARGETS:
        print(
            f"usage: interrupt_harness.py {{{'|'.join(POINTS)}}} {{{'|'.join(SIGNALS)}}} "
            f"{{{'|'.join(TARGETS)}}}",
            file=sys.stderr,
        )
        return 2
    print(json.dumps(run_cell(point, sig_name, target)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
