"""Watch streams: each Watch gets the store's events for its resources, filtered by namespace and
selectors, in resourceVersion order."""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from .objects import clone


class Event(NamedTuple):
    type: str  # "ADDED" | "MODIFIED" | "DELETED"
    resource: str
    object: dict[str, Any]


@dataclass(frozen=True)
class Record:
    rv: int
    type: str
    resource: str
    obj: dict[str, Any]
    old: dict[str, Any] | None


class Watch:
    """A stream of events for some resources. get(timeout) -> Event | None; close() ends it."""

    def __init__(
        self,
        unregister: Callable[[Watch], None],
        resources: set[str],
        predicates: dict[str, Callable[[dict], bool] | None],
        namespace: str | None,
    ) -> None:
        self._unregister = unregister
        self.resources = resources
        self._predicates = predicates
        self._namespace = namespace
        self._queue: queue.SimpleQueue[Event | None] = queue.SimpleQueue()
        self.closed = False
        self.last_rv = 0

    def _matches(self, resource: str, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        if self._namespace and obj["metadata"].get("namespace") != self._namespace:
            return False
        pred = self._predicates.get(resource)
        return pred is None or pred(obj)

    def _offer(self, rec: Record) -> None:
        if self.closed or rec.resource not in self.resources:
            return
        new_ok = self._matches(rec.resource, rec.obj)
        if rec.type == "MODIFIED":
            old_ok = self._matches(rec.resource, rec.old)
            if new_ok and old_ok:
                kind = "MODIFIED"
            elif new_ok:
                kind = "ADDED"
            elif old_ok:
                kind = "DELETED"  # left the selection: a real apiserver reports it as deleted
            else:
                return
        elif new_ok:
            kind = rec.type
        else:
            return
        self.last_rv = rec.rv
        self._queue.put(Event(kind, rec.resource, rec.obj))

    def get_raw(self, timeout: float | None = None) -> Event | None:
        """Next event without copying the object (callers must not mutate it)."""
        if self.closed and self._queue.empty():
            return None
        try:
            ev = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        return ev

    def get(self, timeout: float | None = None) -> Event | None:
        """Next event, or None when `timeout` seconds pass with none or the watch is closed."""
        ev = self.get_raw(timeout)
        if ev is None:
            return None
        return Event(ev.type, ev.resource, clone(ev.object))

    def __iter__(self) -> Iterator[Event]:
        while not self.closed:
            ev = self.get()
            if ev is None:
                return
            yield ev

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._unregister(self)
            self._queue.put(None)  # wakes a blocked get()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
