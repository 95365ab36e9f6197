"""Observation by watch: wait for a state, or hold a state for a settle window.

Every wait lists once, then watches from that resourceVersion, re-evaluating a predicate over the
objects seen. Each wait has a bound and, when it gives up, says what it waited for and what it saw
last. Nothing here sleeps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

import urllib3
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from conformance.kube import items

T = TypeVar("T")
State = dict[str, dict[str, Any]]


class WaitTimeout(AssertionError):
    """A bounded wait ended without the awaited state."""


class SettleViolation(AssertionError):
    """A state that had to hold for the settle window changed."""


def key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name')}" if ns else str(meta.get("name"))


def _stream(list_fn: Callable[..., Any], state: State, rv: str, remaining: float,
            kwargs: dict[str, Any]) -> Any:
    """Yield after each event applied to ``state``; returns at the server's or client's timeout."""
    w = watch.Watch()
    try:
        for event in w.stream(list_fn, resource_version=rv, timeout_seconds=max(1, math.ceil(remaining)),
                              _request_timeout=(10, remaining + 5), deserialize=False,
                              allow_watch_bookmarks=False, **kwargs):
            etype, obj = event.get("type"), event.get("object") or {}
            if etype in ("ADDED", "MODIFIED"):
                state[key(obj)] = obj
            elif etype == "DELETED":
                state.pop(key(obj), None)
            else:
                continue
            yield (obj.get("metadata") or {}).get("resourceVersion", rv)
    except KeyError:
        # The client raises KeyError on ERROR events when deserialize=False (e.g. 410 Gone): relist.
        yield None
    except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ProtocolError):
        return
    finally:
        w.stop()


def wait_for(list_fn: Callable[..., Any], check: Callable[[State], T | None], *, timeout: float,
             what: str, describe: Callable[[State], str] | None = None, **kwargs: Any) -> T:
    """Return ``check(state)`` as soon as it is not None; raise WaitTimeout after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    state: State = {}

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
        for new_rv in _stream(list_fn, state, rv, remaining, kwargs):
            if new_rv is None:
                rv = relist()
                break
            rv = new_rv
            result = check(state)
            if result is not None:
                return result
            if time.monotonic() >= deadline:
                break


def hold(list_fn: Callable[..., Any], violation: Callable[[State], str | None], *, window: float,
         what: str, **kwargs: Any) -> State:
    """Watch for ``window`` seconds; raise SettleViolation if ``violation(state)`` ever says why."""
    deadline = time.monotonic() + window
    objs, rv = items(list_fn, **kwargs)
    state: State = {key(o): o for o in objs}
    while True:
        why = violation(state)
        if why:
            raise SettleViolation(f"{what} did not hold: {why}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return state
        try:
            for new_rv in _stream(list_fn, state, rv, remaining, kwargs):
                if new_rv is None:
                    objs, rv = items(list_fn, **kwargs)
                    state = {key(o): o for o in objs}
                    break
                rv = new_rv
                why = violation(state)
                if why:
                    raise SettleViolation(f"{what} did not hold: {why}")
                if time.monotonic() >= deadline:
                    break
        except ApiException as exc:
            raise SettleViolation(f"{what}: the watch failed ({exc.status} {exc.reason})") from exc
