"""ApiError: the one exception of the simulated apiserver, rendered as a metav1.Status over HTTP."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An API failure with the code, reason and causes a real kube-apiserver would report.

    `causes` are metav1.StatusCause dicts: {"reason": "FieldValueInvalid", "message": ..., "field": ...}.
    """

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        causes: list[dict[str, str]] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.causes = list(causes or [])
        self.details = dict(details or {})

    def __repr__(self) -> str:
        return f"ApiError({self.code}, {self.reason!r}, {self.message!r}, causes={self.causes!r})"

    def status(self) -> dict[str, Any]:
        details = dict(self.details)
        if self.causes:
            details["causes"] = self.causes
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if details:
            body["details"] = details
        return body


def not_found(kind_plural: str, name: str, group: str = "") -> ApiError:
    qualified = f"{kind_plural}.{group}" if group else kind_plural
    return ApiError(
        404,
        "NotFound",
        f'{qualified} "{name}" not found',
        details={"name": name, "group": group, "kind": kind_plural},
    )


def already_exists(kind_plural: str, name: str, group: str = "") -> ApiError:
    qualified = f"{kind_plural}.{group}" if group else kind_plural
    return ApiError(
        409,
        "AlreadyExists",
        f'{qualified} "{name}" already exists',
        details={"name": name, "group": group, "kind": kind_plural},
    )


def conflict(kind_plural: str, name: str, group: str = "", why: str = "") -> ApiError:
    qualified = f"{kind_plural}.{group}" if group else kind_plural
    why = why or "the object has been modified; please apply your changes to the latest version and try again"
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified} "{name}": {why}',
        details={"name": name, "group": group, "kind": kind_plural},
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def invalid(kind: str, name: str, group: str, causes: list[dict[str, str]]) -> ApiError:
    """422 Invalid listing every bad field, formatted like apimachinery's NewInvalid."""
    qualified = f"{kind}.{group}" if group else kind
    parts = [f"{c['field']}: {c['message']}" if c.get("field") else c["message"] for c in causes]
    summary = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    return ApiError(
        422,
        "Invalid",
        f'{qualified} "{name}" is invalid: {summary}',
        causes,
        details={"name": name, "group": group, "kind": kind},
    )


def field_cause(path: str, message: str, reason: str = "FieldValueInvalid") -> dict[str, str]:
    return {"reason": reason, "message": message, "field": path}
