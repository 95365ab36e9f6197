"""List and watch query parameters, checked as kube-apiserver checks ListOptions before serving.

A malformed parameter is a 400 naming it; a list never silently ignores one (a client that asked for
`resourceVersion=abc` has a bug it should hear about).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import bad_request

NOT_OLDER_THAN = "NotOlderThan"
EXACT = "Exact"


@dataclass(frozen=True)
class ListOptions:
    resource_version: int | None  # None: unset or "" (the most recent state)
    limit: int | None
    timeout_seconds: int | None


def _non_negative(query: dict[str, str], key: str) -> int | None:
    raw = query.get(key)
    if raw in (None, ""):
        return None
    if not (raw.isascii() and raw.isdigit()):
        raise bad_request(f"{key}: Invalid value: {raw!r}: must be a non-negative integer")
    return int(raw)


def list_options(query: dict[str, str], watch: bool) -> ListOptions:
    rv_raw = query.get("resourceVersion", "")
    if rv_raw and not (rv_raw.isascii() and rv_raw.isdigit()):
        raise bad_request(
            f"invalid resource version: resourceVersion={rv_raw!r} must be a non-negative "
            "integer (leave it unset for the most recent state)"
        )
    match = query.get("resourceVersionMatch", "")
    initial = query.get("sendInitialEvents")
    if watch:
        if initial is not None and match != NOT_OLDER_THAN:
            raise bad_request(
                f"resourceVersionMatch: Forbidden: sendInitialEvents requires setting "
                f"resourceVersionMatch to {NOT_OLDER_THAN}"
            )
        if match and match != NOT_OLDER_THAN:
            raise bad_request(
                f"resourceVersionMatch: Unsupported value: {match!r}: supported values: {NOT_OLDER_THAN!r}"
            )
        if match and initial is None:
            raise bad_request(
                "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for "
                "watch unless sendInitialEvents is provided"
            )
    else:
        if initial is not None:
            raise bad_request("sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list")
        if match:
            if match not in (NOT_OLDER_THAN, EXACT):
                raise bad_request(
                    f"resourceVersionMatch: Unsupported value: {match!r}: supported "
                    f"values: {EXACT!r}, {NOT_OLDER_THAN!r}, ''"
                )
            if not rv_raw:
                raise bad_request(
                    "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden "
                    "unless resourceVersion is provided"
                )
            if match == EXACT and rv_raw == "0":
                raise bad_request(
                    'resourceVersionMatch: Forbidden: resourceVersionMatch "Exact" is '
                    'forbidden for resourceVersion "0"'
                )
        if match and query.get("continue"):
            raise bad_request(
                "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden when continue is provided"
            )
    return ListOptions(
        resource_version=int(rv_raw) if rv_raw else None,
        limit=_non_negative(query, "limit"),
        timeout_seconds=_non_negative(query, "timeoutSeconds"),
    )
