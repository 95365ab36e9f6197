"""Strict OpenAPI schema validation of written objects, from the schemas kubernetes-validate ships.

The schemas are loaded once per emulated version and compiled per kind with jsonschema-rs (microseconds
per object, where kubernetes_validate.validate costs ~29 ms). The same definitions drive the
strategic-merge and apply patch logic (list merge keys), see `SchemaNode`.
"""

from __future__ import annotations

import json
import re
import threading
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs
import kubernetes_validate

from .errors import ApiError, field_cause, invalid
from .resources import ResourceType

_SCHEMA_ROOT = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
_UNEXPECTED = re.compile(r"'([^']+)'")


@cache
def _definitions(kube_version: str) -> dict[str, Any]:
    path = _SCHEMA_ROOT / f"v{kube_version}.0-local-strict" / "_definitions.json"
    if not path.exists():
        raise ValueError(
            f"kubernetes-validate ships no schema for Kubernetes {kube_version} ({path} missing)"
        )
    return json.loads(path.read_text())["$defs"]


class Schemas:
    """Validators and navigation for one Kubernetes version."""

    def __init__(self, kube_version: str) -> None:
        self.kube_version = kube_version
        self.defs = _definitions(kube_version)
        self._gvk: dict[tuple[str, str, str], str] = {}
        for name, d in self.defs.items():
            for gvk in d.get("x-kubernetes-group-version-kind", []) or []:
                key = (gvk.get("group", ""), gvk.get("version", ""), gvk.get("kind", ""))
                # the per-kind definition wins over e.g. DeleteOptions' long list of GVKs
                if name.endswith("." + key[2]):
                    self._gvk[key] = name
        self._validators: dict[str, Any] = {}
        self._lock = threading.Lock()

    def definition_for(self, rt: ResourceType) -> str:
        name = self._gvk.get((rt.group, rt.version, rt.kind))
        if name is None:
            raise ApiError(
                500,
                "InternalError",
                f"no OpenAPI schema for {rt.api_version} {rt.kind} in Kubernetes {self.kube_version}",
            )
        return name

    def _validator(self, rt: ResourceType) -> Any:
        name = self.definition_for(rt)
        v = self._validators.get(name)
        if v is None:
            with self._lock:
                v = self._validators.get(name)
                if v is None:
                    schema = {
                        "$schema": "https://json-schema.org/draft/2020-12/schema",
                        "$ref": f"#/$defs/{name}",
                        "$defs": self.defs,
                    }
                    v = jsonschema_rs.Draft202012Validator(schema)
                    self._validators[name] = v
        return v

    def root(self, rt: ResourceType) -> SchemaNode:
        return SchemaNode(self.defs, self.defs[self.definition_for(rt)])

    def validate(self, rt: ResourceType, obj: dict[str, Any], *, unknown_fields: str = "Strict") -> list[str]:
        """Raise ApiError for schema violations; return warnings (unknown fields under Warn).

        Unknown fields and wrong JSON types are decode errors in a real apiserver (400 BadRequest,
        "strict decoding error"); everything else is 422 Invalid. With unknown_fields Ignore or Warn the
        unknown fields are removed from `obj` instead, as a real apiserver drops them.
        """
        validator = self._validator(rt)
        if validator.is_valid(obj):
            return []
        name = (obj.get("metadata") or {}).get("name") or ""
        unknown: list[tuple[list[Any], str]] = []
        decode: list[dict[str, str]] = []
        invalid_causes: list[dict[str, str]] = []
        root = self.root(rt)
        for err in validator.iter_errors(obj):
            path = list(err.instance_path)
            kind = type(err.kind).__name__
            if kind == "AdditionalProperties":
                for field in _UNEXPECTED.findall(err.message.split("(", 1)[-1]):
                    unknown.append((path, field))
            elif kind == "Type":
                decode.append(
                    field_cause(
                        format_path(root, path),
                        f"Invalid value: {_short(err.instance)}: {err.message}",
                        "FieldValueTypeInvalid",
                    )
                )
            elif kind == "Required":
                invalid_causes.append(
                    field_cause(
                        format_path(root, [*path, _missing(err.message)]),
                        "Required value",
                        "FieldValueRequired",
                    )
                )
            elif kind == "Enum":
                invalid_causes.append(
                    field_cause(
                        format_path(root, path),
                        f"Unsupported value: {_short(err.instance)}: {err.message}",
                        "FieldValueNotSupported",
                    )
                )
            else:
                invalid_causes.append(
                    field_cause(
                        format_path(root, path), f"Invalid value: {_short(err.instance)}: {err.message}"
                    )
                )
        warnings: list[str] = []
        if unknown and unknown_fields != "Strict":
            for path, field in unknown:
                _remove(obj, path, field)
                warnings.append(f'unknown field "{format_path(root, [*path, field])}"')
            if unknown_fields == "Ignore":
                warnings = []
            unknown = []
        if unknown or decode:
            causes = [
                field_cause(
                    format_path(root, [*p, f]),
                    f'unknown field "{format_path(root, [*p, f])}"',
                    "FieldValueUnknown",
                )
                for p, f in unknown
            ] + decode
            detail = "; ".join(
                f'unknown field "{c["field"]}"'
                if c["reason"] == "FieldValueUnknown"
                else f"{c['field']}: {c['message']}"
                for c in causes
            )
            raise ApiError(
                400,
                "BadRequest",
                f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                f"strict decoding error: {detail}",
                causes,
            )
        if invalid_causes:
            raise invalid(rt.kind, name, rt.group, invalid_causes)
        return warnings


def _missing(message: str) -> str:
    m = re.match(r'"([^"]+)" is a required property', message)
    return m.group(1) if m else "?"


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _remove(obj: Any, path: list[Any], field: str) -> None:
    cur = obj
    for p in path:
        cur = cur[p]
    if isinstance(cur, dict):
        cur.pop(field, None)


class SchemaNode:
    """A position in the schema tree, resolving $ref; used for field paths and patch list semantics."""

    __slots__ = ("defs", "schema")

    def __init__(self, defs: dict[str, Any], schema: dict[str, Any] | None) -> None:
        self.defs = defs
        self.schema = self._resolve(schema or {})

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            extra = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**self.defs[schema["$ref"].rsplit("/", 1)[-1]], **extra}
        return schema

    def is_map(self) -> bool:
        """A free-form map (map[string]X) rather than a struct."""
        return "properties" not in self.schema and isinstance(self.schema.get("additionalProperties"), dict)

    def child(self, key: str) -> SchemaNode:
        props = self.schema.get("properties")
        if props and key in props:
            return SchemaNode(self.defs, props[key])
        extra = self.schema.get("additionalProperties")
        if isinstance(extra, dict):
            return SchemaNode(self.defs, extra)
        return SchemaNode(self.defs, None)

    def items(self) -> SchemaNode:
        return SchemaNode(self.defs, self.schema.get("items"))

    @property
    def list_type(self) -> str | None:
        return self.schema.get("x-kubernetes-list-type")

    @property
    def merge_key(self) -> str | None:
        return self.schema.get("x-kubernetes-patch-merge-key")

    @property
    def patch_strategy(self) -> str:
        return self.schema.get("x-kubernetes-patch-strategy", "")

    @property
    def list_map_keys(self) -> list[str]:
        return list(self.schema.get("x-kubernetes-list-map-keys") or [])


def format_path(node: SchemaNode, path: list[Any]) -> str:
    """Render an instance path like apimachinery field paths: spec.devices[0].capacity[memory].value."""
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
            node = node.items()
            continue
        if node.is_map():
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
        node = node.child(str(p))
    return out


_by_version: dict[str, Schemas] = {}
_by_version_lock = threading.Lock()


def schemas_for(kube_version: str) -> Schemas:
    with _by_version_lock:
        s = _by_version.get(kube_version)
        if s is None:
            s = _by_version[kube_version] = Schemas(kube_version)
        return s


# ---- quantity canonicalisation ----
# A real apiserver decodes every resource.Quantity and stores its canonical form ("1024Mi" -> "1Gi",
# "0.5Gi" -> "512Mi"); a string that is not a quantity fails decoding. The plan below lists, per
# definition, only the paths that can hold a Quantity, so writes of kinds without any cost nothing.

_QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
_Plan = tuple[Any, ...] | None


class _Planner:
    def __init__(self, defs: dict[str, Any]) -> None:
        self.defs = defs
        self.memo: dict[str, _Plan] = {}
        self.active: set[str] = set()

    def for_ref(self, ref: str) -> _Plan:
        name = ref.rsplit("/", 1)[-1]
        if name == _QUANTITY:
            return ("q",)
        if name in self.memo:
            return self.memo[name]
        if name in self.active:  # recursive definitions (JSONSchemaProps) hold no quantities
            return None
        self.active.add(name)
        plan = self.for_schema(self.defs.get(name, {}))
        self.active.discard(name)
        self.memo[name] = plan
        return plan

    def for_schema(self, schema: dict[str, Any]) -> _Plan:
        if "$ref" in schema:
            return self.for_ref(schema["$ref"])
        if "items" in schema and isinstance(schema["items"], dict):
            item = self.for_schema(schema["items"])
            return ("arr", item) if item else None
        props = {}
        for key, sub in (schema.get("properties") or {}).items():
            p = self.for_schema(sub)
            if p:
                props[key] = p
        extra = schema.get("additionalProperties")
        extra_plan = self.for_schema(extra) if isinstance(extra, dict) else None
        if props or extra_plan:
            return ("obj", props, extra_plan)
        return None


def _canonicalize(value: Any, plan: _Plan, path: list[Any], bad: list[tuple[list[Any], Any, str]]) -> Any:
    from drakit.quantity import (  # drakit/quantity.py: the one home for quantity maths
        QuantityError,
        canonical,
    )

    if plan is None or value is None:
        return value
    kind = plan[0]
    if kind == "q":
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            return value  # a wrong JSON type is reported by the schema check
        try:
            return canonical(value)
        except QuantityError as e:
            bad.append((path, value, str(e)))
            return value
    if kind == "arr":
        if isinstance(value, list):
            for i, item in enumerate(value):
                value[i] = _canonicalize(item, plan[1], [*path, i], bad)
        return value
    if isinstance(value, dict):
        props, extra = plan[1], plan[2]
        for key in list(value):
            sub = props.get(key, extra if key not in props else None)
            if sub:
                value[key] = _canonicalize(value[key], sub, [*path, key], bad)
    return value


def canonicalize_quantities(schemas: Schemas, rt: ResourceType, obj: dict[str, Any]) -> None:
    """Rewrite every Quantity in `obj` to its canonical form; 400 BadRequest naming fields that are not
    quantities (as a real apiserver's decoder reports them)."""
    planner = schemas.__dict__.setdefault("_planner", _Planner(schemas.defs))
    plan = planner.for_ref(schemas.definition_for(rt))
    if not plan:
        return
    bad: list[tuple[list[Any], Any, str]] = []
    _canonicalize(obj, plan, [], bad)
    if bad:
        root = schemas.root(rt)
        causes = [
            field_cause(
                format_path(root, p),
                f"Invalid value: {_short(v)}: quantities must match the regular "
                "expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                "FieldValueInvalid",
            )
            for p, v, _ in bad
        ]
        detail = "; ".join(f"{c['field']}: {c['message']}" for c in causes)
        raise ApiError(
            400,
            "BadRequest",
            f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: {detail}',
            causes,
        )
