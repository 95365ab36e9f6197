"""Observation by watch: wait for a state, or hold a state for a settle window.

Every wait lists once, then watches from that resourceVersion, re-evaluating a predicate over the
objects seen. Each wait has a bound and, when it gives up, says what it waited for and what it saw
last. A wait over several resources (pods and their events) watches each in a thread of its own, so
that a signal on any of them is seen at once. Nothing here sleeps.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from conformance.kube import items

T = TypeVar("T")
State = dict[str, dict[str, Any]]
# A resource to watch: its list call (e.g. core.list_namespaced_event) and that call's arguments.
Source = tuple[Callable[..., Any], dict[str, Any]]


class WaitTimeout(AssertionError):
    """A bounded wait ended without the awaited state."""


class SettleViolation(AssertionError):
    """A state that had to hold for the settle window changed."""


class FinalSignal(AssertionError):
    """A wait ended early: what it saw means the awaited state can no longer come."""


def key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name')}" if ns else str(meta.get("name"))


class _Stream:
    """One watch request whose blocking read another thread can cut short (``close``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._resp: Any = None
        self.closed = False

    def close(self) -> None:
        with self._lock:
            self.closed = True
            resp = self._resp
        if resp is not None:
            _interrupt(resp)

    def events(
        self, list_fn: Callable[..., Any], rv: str, remaining: float, kwargs: dict[str, Any]
    ) -> Iterator[tuple[str, dict[str, Any]] | None]:
        """Yield each (type, object) of one watch request from ``rv``; None when the watch must be
        re-listed (410 Gone or another ERROR event). Returns at the server's or the client's timeout."""
        if self.closed:
            return
        try:
            resp = list_fn(
                watch=True,
                resource_version=rv,
                timeout_seconds=max(1, math.ceil(remaining)),
                allow_watch_bookmarks=False,
                _preload_content=False,
                _request_timeout=(10, remaining + 5),
                **kwargs,
            )
        except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ProtocolError):
            return
        with self._lock:
            self._resp = resp
            closed = self.closed
        try:
            if closed:
                return
            for line in iter_resp_lines(resp):
                if not line:
                    continue
                event = json.loads(line)
                etype, obj = event.get("type"), event.get("object") or {}
                if etype == "ERROR":
                    yield None
                    return
                if etype in ("ADDED", "MODIFIED", "DELETED"):
                    yield etype, obj
        except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ProtocolError, OSError, ValueError):
            # A timeout, a connection the server closed, or our own close(): the caller decides.
            return
        finally:
            with self._lock:
                self._resp = None
                cut = self.closed
            with contextlib.suppress(Exception):
                if cut:
                    resp.close()  # a connection whose read was shut down must not go back to the pool
                resp.release_conn()


def _apply(state: State, event: tuple[str, dict[str, Any]], rv: str) -> str:
    """Apply one watch event to ``state``; return the resourceVersion to resume from."""
    etype, obj = event
    if etype == "DELETED":
        state.pop(key(obj), None)
    else:
        state[key(obj)] = obj
    return (obj.get("metadata") or {}).get("resourceVersion", rv)


def _interrupt(resp: Any) -> None:
    """Make a read blocked on ``resp`` return now (urllib3 >= 2.3 has shutdown; else close the socket)."""
    with contextlib.suppress(Exception):
        if hasattr(resp, "shutdown"):
            resp.shutdown()
            return
        conn = getattr(resp, "connection", None)
        sock = getattr(conn, "sock", None)
        if sock is not None:
            import socket

            sock.shutdown(socket.SHUT_RDWR)


def wait_for(
    list_fn: Callable[..., Any],
    check: Callable[[State], T | None],
    *,
    timeout: float,
    what: str,
    describe: Callable[[State], str] | None = None,
    **kwargs: Any,
) -> T:
    """Return ``check(state)`` as soon as it is not None; raise WaitTimeout after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    state: State = {}
    stream = _Stream()

    def relist() -> str:
        objs, rv = items(list_fn, **kwargs)
        state.clear()
        state.update({key(o): o for o in objs})
        return rv

    rv = relist()
    while True:
        result = check(state)
        if result is not None:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            seen = describe(state) if describe else f"{len(state)} object(s)"
            raise WaitTimeout(f"gave up after {timeout:.0f}s waiting for {what}; last seen: {seen}")
        for event in stream.events(list_fn, rv, remaining, kwargs):
            if event is None:
                rv = relist()
                break
            rv = _apply(state, event, rv)
            result = check(state)
            if result is not None:
                return result
            if time.monotonic() >= deadline:
                break


class _Feed(threading.Thread):
    """List once (in the caller, so that API errors reach it), then watch in this thread, applying
    each event to ``state`` under ``cond`` and waking the waiter."""

    def __init__(self, name: str, source: Source, cond: threading.Condition, deadline: float) -> None:
        super().__init__(name=f"watch:{name}", daemon=True)
        self.list_fn, self.kwargs = source
        self.cond = cond
        self.deadline = deadline
        self.state: State = {}
        self.error: BaseException | None = None
        self._stream = _Stream()
        self._rv = self._relist()

    def _relist(self) -> str:
        objs, rv = items(self.list_fn, **self.kwargs)
        with self.cond:
            self.state.clear()
            self.state.update({key(o): o for o in objs})
            self.cond.notify_all()
        return rv

    def run(self) -> None:
        try:
            while not self._stream.closed and time.monotonic() < self.deadline:
                for event in self._stream.events(
                    self.list_fn, self._rv, self.deadline - time.monotonic(), self.kwargs
                ):
                    if event is None:
                        self._rv = self._relist()
                        break
                    with self.cond:
                        self._rv = _apply(self.state, event, self._rv)
                        self.cond.notify_all()
        except BaseException as exc:  # an API error: the waiter re-raises it
            if not self._stream.closed:
                with self.cond:
                    self.error = exc
                    self.cond.notify_all()

    def stop(self) -> None:
        self._stream.close()


def wait_for_all(
    sources: Mapping[str, Source],
    check: Callable[[Mapping[str, State]], T | None],
    *,
    timeout: float,
    what: str,
    describe: Callable[[Mapping[str, State]], str] | None = None,
) -> T:
    """``wait_for`` over several resources at once: ``check`` sees one State per source name and is
    re-evaluated after every event on any of them. The watches end with the wait."""
    deadline = time.monotonic() + timeout
    cond = threading.Condition()
    feeds: dict[str, _Feed] = {}
    try:
        for name, source in sources.items():
            feeds[name] = _Feed(name, source, cond, deadline)
        for feed in feeds.values():
            feed.start()
        states = {name: feed.state for name, feed in feeds.items()}
        with cond:
            while True:
                for feed in feeds.values():
                    if feed.error is not None:
                        raise feed.error
                result = check(states)
                if result is not None:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = (
                        describe(states)
                        if describe
                        else ", ".join(f"{len(s)} {n}" for n, s in states.items())
                    )
                    raise WaitTimeout(f"gave up after {timeout:.0f}s waiting for {what}; last seen: {seen}")
                cond.wait(remaining)
    finally:
        for feed in feeds.values():
            feed.stop()
        for feed in feeds.values():
            if feed.is_alive():
                feed.join(timeout=15)


def hold(
    list_fn: Callable[..., Any],
    violation: Callable[[State], str | None],
    *,
    window: float,
    what: str,
    **kwargs: Any,
) -> State:
    """Watch for ``window`` seconds; raise SettleViolation if ``violation(state)`` ever says why."""
    deadline = time.monotonic() + window
    objs, rv = items(list_fn, **kwargs)
    state: State = {key(o): o for o in objs}
    stream = _Stream()
    while True:
        why = violation(state)
        if why:
            raise SettleViolation(f"{what} did not hold: {why}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return state
        try:
            for event in stream.events(list_fn, rv, remaining, kwargs):
                if event is None:
                    objs, rv = items(list_fn, **kwargs)
                    state = {key(o): o for o in objs}
                    break
                rv = _apply(state, event, rv)
                why = violation(state)
                if why:
                    raise SettleViolation(f"{what} did not hold: {why}")
                if time.monotonic() >= deadline:
                    break
        except ApiException as exc:
            raise SettleViolation(f"{what}: the watch failed ({exc.status} {exc.reason})") from exc
