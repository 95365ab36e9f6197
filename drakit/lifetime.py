"""A child that dies with its parent, whatever kills the parent.

The parent holds the write end of a pipe; the child watches the read end. When the parent process is
gone (all its threads, however it died), the child reads EOF. Unlike a parent-death signal, EOF waits
until the child is ready to act on it (a signal during the child's start-up would kill it before it
could clean up), and it needs no code between fork and exec, which is unsafe in a process that runs
gRPC (its fork handlers break the child). The sim uses it (``--exit-with-fd``) to stop its drivers and
pods and remove the suite's work dir when the suite that started it is killed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


def exit_when_fd_closes(fd: int, on_close: Callable[[], None]) -> threading.Thread:
    """Call ``on_close`` once ``fd`` (the read end of the parent's pipe) reads EOF: the parent is gone."""

    def watch() -> None:
        try:
            while os.read(fd, 4096):
                pass  # the parent never writes; data is ignored
        except OSError as exc:
            log.warning("parent pipe %d failed (%s); treating the parent as gone", fd, exc)
        finally:
            os.close(fd)
        on_close()

    t = threading.Thread(target=watch, name="parent-watch", daemon=True)
    t.start()
    return t


def parent_pipe() -> tuple[int, int]:
    """(read end for the child, write end the parent keeps). The write end is close-on-exec, so no other
    child inherits it and keeps the pipe open after the parent died."""
    r, w = os.pipe()
    os.set_inheritable(w, False)
    return r, w


class StopSignal:
    """When to stop: SIGINT, SIGTERM or SIGHUP, or ``set()``. Signals reach it through
    ``signal.set_wakeup_fd`` (written by the C-level handler) rather than an Event set in a Python
    handler: that handler runs in the main thread between bytecodes, and if it lands while the main thread
    holds the Event's own lock (inside Event.wait), setting the Event deadlocks and the signal is lost.
    ``fileno()`` is readable once it is set, for a loop that also waits on other descriptors."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._w, False)
        signal.set_wakeup_fd(self._w)
        for sig in self.SIGNALS:
            signal.signal(sig, lambda *_: None)  # the wakeup fd carries it: a handler must take no lock
        self._set = False

    def set(self) -> None:
        self._set = True
        with contextlib.suppress(BlockingIOError):
            os.write(self._w, b"\0")

    def is_set(self) -> bool:
        return self._set

    def wait(self) -> None:
        os.read(self._r, 1)  # a signal's byte or set()'s
        self._set = True

    def fileno(self) -> int:
        return self._r
