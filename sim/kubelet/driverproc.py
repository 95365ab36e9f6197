"""Supervision of one driver process per node, as a DaemonSet would keep the driver pod running."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

_RESTART_BACKOFF_S = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0)
# A driver that stayed up this long is healthy again: its next crash restarts it at once.
_HEALTHY_AFTER_S = 30.0
STOP_GRACE_S = 10.0


class DriverSupervisor:
    def __init__(
        self,
        argv: list[str],
        *,
        log_path: Path,
        pid_path: Path,
        cwd: Path,
        env: dict[str, str],
        on_exit: Callable[[int], None] | None = None,
        name: str = "driver",
    ):
        self.argv = argv
        self._log_path = log_path
        self._pid_path = pid_path
        self._cwd = cwd
        self._env = env
        self._on_exit = on_exit or (lambda code: None)
        self._name = name
        self._cond = threading.Condition()
        self._proc: subprocess.Popen[bytes] | None = None
        self._starts = 0
        self._stopping = False
        self._restart_now = False
        self._paused = False
        self._thread = threading.Thread(target=self._run, name=f"supervise:{name}", daemon=True)
        self.exit_codes: list[int] = []

    # -- public ----------------------------------------------------------------------------------------
    def start(self) -> DriverSupervisor:
        self._thread.start()
        return self

    @property
    def pid(self) -> int | None:
        with self._cond:
            return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def starts(self) -> int:
        with self._cond:
            return self._starts

    def wait_started(self, after_starts: int, timeout: float) -> int:
        """Block until the process has been started more than ``after_starts`` times; returns its pid."""
        with self._cond:
            if not self._cond.wait_for(
                lambda: self._starts > after_starts and self._proc is not None, timeout=timeout
            ):
                raise TimeoutError(
                    f"driver {self._name} was not (re)started within {timeout:.0f}s (see {self._log_path})"
                )
            assert self._proc is not None
            return self._proc.pid

    def kill(self, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to the running driver (a crash, for tests); the supervisor restarts it."""
        with self._cond:
            if self._proc is None or self._proc.poll() is not None:
                raise RuntimeError(f"driver {self._name} is not running")
            pid = self._proc.pid
        os.killpg(pid, sig)
        return pid

    def restart(self) -> None:
        """Stop the driver with SIGTERM and start a new one at once (a rolling restart)."""
        with self._cond:
            self._restart_now = True
            proc = self._proc
        if proc is not None and proc.poll() is None:
            _terminate(proc, STOP_GRACE_S)

    def pause(self) -> None:
        """Stop the driver with SIGTERM and keep it stopped until resume() (a driver taken away)."""
        with self._cond:
            self._paused = True
            proc = self._proc
        if proc is not None and proc.poll() is None:
            _terminate(proc, STOP_GRACE_S)

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            proc = self._proc
            self._cond.notify_all()
        if proc is not None:
            _terminate(proc, STOP_GRACE_S)
        if self._thread.is_alive():
            self._thread.join(timeout=STOP_GRACE_S + 5)

    # -- loop ------------------------------------------------------------------------------------------
    def _run(self) -> None:
        crashes = 0
        while True:
            with self._cond:
                if self._stopping:
                    return
                self._restart_now = False
                self._log_path.parent.mkdir(parents=True, exist_ok=True)
                with open(self._log_path, "ab", buffering=0) as logf:
                    logf.write(f"=== sim kubelet: starting {' '.join(self.argv)}\n".encode())
                    try:
                        proc = subprocess.Popen(
                            self.argv,
                            cwd=self._cwd,
                            env=self._env,
                            stdin=subprocess.DEVNULL,
                            stdout=logf,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        )
                    except OSError as e:
                        logf.write(f"=== sim kubelet: cannot start driver: {e}\n".encode())
                        proc = None
                if proc is not None:
                    self._proc = proc
                    self._starts += 1
                    self._pid_path.write_text(f"{proc.pid}\n")
                self._cond.notify_all()
            started = time.monotonic()
            code = proc.wait() if proc is not None else 127
            with self._cond:
                self.exit_codes.append(code)
                self._cond.notify_all()
                if self._stopping:
                    return
                intentional = self._restart_now or self._paused
            log.warning(
                "driver %s exited with %s%s; its output is in %s",
                self._name,
                code,
                " (restart requested)" if intentional else "",
                self._log_path,
            )
            self._on_exit(code)
            with self._cond:
                # A paused driver stays down until resume() or stop().
                self._cond.wait_for(lambda: not self._paused or self._stopping)
                if self._stopping:
                    return
            if intentional or time.monotonic() - started > _HEALTHY_AFTER_S:
                crashes = 0
            delay = 0.0 if intentional else _RESTART_BACKOFF_S[min(crashes, len(_RESTART_BACKOFF_S) - 1)]
            crashes += 0 if intentional else 1
            with self._cond:
                # The stop signal ends the back-off early.
                if self._cond.wait_for(lambda: self._stopping, timeout=delay) if delay else self._stopping:
                    return


def _terminate(proc: subprocess.Popen[bytes], grace: float) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
