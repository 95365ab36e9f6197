"""Each stored object serialized once and the bytes shared by every watcher that sends it.

Without this, N watchers of one big object each hold their own copy of its encoding while they write
it (200 watchers of a 3 MiB object would be 600 MiB for one event). Stored objects are never mutated
after they are stored (a write stores a new dict), so an object's identity is a sound cache key as long
as the cache holds the object itself, which keeps its id from being reused.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

Encoder = Callable[[Any], bytes]


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class EncodedObjects:
    """An LRU of (object, format) -> bytes, bounded in total bytes held."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._entries: OrderedDict[tuple[int, str], tuple[Any, bytes]] = OrderedDict()
        # One lock for lookups and encoding: concurrent watchers of a new object wait for the one
        # encoding instead of each making their own copy.
        self._lock = threading.Lock()

    def get(self, obj: Any, fmt: str = "json", encode: Encoder = json_bytes) -> bytes:
        key = (id(obj), fmt)
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and hit[0] is obj:
                self._entries.move_to_end(key)
                return hit[1]
            data = encode(obj)
            if hit is not None:
                self._bytes -= len(hit[1])
            self._entries[key] = (obj, data)
            self._entries.move_to_end(key)
            self._bytes += len(data)
            while self._bytes > self._max_bytes and len(self._entries) > 1:
                _, (_, old) = self._entries.popitem(last=False)
                self._bytes -= len(old)
            return data
