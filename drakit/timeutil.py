"""Time as the Kubernetes API writes it."""

from __future__ import annotations

import datetime as _dt


def now_rfc3339() -> str:
    """Now in UTC, whole seconds (metav1.Time's wire form: creationTimestamp, lastTransitionTime)."""
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
