"""Crash safety: SIGKILL at random points across 1,000 prepare/unprepare/restart cycles leaves no leaked
CDI spec, loses no acknowledged claim, and always leaves a checkpoint that loads.

Each cycle forks a child from this already-imported process (spawning 1,000 interpreters would be far too
slow); the child restarts the driver's state from disk and runs random prepare/unprepare calls on the real
code path, reporting the start and end of each call over a pipe. The parent kills it with SIGKILL after a
random number of reports, restarts the state itself and checks it against what the child acknowledged.
"""

from __future__ import annotations

import os
import random
import signal
import tempfile
import uuid
from pathlib import Path
from typing import Any

from driver import cdi
from driver.checkpoint import Checkpoint
from driver.claims import ClaimRef
from driver.inventory import load_inventory
from driver.state import DeviceState
from tests.support.driver_harness import DRIVER, allocated_claim, result

CYCLES = 1000
INVENTORY = load_inventory("rtx3090x2", "node-1")


def _claims() -> dict[tuple[str, str], dict[str, Any]]:
    rng = random.Random(7)
    out = {}
    for i in range(6):
        claim = allocated_claim(
            f"c{i}",
            uid=str(uuid.UUID(int=rng.getrandbits(128))),
            results=[result(f"gpu-{i % 2}", share_id=str(uuid.UUID(int=rng.getrandbits(128))), memory="4Gi")],
        )
        out[("default", f"c{i}")] = claim
    return out


CLAIMS = _claims()
REFS = [ClaimRef("default", c["metadata"]["uid"], c["metadata"]["name"]) for c in CLAIMS.values()]


def _state(root: Path) -> DeviceState:
    state = DeviceState(
        driver_name=DRIVER,
        node_name="node-1",
        inventory=INVENTORY,
        cdi_dir=root / "cdi",
        state_dir=root / "state",
        read_claim=lambda ns, name: CLAIMS.get((ns, name)),
        list_claims=lambda: list(CLAIMS.values()),
    )
    state.restore()
    return state


def _child(root: Path, seed: int, out: int) -> None:
    rng = random.Random(seed)
    state = _state(root)
    while True:
        ref = rng.choice(REFS)
        op = rng.choice("PU")
        os.write(out, f"B {op} {ref.uid}\n".encode())
        if op == "P":
            res = state.prepare([ref])[ref.uid]
            assert not res.error, res.error
        else:
            assert state.unprepare([ref]) == {ref.uid: ""}
        os.write(out, f"E {op} {ref.uid}\n".encode())


def _run_and_kill(root: Path, seed: int, kill_after: int) -> list[str]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        os.close(r)
        try:
            _child(root, seed, w)
        finally:
            os._exit(3)
    os.close(w)
    lines: list[str] = []
    buf = b""
    with os.fdopen(r, "rb", buffering=0) as pipe:
        try:
            while len(lines) < kill_after:
                chunk = pipe.read(4096)
                if not chunk:
                    break  # the child died on its own: the status check below reports why
                buf += chunk
                *done, buf = buf.split(b"\n")
                lines += [d.decode() for d in done]
        finally:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
            f"the child exited by itself (status {status}) instead of being killed"
        )
        rest = pipe.read()
    lines += [d.decode() for d in (buf + rest).split(b"\n") if d]
    return lines


def test_kill_9_at_random_points_never_leaks_a_spec_or_loses_a_claim() -> None:
    rng = random.Random(20261127)
    # A process crash does not lose the page cache, so tmpfs exercises the same orderings as a disk.
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix="drvcrash", dir=base) as tmp:
        root = Path(tmp)
        prepared: dict[str, bool] = {ref.uid: False for ref in REFS}
        interrupted = recovered = 0
        for cycle in range(CYCLES):
            lines = _run_and_kill(root, seed=cycle, kill_after=rng.randint(0, 12))
            pending: set[str] = set()
            for line in lines:
                kind, op, uid = line.split()
                if kind == "B":
                    pending.add(uid)
                else:
                    pending.discard(uid)
                    prepared[uid] = op == "P"
            interrupted += bool(pending)
            # The checkpoint must load as the crash left it, before any repair.
            as_left = set(Checkpoint(root / "state").load())
            leftovers = (cdi.list_spec_claims(root / "cdi", DRIVER) ^ as_left) | {
                p.name for p in cdi.list_temp_files(root / "cdi", DRIVER)
            }
            recovered += bool(leftovers)

            state = _state(root)  # the restart
            in_checkpoint = set(state.prepared_claims())
            assert set(Checkpoint(root / "state").load()) == in_checkpoint
            assert cdi.list_spec_claims(root / "cdi", DRIVER) == in_checkpoint, f"cycle {cycle}: leaked spec"
            assert not cdi.list_temp_files(root / "cdi", DRIVER), f"cycle {cycle}: temp file left"
            assert not (root / "state" / ".checkpoint.json.tmp").exists()
            for uid, want in prepared.items():
                if uid in pending:
                    prepared[uid] = uid in in_checkpoint  # interrupted call: either outcome is allowed
                else:
                    assert (uid in in_checkpoint) == want, (
                        f"cycle {cycle}: claim {uid} acknowledged as {'prepared' if want else 'unprepared'}"
                    )
        # The kills really landed inside calls, and some inside the window that needs repair.
        assert interrupted > CYCLES // 2
        assert recovered > 0
        print(f"{CYCLES} cycles: {interrupted} kills interrupted a call, {recovered} needed repair")
