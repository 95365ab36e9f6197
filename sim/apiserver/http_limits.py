"""Bounds on what one HTTP connection may cost the sim: bytes, seconds and threads.

- one body limit however the body is framed (Content-Length or chunked), checked before it is read;
- strict framing: a Content-Length that is not a decimal number, both framings at once, or a bad chunk
  size is a 400 and the connection is closed (its next request could not be found);
- deadlines, not just per-read timeouts: a request's line, headers and body must arrive within a fixed
  time however slowly the bytes trickle in, and a keep-alive connection is closed when idle;
- a bounded number of connections served at once (each holds one thread); beyond it a new connection
  waits briefly for a slot, then is closed unanswered (it has not even said hello: the answer would have
  to be TLS, and a handshake is what the slots bound).
Figures follow kube-apiserver's defaults where it has one (3 MiB bodies, 32 s to read headers, 90 s idle).
"""

from __future__ import annotations

import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message

from .errors import ApiError


@dataclass(frozen=True)
class Limits:
    max_body: int = 3 * 1024 * 1024  # kube-apiserver's --max-request-bytes default
    max_header_bytes: int = 256 * 1024  # request line and headers together
    header_timeout: float = 32.0  # kube-apiserver's ReadHeaderTimeout
    request_timeout: float = 60.0  # from the first byte of a request to the last byte of its body
    idle_timeout: float = 90.0  # kube-apiserver's IdleTimeout for a keep-alive connection
    write_timeout: float = 60.0  # a client that reads nothing of a response (or a watch) is dropped
    max_connections: int = 256  # each holds a thread; watches hold theirs for as long as they run
    queue_wait: float = 1.0  # how long a connection beyond max_connections waits for a slot
    linger_bytes: int = 256 * 1024  # read (and dropped) after refusing a body, so the answer arrives
    max_depth: int = 100  # nesting of a JSON/YAML body; Kubernetes objects nest about 20 deep
    yaml_alias_budget: int = 100_000  # nodes that YAML aliases may add to a body by expansion


class HeaderTooLarge(Exception):
    pass


class DeadlineReader:
    """A buffered reader over the connection's socket where every recv waits at most until the current
    deadline (a slow sender cannot stretch it by sending a byte at a time). Stands in for the handler's
    rfile: readline/read/peek as http.server and http.client use them."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray()
        self._eof = False
        self._deadline: float | None = None
        self._budget: int | None = None  # bytes readline may still return (header phase)

    def set_deadline(self, deadline: float | None, header_budget: int | None = None) -> None:
        self._deadline = deadline
        self._budget = header_budget

    def _fill(self) -> bool:
        if self._eof:
            return False
        if self._deadline is not None:
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request did not arrive in time")
            self._sock.settimeout(left)
        data = self._sock.recv(65536)
        if not data:
            self._eof = True
            return False
        self._buf += data
        return True

    def peek(self, n: int = 1) -> bytes:
        while not self._buf and self._fill():
            pass
        return bytes(self._buf[:n])

    def readline(self, limit: int = -1) -> bytes:
        start = 0
        while True:
            end = self._buf.find(b"\n", start)
            if end >= 0:
                end += 1
                break
            if 0 <= limit <= len(self._buf):
                end = limit
                break
            start = len(self._buf)
            if not self._fill():
                end = len(self._buf)
                break
        if 0 <= limit < end:
            end = limit
        line = bytes(self._buf[:end])
        del self._buf[:end]
        if self._budget is not None:
            self._budget -= len(line)
            if self._budget < 0:
                raise HeaderTooLarge("the request line and headers are over the size limit")
        return line

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            while self._fill():
                pass
            n = len(self._buf)
        while len(self._buf) < n and self._fill():
            pass
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def discard(self, limit: int, quiet: float) -> None:
        """Read and drop up to `limit` bytes, until EOF, the deadline, or `quiet` seconds without data."""
        dropped = len(self._buf)
        self._buf = bytearray()
        overall = self._deadline
        try:
            while dropped < limit:
                now = time.monotonic()
                self._deadline = now + quiet if overall is None else min(overall, now + quiet)
                if not self._fill():
                    break
                dropped += len(self._buf)
                self._buf = bytearray()
        except (TimeoutError, OSError):
            pass
        finally:
            self._deadline = overall

    def peer_closed(self, max_buffered: int) -> bool:
        """Without waiting: has the client closed (or sent more than `max_buffered` bytes nobody asked
        for)? What did arrive stays buffered for the next request."""
        if self._eof:
            return True
        pending = isinstance(self._sock, ssl.SSLSocket) and self._sock.pending() > 0
        try:
            if not pending and not select.select([self._sock], [], [], 0)[0]:
                return False
            timeout = self._sock.gettimeout()
            self._sock.settimeout(0.0)
            try:
                data = self._sock.recv(65536)
            finally:
                self._sock.settimeout(timeout)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False  # a partial TLS record: nothing to say yet
        except (OSError, ValueError):
            return True
        if not data:
            self._eof = True
            return True
        self._buf += data
        return len(self._buf) > max_buffered

    def close(self) -> None:
        self._buf = bytearray()


def bad_framing(message: str) -> ApiError:
    return ApiError(400, "BadRequest", f"malformed request framing: {message}")


def too_large(limit: int) -> ApiError:
    return ApiError(413, "RequestEntityTooLarge", f"the request body is over the limit of {limit} bytes")


_DIGITS = re.compile(rb"^[0-9]+$")
_CHUNK_SIZE = re.compile(rb"^([0-9A-Fa-f]{1,16})[ \t]*(;[^\r\n]*)?\r?\n$")
MAX_CHUNK_LINE = 4096
MAX_TRAILER_LINES = 64


def header_lists(message: Message) -> dict[str, list[str]]:
    """Lower-case header name -> its values, made once per request (Message.get scans every header)."""
    out: dict[str, list[str]] = {}
    for name, value in message.raw_items():  # items() would run the email policy over every value
        out.setdefault(name.lower(), []).append(value.strip())
    return out


def content_length(headers: Mapping[str, list[str]], limit: int) -> int | None:
    """The declared body length (None when the body is chunked, 0 when absent). Raises 400 for a
    malformed framing and 413 when the length is over `limit`, before any of the body is read."""
    encodings = headers.get("transfer-encoding", [])
    lengths = headers.get("content-length", [])
    if encodings:
        if lengths:
            raise bad_framing("both Transfer-Encoding and Content-Length are set")
        codings = [c.strip().lower() for e in encodings for c in e.split(",")]
        if codings != ["chunked"]:
            raise bad_framing(f"Transfer-Encoding {', '.join(encodings)!r}: only 'chunked' is accepted")
        return None
    if not lengths:
        return 0
    values = {v.strip() for v in lengths}
    if len(values) != 1 or not _DIGITS.match(next(iter(values)).encode()):
        raise bad_framing(f"Content-Length {', '.join(lengths)!r} is not one decimal number of bytes")
    n = int(next(iter(values)))
    if n > limit:
        raise too_large(limit)
    return n


def read_body(reader: DeadlineReader, headers: Mapping[str, list[str]], limit: int) -> bytes:
    """The request body, whole, and never more than `limit` bytes of it held (413 beyond)."""
    n = content_length(headers, limit)
    if n is not None:
        data = reader.read(n)
        if len(data) < n:
            raise bad_framing(f"the connection closed after {len(data)} of {n} body bytes")
        return data
    chunks: list[bytes] = []
    total = 0
    while True:
        line = reader.readline(MAX_CHUNK_LINE + 1)
        m = _CHUNK_SIZE.match(line)
        if not m:
            raise bad_framing(f"bad chunk size line {line[:40]!r}")
        size = int(m.group(1), 16)
        if size == 0:
            break
        total += size
        if total > limit:
            raise too_large(limit)
        data = reader.read(size)
        if len(data) < size or reader.readline(3) not in (b"\r\n", b"\n"):
            raise bad_framing("a chunk is shorter than its size or not followed by CRLF")
        chunks.append(data)
    for _ in range(MAX_TRAILER_LINES):
        trailer = reader.readline(MAX_CHUNK_LINE + 1)
        if trailer in (b"\r\n", b"\n"):
            return b"".join(chunks)
        if not trailer or len(trailer) > MAX_CHUNK_LINE:
            break
    raise bad_framing("the chunked body does not end with an empty line")


class ConnectionSlots:
    """At most `limits.max_connections` connections served at once."""

    def __init__(self, limits: Limits) -> None:
        self._slots = threading.BoundedSemaphore(limits.max_connections)
        self._wait = limits.queue_wait

    def acquire(self) -> bool:
        return self._slots.acquire(timeout=self._wait)

    def release(self) -> None:
        self._slots.release()
