"""A directory watcher on Linux inotify (through libc with ctypes), so waiting for sockets costs no CPU."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import select
import struct
import threading
from collections.abc import Callable
from pathlib import Path

IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_DELETE_SELF = 0x00000400
IN_CLOEXEC = 0o2000000
IN_NONBLOCK = 0o4000

_EVENT_HEADER = struct.Struct("iIII")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class DirectoryWatcher:
    """Calls ``on_change(name, created)`` for files created or removed in one directory.

    ``created`` is True for create/moved-in and False for delete/moved-out. Existing entries are
    reported as created once at start, so a caller never misses a socket that appeared before it watched.
    The thread blocks in select() on the inotify fd and a stop pipe: no polling.
    """

    def __init__(self, directory: Path, on_change: Callable[[str, bool], None], name: str = "dirwatch"):
        self._dir = directory
        self._on_change = on_change
        self._fd = _libc.inotify_init1(IN_CLOEXEC | IN_NONBLOCK)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_init1 failed for {directory}")
        mask = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF
        if _libc.inotify_add_watch(self._fd, os.fsencode(directory), mask) < 0:
            err = ctypes.get_errno()
            os.close(self._fd)
            raise OSError(err, f"inotify_add_watch failed for {directory}")
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> DirectoryWatcher:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            for entry in sorted(os.listdir(self._dir)):
                self._on_change(entry, True)
            while True:
                ready, _, _ = select.select([self._fd, self._stop_r], [], [])
                if self._stop_r in ready:
                    return
                try:
                    data = os.read(self._fd, 64 * 1024)
                except OSError as e:
                    if e.errno == errno.EAGAIN:
                        continue
                    raise
                for name, mask in _parse(data):
                    if mask & IN_DELETE_SELF:
                        return
                    if name:
                        self._on_change(name, bool(mask & (IN_CREATE | IN_MOVED_TO)))
        finally:
            os.close(self._fd)
            os.close(self._stop_r)

    def stop(self) -> None:
        if self._stop_w < 0:
            return
        os.write(self._stop_w, b"x")
        if self._thread.ident is None:  # never started: its finally block will not close these
            os.close(self._fd)
            os.close(self._stop_r)
        elif self._thread.is_alive():
            self._thread.join(timeout=10)
        os.close(self._stop_w)
        self._stop_w = -1


def _parse(data: bytes) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    offset = 0
    while offset + _EVENT_HEADER.size <= len(data):
        _wd, mask, _cookie, length = _EVENT_HEADER.unpack_from(data, offset)
        offset += _EVENT_HEADER.size
        raw = data[offset : offset + length].split(b"\0", 1)[0]
        offset += length
        out.append((os.fsdecode(raw), mask))
    return out
