"""Decoding of the Kubernetes protobuf request bodies kubectl's typed generators send.

`kubectl create namespace|configmap|secret|serviceaccount` post `application/vnd.kubernetes.protobuf`
(the "k8s\\0" envelope around a runtime.Unknown). Only those kinds are understood; field numbers follow
k8s.io/api generated.proto. An unknown kind or field is refused (415/400), never dropped silently.
Responses stay JSON, which those clients accept.
"""

from __future__ import annotations

import base64
import datetime as _dt
from typing import Any

from .errors import ApiError, bad_request

MAGIC = b"k8s\x00"

# message -> field number -> (json name, type, repeated). Types: str, bytes, int, bool, time,
# map_str (map<string,string>), map_bytes (map<string,bytes>), or another message name.
_Field = tuple[str, str, bool]
MESSAGES: dict[str, dict[int, _Field]] = {
    "Unknown": {
        1: ("typeMeta", "TypeMeta", False),
        2: ("raw", "bytes", False),
        3: ("contentEncoding", "str", False),
        4: ("contentType", "str", False),
    },
    "TypeMeta": {1: ("apiVersion", "str", False), 2: ("kind", "str", False)},
    "ObjectMeta": {
        1: ("name", "str", False),
        2: ("generateName", "str", False),
        3: ("namespace", "str", False),
        4: ("selfLink", "str", False),
        5: ("uid", "str", False),
        6: ("resourceVersion", "str", False),
        7: ("generation", "int", False),
        8: ("creationTimestamp", "time", False),
        9: ("deletionTimestamp", "time", False),
        10: ("deletionGracePeriodSeconds", "int", False),
        11: ("labels", "map_str", False),
        12: ("annotations", "map_str", False),
        13: ("ownerReferences", "OwnerReference", True),
        14: ("finalizers", "str", True),
    },
    "OwnerReference": {
        1: ("kind", "str", False),
        3: ("name", "str", False),
        4: ("uid", "str", False),
        5: ("apiVersion", "str", False),
        6: ("controller", "bool", False),
        7: ("blockOwnerDeletion", "bool", False),
    },
    "ObjectReference": {
        1: ("kind", "str", False),
        2: ("namespace", "str", False),
        3: ("name", "str", False),
        4: ("uid", "str", False),
        5: ("apiVersion", "str", False),
        6: ("resourceVersion", "str", False),
        7: ("fieldPath", "str", False),
    },
    "LocalObjectReference": {1: ("name", "str", False)},
    "Namespace": {
        1: ("metadata", "ObjectMeta", False),
        2: ("spec", "NamespaceSpec", False),
        3: ("status", "NamespaceStatus", False),
    },
    "NamespaceSpec": {1: ("finalizers", "str", True)},
    "NamespaceStatus": {1: ("phase", "str", False)},
    "ConfigMap": {
        1: ("metadata", "ObjectMeta", False),
        2: ("data", "map_str", False),
        3: ("binaryData", "map_bytes", False),
        4: ("immutable", "bool", False),
    },
    "Secret": {
        1: ("metadata", "ObjectMeta", False),
        2: ("data", "map_bytes", False),
        3: ("type", "str", False),
        4: ("stringData", "map_str", False),
        5: ("immutable", "bool", False),
    },
    "ServiceAccount": {
        1: ("metadata", "ObjectMeta", False),
        2: ("secrets", "ObjectReference", True),
        3: ("imagePullSecrets", "LocalObjectReference", True),
        4: ("automountServiceAccountToken", "bool", False),
    },
    "Time": {1: ("seconds", "int", False), 2: ("nanos", "int", False)},
}
SUPPORTED = {("v1", "Namespace"), ("v1", "ConfigMap"), ("v1", "Secret"), ("v1", "ServiceAccount")}


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf):
            raise bad_request("protobuf body is truncated inside a varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int, Any]]:
    out, i = [], 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i : i + size], i + size
        elif wire == 1:
            value, i = buf[i : i + 8], i + 8
        elif wire == 5:
            value, i = buf[i : i + 4], i + 4
        else:
            raise bad_request(f"protobuf body uses unsupported wire type {wire} (field {number})")
        out.append((number, wire, value))
    return out


def _decode(buf: bytes, message: str, path: str) -> dict[str, Any]:
    spec = MESSAGES[message]
    obj: dict[str, Any] = {}
    for number, wire, value in _fields(buf):
        if number not in spec:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"protobuf field {number} of {message} at {path or '.'} is "
                "not understood by this server; send the object as JSON (kubectl create -f / apply -f)",
            )
        name, kind, repeated = spec[number]
        where = f"{path}.{name}" if path else name
        if kind in ("map_str", "map_bytes"):
            entry = {n: v for n, _, v in _fields(value)}
            key = entry.get(1, b"").decode()
            raw = entry.get(2, b"")
            obj.setdefault(name, {})[key] = (
                raw.decode() if kind == "map_str" else base64.b64encode(raw).decode()
            )
            continue
        if kind == "str":
            decoded: Any = value.decode()
        elif kind == "bytes":
            decoded = value
        elif kind == "int":
            decoded = value - (1 << 64) if value >= 1 << 63 else value
        elif kind == "bool":
            decoded = bool(value)
        elif kind == "time":
            t = _decode(value, "Time", where)
            if "seconds" in t:
                decoded = _dt.datetime.fromtimestamp(t["seconds"], _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            else:
                decoded = None  # the zero time: unset
        else:
            if wire != 2:
                raise bad_request(f"protobuf field {where} should be a message")
            decoded = _decode(value, kind, where)
        if repeated:
            obj.setdefault(name, []).append(decoded)
        elif decoded not in ("", None, {}) and not (name == "generation" and decoded == 0):
            # Go writes every non-pointer field, empty or not; JSON omits the empty ones (omitempty)
            obj[name] = decoded
    return obj


def decode_body(raw: bytes) -> dict[str, Any]:
    """Turn a Kubernetes protobuf body into the JSON object it stands for."""
    if not raw.startswith(MAGIC):
        raise bad_request("protobuf body lacks the k8s\\x00 envelope")
    unknown = _decode(raw[len(MAGIC) :], "Unknown", "")
    type_meta = unknown.get("typeMeta") or {}
    gvk = (type_meta.get("apiVersion", ""), type_meta.get("kind", ""))
    if gvk not in SUPPORTED:
        raise ApiError(
            415,
            "UnsupportedMediaType",
            f"protobuf bodies are understood for "
            f"{', '.join(k for _, k in sorted(SUPPORTED))} only, not {gvk[0]} {gvk[1]}; send JSON "
            "(kubectl create -f / kubectl apply -f)",
        )
    obj = _decode(unknown.get("raw", b""), gvk[1], "")
    return {"apiVersion": gvk[0], "kind": gvk[1], **obj}
