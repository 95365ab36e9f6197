"""OpenAPI v3 discovery for kubectl.

kubectl (client-go's QueryParamVerifierV3) reads /openapi/v3 and the group-version document to learn
that the server validates fields itself (a `fieldValidation` parameter on each PATCH operation). It then
sends fieldValidation=Strict and skips client-side schema validation, so `kubectl apply` works without
--validate=false. The documents list paths and operations only, with no request bodies or schemas: kubectl
therefore builds client-side-apply patches from its compiled-in types (strategic merge for built-in
kinds). /openapi/v2 answers 404, which kubectl treats as "no v2 schema".
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from typing import Any

from .resources import RESOURCES, ResourceType
from .store import Store

_PARAM = {
    "name": "fieldValidation",
    "in": "query",
    "schema": {"type": "string", "uniqueItems": True},
    "description": "Strict (default on this server), Warn or Ignore",
}


def _prefix(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def _op(rt: ResourceType, action: str, params: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": f"{action}{rt.kind}",
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
        "responses": {"200": {"description": "OK"}},
    }
    if params:
        op["parameters"] = params
    return op


@cache
def _gv_doc(group: str, version: str) -> bytes:
    paths: dict[str, Any] = {}
    for rt in RESOURCES:
        if rt.group != group or rt.version != version:
            continue
        base = "/" + _prefix(group, version)
        coll = f"{base}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else f"{base}/{rt.plural}"
        paths[coll] = {
            "get": _op(rt, "list"),
            "post": _op(rt, "post", [_PARAM]),
            "delete": _op(rt, "deletecollection"),
        }
        paths[coll + "/{name}"] = {
            "get": _op(rt, "get"),
            "put": _op(rt, "put", [_PARAM]),
            "patch": _op(rt, "patch", [_PARAM]),
            "delete": _op(rt, "delete"),
        }
        if rt.has_status:
            paths[coll + "/{name}/status"] = {
                "get": _op(rt, "get"),
                "put": _op(rt, "put", [_PARAM]),
                "patch": _op(rt, "patch", [_PARAM]),
            }
    doc = {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (sim)", "version": "v1"},
        "paths": paths,
        "components": {"schemas": {}},
    }
    return json.dumps(doc).encode()


def _group_versions() -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    for rt in RESOURCES:
        if (rt.group, rt.version) not in seen:
            seen.append((rt.group, rt.version))
    return seen


@cache
def _root() -> bytes:
    paths = {}
    for group, version in _group_versions():
        digest = hashlib.sha256(_gv_doc(group, version)).hexdigest()[:32].upper()
        prefix = _prefix(group, version)
        paths[prefix] = {"serverRelativeURL": f"/openapi/v3/{prefix}?hash={digest}"}
    return json.dumps({"paths": paths}).encode()


def _not_found(what: str) -> tuple[int, bytes, str]:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f"the server could not find the requested resource ({what})",
        "reason": "NotFound",
        "code": 404,
    }
    return 404, json.dumps(body).encode(), "application/json"


def serve(store: Store, parts: list[str], query: dict[str, str], accept: str) -> tuple[int, bytes, str]:
    if parts[:1] != ["v3"]:
        return _not_found("/openapi/" + "/".join(parts))
    rest = parts[1:]
    if not rest:
        return 200, _root(), "application/json"
    if rest[0] == "api" and len(rest) == 2:
        group, version = "", rest[1]
    elif rest[0] == "apis" and len(rest) == 3:
        group, version = rest[1], rest[2]
    else:
        return _not_found("/openapi/v3/" + "/".join(rest))
    if (group, version) not in _group_versions():
        return _not_found("/openapi/v3/" + "/".join(rest))
    return 200, _gv_doc(group, version), "application/json"
