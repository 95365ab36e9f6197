"""Per-resource write strategy: defaulting, status handling, feature-gate field dropping and the
semantic validation a real apiserver adds on top of the OpenAPI schema."""

from __future__ import annotations

import base64
import re
from typing import Any

from ..config import SimConfig
from . import dra_gates, dra_rules
from .errors import field_cause
from .resources import ResourceType

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")

_LABEL_NAMED = {"namespaces", "services"}
_PATH_SEGMENT_NAMED = {"events", "roles", "rolebindings", "clusterroles", "clusterrolebindings"}
_RESOURCE_GROUP = "resource.k8s.io"


def prepare_create(rt: ResourceType, obj: dict[str, Any], config: SimConfig) -> None:
    if rt.name == "pods":
        obj["status"] = {"phase": "Pending"}
        _default_pod_spec(obj.get("spec"))
    elif rt.name == "namespaces":
        obj["status"] = {"phase": "Active"}
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    elif rt.name == "resourceclaims.resource.k8s.io":
        obj.pop("status", None)
    elif rt.name == "secrets":
        _secret_defaults(obj)
    if rt.group == _RESOURCE_GROUP:
        _default_requests(rt, obj)
        dra_gates.drop_disabled_fields(rt, obj, None, config)


def _secret_defaults(obj: dict[str, Any]) -> None:
    if not obj.get("type"):
        obj["type"] = "Opaque"
    string_data = obj.pop("stringData", None)  # write-only convenience field: merged into data
    if isinstance(string_data, dict):
        data = obj.setdefault("data", {})
        if isinstance(data, dict):
            for k, v in string_data.items():
                data[k] = base64.b64encode(str(v).encode()).decode()


def _default_pod_spec(spec: Any) -> None:
    if isinstance(spec, dict):
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("dnsPolicy", "ClusterFirst")
        spec.setdefault("schedulerName", "default-scheduler")


_POD_MUTABLE = (
    "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`, "
    "`spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to "
    "existing tolerations), `spec.terminationGracePeriodSeconds` or `spec.schedulingGates` (only removals)"
)


def _pod_spec_update(new: dict[str, Any], old: dict[str, Any]) -> list[dict[str, str]]:
    """Upstream ValidatePodUpdate: a pod's spec is immutable except for a few fields; nodeName is set
    only through the binding subresource."""
    comparable = dict(new)
    for key in ("activeDeadlineSeconds", "terminationGracePeriodSeconds"):
        if key in old:
            comparable[key] = old[key]
        else:
            comparable.pop(key, None)
    old_tol, new_tol = old.get("tolerations") or [], new.get("tolerations") or []
    if all(t in new_tol for t in old_tol):
        comparable["tolerations"] = old.get("tolerations")
        if "tolerations" not in old:
            comparable.pop("tolerations", None)
    old_gates, new_gates = old.get("schedulingGates") or [], new.get("schedulingGates") or []
    if all(g in old_gates for g in new_gates):
        comparable["schedulingGates"] = old.get("schedulingGates")
        if "schedulingGates" not in old:
            comparable.pop("schedulingGates", None)
    for key in ("containers", "initContainers"):
        olds, news = old.get(key) or [], new.get(key) or []
        if key in new and len(olds) == len(news) and all(isinstance(c, dict) for c in news):
            merged = [
                dict(n, image=o.get("image")) if "image" in o else n for n, o in zip(news, olds, strict=True)
            ]
            comparable[key] = merged
    if comparable == old:
        return []
    if comparable.get("nodeName") != old.get("nodeName"):
        return [
            field_cause(
                "spec.nodeName",
                "Forbidden: pod updates may not change spec.nodeName; bind a pod "
                "with the pods/binding subresource",
                "FieldValueForbidden",
            )
        ]
    return [field_cause("spec", _POD_MUTABLE.removeprefix("spec: "), "FieldValueForbidden")]


def prepare_update(
    rt: ResourceType, new: dict[str, Any], old: dict[str, Any], config: SimConfig, subresource: str | None
) -> None:
    if rt.name == "pods" and subresource is None:
        _default_pod_spec(new.get("spec"))
    elif rt.name == "secrets":
        _secret_defaults(new)
    if rt.group == _RESOURCE_GROUP:
        if subresource is None:
            _default_requests(rt, new)
        dra_gates.drop_disabled_fields(rt, new, old, config)


def _default_requests(rt: ResourceType, obj: dict[str, Any]) -> None:
    """Upstream defaults: allocationMode ExactCount and count 1 on exact requests and subrequests."""
    spec = obj.get("spec")
    if rt.kind == "ResourceClaimTemplate":
        spec = spec.get("spec") if isinstance(spec, dict) else None
    elif rt.kind != "ResourceClaim":
        return
    devices = spec.get("devices") if isinstance(spec, dict) else None
    requests = devices.get("requests") if isinstance(devices, dict) else None
    if not isinstance(requests, list):
        return
    for req in requests:
        if not isinstance(req, dict):
            continue
        targets = [req.get("exactly"), *list(req.get("firstAvailable") or [])]
        for t in targets:
            if isinstance(t, dict):
                mode = t.setdefault("allocationMode", "ExactCount")
                if mode == "ExactCount":
                    t.setdefault("count", 1)


def spec_changed(new: dict[str, Any], old: dict[str, Any]) -> bool:
    keys = (set(new) | set(old)) - {"metadata", "status", "apiVersion", "kind"}
    return any(new.get(k) != old.get(k) for k in keys)


def _validate_meta(rt: ResourceType, obj: dict[str, Any]) -> list[dict[str, str]]:
    causes: list[dict[str, str]] = []
    meta = obj.get("metadata") or {}
    name = meta.get("name") or ""
    if rt.name in _LABEL_NAMED:
        ok, what = (
            bool(DNS_LABEL.match(name)) and len(name) <= 63,
            "a lowercase RFC 1123 label (at most 63 characters)",
        )
    elif rt.name in _PATH_SEGMENT_NAMED:
        ok, what = (
            name not in (".", "..") and "/" not in name and "%" not in name,
            "a path segment without '/' or '%'",
        )
    else:
        ok = bool(DNS_SUBDOMAIN.match(name)) and len(name) <= 253
        what = "a lowercase RFC 1123 subdomain (lower case alphanumerics, '-' or '.', at most 253 characters)"
    if not ok:
        causes.append(field_cause("metadata.name", f"Invalid value: {name!r}: must be {what}"))
    for field in ("labels", "annotations"):
        for key, value in (meta.get(field) or {}).items():
            prefix, _, local = key.rpartition("/")
            if (
                not _QUALIFIED_NAME.match(local)
                or len(local) > 63
                or (prefix and (not DNS_SUBDOMAIN.match(prefix) or len(prefix) > 253))
            ):
                causes.append(
                    field_cause(
                        f"metadata.{field}",
                        f"Invalid value: {key!r}: a qualified name must be "
                        "alphanumerics, '-', '_' or '.' (at most 63), with an optional DNS "
                        "subdomain prefix and '/'",
                    )
                )
            if field == "labels" and (
                not isinstance(value, str) or not _LABEL_VALUE.match(value) or len(value) > 63
            ):
                causes.append(
                    field_cause(
                        f"metadata.labels[{key}]",
                        f"Invalid value: {value!r}: a label value must be "
                        "empty or at most 63 alphanumerics, '-', '_' or '.', starting and ending "
                        "with an alphanumeric",
                    )
                )
    return causes


def validate(
    rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None, config: SimConfig
) -> list[dict[str, str]]:
    # Only the config (the gates, the version): taking the whole Store made strategy and store import
    # each other.
    causes = _validate_meta(rt, obj)
    if rt.name == "pods" and old is not None:
        causes += _pod_spec_update(obj.get("spec") or {}, old.get("spec") or {})
    if rt.group == _RESOURCE_GROUP:
        causes += dra_rules.validate(rt, obj, old, config)
    return causes
