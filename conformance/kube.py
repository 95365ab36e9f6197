"""Thin access to the cluster with the official client, returning objects as plain API JSON dicts.

The scenarios compare what the server stored (field names as in the API, quantities as strings), so
they read raw JSON instead of the client's models; writes and watches still go through the official
``kubernetes`` client against the real HTTP endpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

RESOURCE_GROUP = "resource.k8s.io"


@dataclass
class Kube:
    api: client.ApiClient
    core: client.CoreV1Api
    resource: client.ResourceV1Api
    version: client.VersionApi
    apis: client.ApisApi

    @classmethod
    def from_kubeconfig(cls, path: Path) -> Kube:
        api = config.new_client_from_config(config_file=str(path))
        return cls(
            api=api,
            core=client.CoreV1Api(api),
            resource=client.ResourceV1Api(api),
            version=client.VersionApi(api),
            apis=client.ApisApi(api),
        )

    def close(self) -> None:
        self.api.close()


def raw(call: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Call an API method and return the response body as the server sent it (a dict)."""
    kwargs.setdefault("_request_timeout", 30)
    resp = call(*args, _preload_content=False, **kwargs)
    try:
        return json.loads(resp.data or b"{}")
    finally:
        resp.release_conn()


def items(call: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[list[dict[str, Any]], str]:
    body = raw(call, *args, **kwargs)
    return body.get("items") or [], (body.get("metadata") or {}).get("resourceVersion", "")


def get_or_none(call: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any] | None:
    try:
        return raw(call, *args, **kwargs)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def api_message(exc: ApiException) -> str:
    """The Status message of an API error, or its reason."""
    try:
        return json.loads(exc.body or "{}").get("message") or str(exc.reason)
    except (ValueError, TypeError):
        return str(exc.reason)


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or ():
        if cond.get("type") == ctype:
            return cond
    return None
