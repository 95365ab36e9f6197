"""Patch types: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge patch and a
simplified server-side apply. Strategic merge and apply take list semantics (merge keys, list types)
from the OpenAPI schema of the emulated version.
"""

from __future__ import annotations

import copy
from typing import Any

from .errors import ApiError, bad_request
from .schema import SchemaNode

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"
APPLY_CBOR = "application/apply-patch+cbor"
PATCH_TYPES = (MERGE, JSON_PATCH, STRATEGIC, APPLY)

# Short aliases accepted by Store.patch for in-process callers.
ALIASES = {"merge": MERGE, "json": JSON_PATCH, "strategic": STRATEGIC, "apply": APPLY}


def normalize_patch_type(patch_type: str) -> str:
    pt = ALIASES.get(patch_type, patch_type).split(";")[0].strip()
    if pt not in PATCH_TYPES:
        raise ApiError(
            415,
            "UnsupportedMediaType",
            f"the body of the request was in an unknown format - accepted media types include: "
            f"{', '.join(PATCH_TYPES)}",
        )
    return pt


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"json patch: path {path!r} must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str], path: str) -> Any:
    cur = doc
    for p in parts:
        if isinstance(cur, dict):
            if p not in cur:
                raise ApiError(422, "Invalid", f"json patch: path {path!r} does not exist (missing {p!r})")
            cur = cur[p]
        elif isinstance(cur, list):
            cur = cur[_index(cur, p, path, allow_end=False)]
        else:
            raise ApiError(422, "Invalid", f"json patch: path {path!r} goes through a scalar at {p!r}")
    return cur


def _index(lst: list[Any], p: str, path: str, allow_end: bool) -> int:
    if p == "-" and allow_end:
        return len(lst)
    try:
        i = int(p)
    except ValueError:
        raise ApiError(422, "Invalid", f"json patch: {p!r} in {path!r} is not an array index") from None
    if i < 0 or i > len(lst) or (i == len(lst) and not allow_end):
        raise ApiError(422, "Invalid", f"json patch: index {i} in {path!r} is out of range")
    return i


def json_patch(doc: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise bad_request("json patch body must be a JSON array of operations")
    doc = copy.deepcopy(doc)
    for n, op in enumerate(ops):
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise bad_request(f"json patch operation {n} must be an object with 'op' and 'path'")
        kind, path = op["op"], op["path"]
        parts = _pointer(path)
        if kind in ("add", "replace", "test") and "value" not in op:
            raise bad_request(f"json patch operation {n} ({kind} {path}) needs a 'value'")
        if kind == "test":
            if _walk(doc, parts, path) != op["value"]:
                raise ApiError(422, "Invalid", f"json patch test operation failed at {path!r}")
            continue
        if kind in ("move", "copy"):
            src = _pointer(op.get("from", ""))
            value = copy.deepcopy(_walk(doc, src, op.get("from", "")))
            if kind == "move":
                doc = _remove(doc, src, op.get("from", ""))
            doc = _add(doc, parts, value, path)
        elif kind == "add":
            doc = _add(doc, parts, copy.deepcopy(op["value"]), path)
        elif kind == "remove":
            doc = _remove(doc, parts, path)
        elif kind == "replace":
            _walk(doc, parts, path)
            doc = _remove(doc, parts, path)
            doc = _add(doc, parts, copy.deepcopy(op["value"]), path)
        else:
            raise bad_request(
                f"json patch operation {n}: unknown op {kind!r} (add, remove, replace, move, copy, test)"
            )
    return doc


def _add(doc: Any, parts: list[str], value: Any, path: str) -> Any:
    if not parts:
        return value
    parent = _walk(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, path, allow_end=True), value)
    else:
        raise ApiError(422, "Invalid", f"json patch: cannot add at {path!r}")
    return doc


def _remove(doc: Any, parts: list[str], path: str) -> Any:
    if not parts:
        return None
    parent = _walk(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise ApiError(422, "Invalid", f"json patch: cannot remove {path!r}: it does not exist")
        del parent[last]
    elif isinstance(parent, list):
        del parent[_index(parent, last, path, allow_end=False)]
    return doc


# ---- strategic merge patch ----


def strategic_merge(target: Any, patch: Any, node: SchemaNode) -> Any:
    """Apply a strategic merge patch (the subset kubectl apply and client patch calls produce).

    Supports merge-key lists, `$patch: replace|delete|merge`, `$retainKeys`,
    `$deleteFromPrimitiveList/<field>` and ignores `$setElementOrder/<field>` (order is kept as is).
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    out = dict(target)
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(out.get(field), list):
                out[field] = [x for x in out[field] if x not in (value or [])]
            continue
        child = node.child(key)
        if value is None:
            out.pop(key, None)
        elif isinstance(value, list):
            out[key] = _merge_list(out.get(key), value, child)
        elif isinstance(value, dict):
            merged = strategic_merge(out.get(key), value, child)
            if merged is None:
                out.pop(key, None)
            else:
                out[key] = merged
        else:
            out[key] = value
    if isinstance(retain, list):
        out = {k: v for k, v in out.items() if k in retain}
    return out


def _merge_list(current: Any, patch: list[Any], node: SchemaNode) -> list[Any]:
    strategy = node.patch_strategy
    key = node.merge_key
    if "merge" not in strategy.split(","):
        # atomic list: replace, but honour a `$patch: replace` marker element
        return [copy.deepcopy(x) for x in patch if not (isinstance(x, dict) and x.get("$patch"))]
    current = list(current) if isinstance(current, list) else []
    items = node.items()
    if key is None:  # merge for primitive lists: union, keep order
        for x in patch:
            if x not in current:
                current.append(copy.deepcopy(x))
        return current
    if any(isinstance(x, dict) and x.get("$patch") == "replace" for x in patch):
        return [copy.deepcopy(x) for x in patch if not (isinstance(x, dict) and x.get("$patch"))]
    for element in patch:
        if not isinstance(element, dict) or key not in element:
            raise bad_request(f"strategic merge patch: list element {element!r} lacks merge key {key!r}")
        index = next(
            (i for i, x in enumerate(current) if isinstance(x, dict) and x.get(key) == element[key]), None
        )
        if element.get("$patch") == "delete":
            if index is not None:
                del current[index]
            continue
        if index is None:
            current.append(strategic_merge({}, element, items))
        else:
            current[index] = strategic_merge(current[index], element, items)
    return current


# ---- server-side apply (simplified) ----


def apply_merge(target: Any, applied: Any, node: SchemaNode) -> Any:
    """Merge an applied configuration into the live object.

    Lists of type map merge by their map keys, sets union, atomic lists and scalars are replaced.
    Simplification (documented): conflicts between managers are never reported, and no managedFields
    are written; apply_prune removes what the same manager applied before and no longer applies.
    """
    if not isinstance(applied, dict):
        return copy.deepcopy(applied)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in applied.items():
        child = node.child(key)
        if isinstance(value, dict):
            out[key] = apply_merge(out.get(key), value, child)
        elif isinstance(value, list):
            out[key] = _apply_list(out.get(key), value, child)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _apply_list(current: Any, applied: list[Any], node: SchemaNode) -> list[Any]:
    current = list(current) if isinstance(current, list) else []
    keys = node.list_map_keys or ([node.merge_key] if node.merge_key else [])
    if node.list_type == "set":
        return current + [copy.deepcopy(x) for x in applied if x not in current]
    if node.list_type != "map" and not keys:
        return copy.deepcopy(applied)
    items = node.items()
    for element in applied:
        ident = tuple(element.get(k) for k in keys) if isinstance(element, dict) else None
        index = next(
            (
                i
                for i, x in enumerate(current)
                if isinstance(x, dict) and tuple(x.get(k) for k in keys) == ident
            ),
            None,
        )
        if index is None:
            current.append(copy.deepcopy(element))
        else:
            current[index] = apply_merge(current[index], element, items)
    return current


def apply_prune(live: Any, previous: Any, applied: Any, node: SchemaNode) -> Any:
    """Remove from `live` (a private copy) what `previous` (this manager's last applied configuration)
    set and `applied` no longer sets: server-side apply's "fields a manager stops applying are removed",
    without tracking other managers' ownership."""
    if not isinstance(live, dict) or not isinstance(previous, dict):
        return live
    applied = applied if isinstance(applied, dict) else {}
    for key, before in previous.items():
        if key in ("apiVersion", "kind"):
            continue
        if key not in applied:
            live.pop(key, None)
            continue
        child = node.child(key)
        if isinstance(before, dict) and isinstance(live.get(key), dict):
            live[key] = apply_prune(live[key], before, applied[key], child)
        elif isinstance(before, list) and isinstance(live.get(key), list) and isinstance(applied[key], list):
            live[key] = _prune_list(live[key], before, applied[key], child)
    return live


def _prune_list(live: list[Any], before: list[Any], applied: list[Any], node: SchemaNode) -> list[Any]:
    if node.list_type == "set":
        return [x for x in live if x in applied or x not in before]
    keys = node.list_map_keys or ([node.merge_key] if node.merge_key else [])
    if node.list_type != "map" and not keys:
        return live  # atomic: already replaced by the applied list

    def ident(x: Any) -> Any:
        return tuple(x.get(k) for k in keys) if isinstance(x, dict) else None

    applied_by_id = {ident(x): x for x in applied}
    before_by_id = {ident(x): x for x in before}
    out = []
    for element in live:
        i = ident(element)
        if i in before_by_id and i not in applied_by_id:
            continue
        if i in before_by_id:
            element = apply_prune(element, before_by_id[i], applied_by_id[i], node.items())
        out.append(element)
    return out
