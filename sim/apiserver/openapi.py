"""OpenAPI endpoints for kubectl."""

from __future__ import annotations

import json
from typing import Any

from .store import Store


def serve(store: Store, parts: list[str], query: dict[str, str], accept: str) -> tuple[int, bytes, str]:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "the server could not find the requested resource", "reason": "NotFound", "code": 404}
    return 404, json.dumps(body).encode(), "application/json"


def _unused(_: Any) -> None:
    return None
