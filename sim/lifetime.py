"""Child processes that die with their parent, whatever kills the parent.

Two mechanisms, because each alone has a hole:

- ``PR_SET_PDEATHSIG`` (Linux): the kernel signals the child when the *thread* that forked it exits.
  Set in the child between fork and exec; a parent that died before that moment is caught by checking
  ``getppid()`` afterwards. It covers SIGKILL of the parent, but fires early when a short-lived
  thread spawned the child, so callers spawn from threads that live as long as the child.
- A pipe whose write end only the parent holds: when the parent process is gone (all its threads),
  the child reads EOF. The sim uses this (``--exit-with-fd``) to shut down cleanly and remove the run's
  work dir when the suite that started it is killed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
_libc: ctypes.CDLL | None = None
with_pdeathsig_supported = os.uname().sysname == "Linux"


def _prctl() -> Callable[..., int] | None:
    global _libc
    if not with_pdeathsig_supported:
        return None
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc.prctl


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` for subprocess.Popen: the child gets ``sig`` when this process (precisely: the
    forking thread) dies. None where the platform has no PDEATHSIG."""
    prctl = _prctl()  # resolved here, in the parent: the child only calls it
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died between fork and prctl: nobody will signal us
            os._exit(1)

    return preexec


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
