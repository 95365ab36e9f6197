"""CDI spec loading and device resolution as a container runtime does it (dra-facts.md section 7).

Spec files (``*.json``, ``*.yaml``) are read from a list of directories, later ones with higher priority
(``/etc/cdi`` then ``/var/run/cdi`` on a real node). A fully qualified device ID is ``vendor/class=name``.
Injecting a device applies its spec's top-level ``containerEdits`` (once per spec) and then the device's own
edits, in the order the devices were requested; an env entry replaces an earlier one with the same key.

The simulated container is a local process. Env edits always apply. Device nodes and mount sources are
checked to exist (a runtime fails the start otherwise); where the host allows a private mount namespace
(``mountns.py``), the device nodes and mounts are applied in it (``Resolution.mount_plan``), else they are
recorded only. Hooks are recorded, never run (they would rewrite the host's filesystem).
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

KNOWN_VERSIONS = (
    "0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0", "1.1.0",
)  # fmt: skip
_VENDOR = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.\-]*[A-Za-z0-9])?$")
_CLASS = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.\-]*[A-Za-z0-9])?$")
_DEVICE_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.:\-]*[A-Za-z0-9])?$")
_HOOK_NAMES = {"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"}

_SPEC_KEYS = {"cdiVersion", "kind", "annotations", "devices", "containerEdits"}
_DEVICE_KEYS = {"name", "annotations", "containerEdits"}
_EDIT_KEYS = {"env", "deviceNodes", "hooks", "mounts", "intelRdt", "additionalGids", "netDevices"}
_NODE_KEYS = {"path", "hostPath", "type", "major", "minor", "fileMode", "permissions", "uid", "gid"}
_MOUNT_KEYS = {"hostPath", "containerPath", "type", "options"}
_HOOK_KEYS = {"hookName", "path", "args", "env", "timeout"}
_NETDEV_KEYS = {"hostInterfaceName", "name"}


class CDIError(Exception):
    """A spec that cannot be loaded or a device ID that cannot be resolved; the text names file and field."""


@dataclass
class ContainerEdits:
    env: list[str] = field(default_factory=list)
    device_nodes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    hooks: list[dict[str, Any]] = field(default_factory=list)
    additional_gids: list[int] = field(default_factory=list)
    net_devices: list[dict[str, Any]] = field(default_factory=list)
    intel_rdt: dict[str, Any] | None = None

    def is_empty(self) -> bool:
        return not (self.env or self.device_nodes or self.mounts or self.hooks or self.additional_gids
                    or self.net_devices or self.intel_rdt)  # fmt: skip

    def extend(self, other: ContainerEdits) -> None:
        self.env += other.env
        self.device_nodes += other.device_nodes
        self.mounts += other.mounts
        self.hooks += other.hooks
        self.additional_gids += other.additional_gids
        self.net_devices += other.net_devices
        if other.intel_rdt is not None:
            self.intel_rdt = other.intel_rdt

    def to_json(self) -> dict[str, Any]:
        return {
            "env": self.env, "deviceNodes": self.device_nodes, "mounts": self.mounts,
            "hooks": self.hooks, "additionalGids": self.additional_gids, "netDevices": self.net_devices,
            "intelRdt": self.intel_rdt,
        }  # fmt: skip


@dataclass
class Spec:
    path: Path
    version: str
    kind: str
    edits: ContainerEdits
    devices: dict[str, ContainerEdits]
    priority: int


@dataclass
class Resolution:
    """What injecting a list of CDI devices gives a container."""

    device_ids: list[str]
    edits: ContainerEdits

    def apply_env(self, env: dict[str, str]) -> dict[str, str]:
        out = dict(env)
        for entry in self.edits.env:
            key, _, value = entry.partition("=")
            out[key] = value
        return out

    def mount_plan(self) -> tuple[dict[str, Any], list[str]]:
        """What the container's private mount namespace gets (``mountns.enter``), and the edits that
        cannot be applied on a host-sharing container, each with why."""
        plan: dict[str, Any] = {"deviceNodes": [], "mounts": []}
        dropped: list[str] = []
        for n in self.edits.device_nodes:
            path = os.path.normpath(n["path"])
            if not path.startswith("/dev/"):
                raise CDIError(
                    f"CDI device node {n['path']}: the simulated kubelet creates device nodes in "
                    "the container's private /dev only (the rest of its filesystem is the host's)"
                )
            plan["deviceNodes"].append({"path": path, "hostPath": n.get("hostPath") or n["path"]})
        for m in self.edits.mounts:
            options = list(m.get("options") or ())
            bind = m.get("type") in (None, "", "bind") or "bind" in options or "rbind" in options
            target = os.path.normpath(m["containerPath"])
            if not target.startswith("/dev/") and not os.path.exists(target):
                dropped.append(
                    f"mount {m['hostPath']} on {target}: not applied, the target does not exist "
                    "and the container's filesystem is the host's"
                )
                continue
            if not bind and target.startswith("/dev/") and not os.path.exists(target):
                dropped.append(f"{m.get('type')} mount on {target}: not applied, no such directory in /dev")
                continue
            plan["mounts"].append(
                {
                    "hostPath": m["hostPath"],
                    "containerPath": target,
                    "bind": bind,
                    "type": m.get("type") or "bind",
                    "options": options,
                }
            )
        return plan, dropped


def parse_device_id(device_id: str) -> tuple[str, str]:
    """``vendor/class=name`` -> (kind, name), with the CDI parser's checks."""
    kind, sep, name = device_id.partition("=")
    vendor, slash, cls = kind.partition("/")
    if not sep or not slash or not vendor or not cls or not name:
        raise CDIError(
            f"unresolvable CDI devices {device_id}: not a qualified device name (want vendor/class=name)"
        )
    if not _VENDOR.match(vendor) or not _CLASS.match(cls) or not _DEVICE_NAME.match(name):
        raise CDIError(f"unresolvable CDI devices {device_id}: invalid vendor, class or device name")
    return kind, name


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def _require(version: str, minimum: str, what: str, where: str) -> None:
    if _version_tuple(version) < _version_tuple(minimum):
        raise CDIError(f"{where}: {what} requires cdiVersion >= {minimum}, spec declares {version}")


def _check_keys(obj: Any, allowed: set[str], where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise CDIError(f"{where}: expected an object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise CDIError(
            f"{where}: unknown field(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})"
        )
    return obj


def _list(obj: dict[str, Any], key: str, where: str) -> list[Any]:
    value = obj.get(key) or []
    if not isinstance(value, list):
        raise CDIError(f"{where}.{key}: expected a list, got {type(value).__name__}")
    return value


def _parse_edits(raw: Any, version: str, where: str) -> ContainerEdits:
    obj = _check_keys(raw, _EDIT_KEYS, where)
    edits = ContainerEdits()
    for i, e in enumerate(_list(obj, "env", where)):
        if not isinstance(e, str) or "=" not in e or e.startswith("="):
            raise CDIError(f"{where}.env[{i}]: invalid environment variable {e!r} (want KEY=VALUE)")
        edits.env.append(e)
    for i, n in enumerate(_list(obj, "deviceNodes", where)):
        w = f"{where}.deviceNodes[{i}]"
        n = _check_keys(n, _NODE_KEYS, w)
        if not isinstance(n.get("path"), str) or not n["path"]:
            raise CDIError(f"{w}.path: invalid (empty) device path")
        if "hostPath" in n:
            _require(version, "0.5.0", "deviceNodes[].hostPath", w)
        if n.get("type") not in (None, "", "b", "c", "u", "p"):
            raise CDIError(f"{w}.type: invalid device type {n['type']!r} (want b, c, u or p)")
        if set(str(n.get("permissions", ""))) - set("rwm"):
            raise CDIError(
                f"{w}.permissions: invalid permissions {n['permissions']!r} (want a subset of rwm)"
            )
        edits.device_nodes.append(n)
    for i, m in enumerate(_list(obj, "mounts", where)):
        w = f"{where}.mounts[{i}]"
        m = _check_keys(m, _MOUNT_KEYS, w)
        for key in ("hostPath", "containerPath"):
            if not isinstance(m.get(key), str) or not m[key]:
                raise CDIError(f"{w}.{key}: invalid mount, empty {key}")
        if "type" in m:
            _require(version, "0.4.0", "mounts[].type", w)
        edits.mounts.append(m)
    for i, h in enumerate(_list(obj, "hooks", where)):
        w = f"{where}.hooks[{i}]"
        h = _check_keys(h, _HOOK_KEYS, w)
        if h.get("hookName") not in _HOOK_NAMES:
            raise CDIError(
                f"{w}.hookName: invalid hook name {h.get('hookName')!r} (want one of {sorted(_HOOK_NAMES)})"
            )
        if not isinstance(h.get("path"), str) or not h["path"]:
            raise CDIError(f"{w}.path: invalid hook, empty path")
        edits.hooks.append(h)
    if "additionalGids" in obj:
        _require(version, "0.7.0", "additionalGids", where)
        gids = _list(obj, "additionalGids", where)
        if any(not isinstance(g, int) or g < 0 for g in gids):
            raise CDIError(f"{where}.additionalGids: want non-negative integers, got {gids!r}")
        edits.additional_gids = list(gids)
    if "intelRdt" in obj:
        _require(version, "0.7.0", "intelRdt", where)
        edits.intel_rdt = _check_keys(
            obj["intelRdt"],
            {"closID", "l3CacheSchema", "memBwSchema", "schemata", "enableMonitoring"},
            f"{where}.intelRdt",
        )
    for i, nd in enumerate(_list(obj, "netDevices", where)):
        w = f"{where}.netDevices[{i}]"
        _require(version, "1.1.0", "netDevices", w)
        nd = _check_keys(nd, _NETDEV_KEYS, w)
        if not nd.get("hostInterfaceName") or not nd.get("name"):
            raise CDIError(f"{w}: hostInterfaceName and name are required")
        edits.net_devices.append(nd)
    return edits


def parse_spec(path: Path, raw: Any, priority: int) -> Spec:
    where = str(path)
    obj = _check_keys(raw, _SPEC_KEYS, where)
    version = obj.get("cdiVersion")
    if version not in KNOWN_VERSIONS:
        raise CDIError(
            f"{where}.cdiVersion: unsupported version {version!r} (known: {', '.join(KNOWN_VERSIONS)})"
        )
    kind = obj.get("kind")
    if not isinstance(kind, str) or kind.count("/") != 1:
        raise CDIError(f"{where}.kind: invalid kind {kind!r} (want vendor/class)")
    vendor, cls = kind.split("/")
    if not _VENDOR.match(vendor):
        raise CDIError(f"{where}.kind: invalid vendor {vendor!r}")
    if not _CLASS.match(cls) or len(cls) > 63:
        raise CDIError(f"{where}.kind: invalid class {cls!r} (alphanumerics and -_. only, at most 63)")
    if "." in cls:
        _require(version, "0.6.0", "a '.' in the kind's class", f"{where}.kind")
    if "annotations" in obj:
        _require(version, "0.6.0", "annotations", where)
    edits = _parse_edits(_or_empty(obj.get("containerEdits")), version, f"{where}.containerEdits")
    devices_raw = _list(obj, "devices", where)
    if not devices_raw:
        raise CDIError(f"{where}.devices: a spec needs at least one device")
    devices: dict[str, ContainerEdits] = {}
    for i, d in enumerate(devices_raw):
        w = f"{where}.devices[{i}]"
        d = _check_keys(d, _DEVICE_KEYS, w)
        name = d.get("name")
        if not isinstance(name, str) or not _DEVICE_NAME.match(name):
            raise CDIError(
                f"{w}.name: invalid device name {name!r} (alphanumerics and -_.: , alphanumeric ends)"
            )
        if name[0].isdigit():
            _require(version, "0.5.0", "a device name starting with a digit", f"{w}.name")
        if "annotations" in d:
            _require(version, "0.6.0", "annotations", w)
        if name in devices:
            raise CDIError(f"{w}.name: device {name!r} defined twice in the spec")
        dev_edits = _parse_edits(_or_empty(d.get("containerEdits")), version, f"{w}.containerEdits")
        if dev_edits.is_empty():
            raise CDIError(f"{w}.containerEdits: invalid device {name!r}, empty device edits")
        devices[name] = dev_edits
    return Spec(path=path, version=version, kind=kind, edits=edits, devices=devices, priority=priority)


def load_spec_file(path: Path, priority: int) -> Spec:
    try:
        text = path.read_text()
    except OSError as e:
        raise CDIError(f"{path}: cannot read spec: {e.strerror}") from e
    try:
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise CDIError(f"{path}: malformed spec: {e}") from e
    return parse_spec(path, raw, priority)


class Registry:
    """The CDI cache of one node. Re-reads a spec file only when its mtime or size changed."""

    def __init__(self, spec_dirs: list[Path]):
        self._dirs = list(spec_dirs)
        self._lock = threading.Lock()
        self._cache: dict[Path, tuple[tuple[int, int], Spec | CDIError]] = {}

    def _refresh(self) -> tuple[dict[str, tuple[Spec, ContainerEdits]], list[CDIError], dict[str, str]]:
        """Devices by qualified name, spec errors, and conflicts (qualified name -> message)."""
        seen: set[Path] = set()
        errors: list[CDIError] = []
        devices: dict[str, tuple[Spec, ContainerEdits]] = {}
        conflicts: dict[str, str] = {}
        for priority, d in enumerate(self._dirs):
            try:
                entries = sorted(os.scandir(d), key=lambda e: e.name)
            except FileNotFoundError:
                continue
            for entry in entries:
                if not entry.name.endswith((".json", ".yaml")) or not entry.is_file():
                    continue
                path = Path(entry.path)
                seen.add(path)
                st = entry.stat()
                key = (st.st_mtime_ns, st.st_size)
                cached = self._cache.get(path)
                if cached is None or cached[0] != key:
                    try:
                        loaded: Spec | CDIError = load_spec_file(path, priority)
                    except CDIError as e:
                        loaded = e
                    cached = (key, loaded)
                    self._cache[path] = cached
                spec = cached[1]
                if isinstance(spec, CDIError):
                    errors.append(spec)
                    continue
                for name, edits in spec.devices.items():
                    qualified = f"{spec.kind}={name}"
                    other = devices.get(qualified)
                    if other is not None and other[0].priority == priority:
                        conflicts[qualified] = f"conflicting device {qualified} in {other[0].path} and {path}"
                        continue
                    devices[qualified] = (spec, edits)  # a later directory overrides an earlier one
        for path in set(self._cache) - seen:
            del self._cache[path]
        return devices, errors, conflicts

    def resolve(self, device_ids: list[str]) -> Resolution:
        with self._lock:
            devices, errors, conflicts = self._refresh()
        edits = ContainerEdits()
        seen_specs: set[Path] = set()
        unresolved: list[str] = []
        for device_id in device_ids:
            parse_device_id(device_id)
            found = devices.get(device_id)
            if found is None or device_id in conflicts:
                unresolved.append(device_id)
                continue
            spec, dev_edits = found
            if spec.path not in seen_specs:
                seen_specs.add(spec.path)
                edits.extend(spec.edits)
            edits.extend(dev_edits)
        if unresolved:
            details = [conflicts[d] for d in unresolved if d in conflicts]
            # A device usually goes missing because its spec file did not load: name those files.
            details += [str(e) for e in errors]
            hint = f" ({'; '.join(details)})" if details else " (no spec file defines them)"
            raise CDIError(f"unresolvable CDI devices {', '.join(unresolved)}{hint}")
        _check_host_paths(edits)
        return Resolution(device_ids=list(device_ids), edits=edits)


def _check_host_paths(edits: ContainerEdits) -> None:
    for n in edits.device_nodes:
        host = n.get("hostPath") or n["path"]
        if not os.path.exists(host):
            raise CDIError(
                f"CDI device node {host} does not exist on the host (deviceNodes path {n['path']})"
            )
    for m in edits.mounts:
        if m.get("type") not in (None, "", "bind"):
            continue  # tmpfs, proc and friends have no host source
        if not os.path.exists(m["hostPath"]):
            raise CDIError(
                f"CDI mount source {m['hostPath']} does not exist (containerPath {m['containerPath']})"
            )


def _or_empty(value: Any) -> Any:
    return {} if value is None else value
