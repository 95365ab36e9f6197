"""Supervision of the node's driver process (sim/kubelet/driverproc.py), with a stand-in process."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from sim.kubelet.driverproc import DriverSupervisor


@pytest.fixture
def supervisor(tmp_path):
    exits: list[int] = []
    # A stand-in for the driver: a process that runs until it is signalled.
    argv = [sys.executable, "-c", "import time; time.sleep(600)"]
    sup = DriverSupervisor(
        argv,
        log_path=tmp_path / "driver.log",
        pid_path=tmp_path / "driver.pid",
        cwd=tmp_path,
        env=dict(os.environ),
        on_exit=exits.append,
        name="stand-in",
    ).start()
    sup.exits = exits
    try:
        yield sup
    finally:
        sup.stop()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_crashed_driver_is_restarted_and_its_pid_file_follows(supervisor, tmp_path):
    first = supervisor.wait_started(0, timeout=10)
    assert int((tmp_path / "driver.pid").read_text()) == first
    supervisor.kill(signal.SIGKILL)
    second = supervisor.wait_started(1, timeout=10)
    assert second != first and not alive(first)
    assert int((tmp_path / "driver.pid").read_text()) == second
    assert supervisor.exit_codes == [-signal.SIGKILL]
    assert supervisor.exits == [-signal.SIGKILL]  # the kubelet is told, to schedule the slice wipe


def test_restart_sends_sigterm_and_starts_a_new_driver(supervisor):
    first = supervisor.wait_started(0, timeout=10)
    supervisor.restart()
    assert supervisor.wait_started(1, timeout=10) != first
    assert supervisor.exit_codes == [-signal.SIGTERM]


def test_paused_driver_stays_down_until_resumed(supervisor):
    supervisor.wait_started(0, timeout=10)
    supervisor.pause()
    assert supervisor.pid is None and supervisor.starts == 1
    with pytest.raises(RuntimeError, match="is not running"):
        supervisor.kill()
    supervisor.resume()
    supervisor.wait_started(1, timeout=10)
    assert supervisor.pid is not None


def test_stop_leaves_no_driver_process(supervisor):
    pid = supervisor.wait_started(0, timeout=10)
    supervisor.stop()
    assert not alive(pid)
    assert supervisor.pid is None
