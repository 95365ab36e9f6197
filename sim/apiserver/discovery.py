"""Discovery documents (/version, /api, /apis, group and version resource lists)."""

from __future__ import annotations

import datetime as _dt
from typing import Any

from ..config import SimConfig
from .resources import RESOURCES, ResourceType, group_versions

_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def version_info(config: SimConfig) -> dict[str, Any]:
    major, minor = config.kube_version.split(".")
    return {
        "major": major,
        "minor": minor,
        "emulationMajor": major,
        "emulationMinor": minor,
        "gitVersion": f"v{config.kube_version}.0-sim",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": _dt.datetime(2026, 1, 1, tzinfo=_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "goVersion": "sim",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _group_entry(group: str, versions: list[str]) -> dict[str, Any]:
    gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": gvs, "preferredVersion": gvs[0]}


def api_group_list() -> dict[str, Any]:
    groups = [_group_entry(g, vs) for g, vs in group_versions().items() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(group: str) -> dict[str, Any] | None:
    versions = group_versions().get(group)
    if not group or not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_entry(group, versions)}


def _resource_entry(rt: ResourceType) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": rt.plural,
        "singularName": rt.singular_name,
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": list(_VERBS),
    }
    if rt.short_names:
        entry["shortNames"] = list(rt.short_names)
    if rt.categories:
        entry["categories"] = list(rt.categories)
    return entry


def _subresource_entries(rt: ResourceType) -> list[dict[str, Any]]:
    out = []
    for sub in rt.subresources:
        if sub == "status":
            out.append(
                {
                    "name": f"{rt.plural}/status",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        elif sub == "binding":
            out.append(
                {
                    "name": f"{rt.plural}/binding",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": "Binding",
                    "verbs": ["create"],
                }
            )
        elif sub == "log":
            out.append(
                {
                    "name": f"{rt.plural}/log",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": ["get"],
                }
            )
    return out


def api_resource_list(group: str, version: str) -> dict[str, Any] | None:
    rts = [rt for rt in RESOURCES if rt.group == group and rt.version == version]
    if not rts:
        return None
    resources: list[dict[str, Any]] = []
    for rt in rts:
        resources.append(_resource_entry(rt))
        resources.extend(_subresource_entries(rt))
    if group == "" and version == "v1":
        resources.append(
            {
                "name": "bindings",
                "singularName": "binding",
                "namespaced": True,
                "kind": "Binding",
                "verbs": ["create"],
            }
        )
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}
