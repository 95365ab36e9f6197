"""Helpers for objects as plain JSON dicts."""

from __future__ import annotations

from typing import Any


def clone(value: Any) -> Any:
    """Deep copy for JSON data (several times faster than copy.deepcopy)."""
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clone(v) for v in value]
    return value
