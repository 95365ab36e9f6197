"""Helpers for objects as plain JSON dicts."""

from __future__ import annotations

import datetime as _dt
from typing import Any


def clone(value: Any) -> Any:
    """Deep copy for JSON data (several times faster than copy.deepcopy)."""
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clone(v) for v in value]
    return value


def now_rfc3339() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
