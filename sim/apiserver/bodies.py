"""Request bodies: only the media types the Kubernetes API defines, decoded with bounded cost.

A body in any other type (text/plain, a form) is a 415, so a browser's "simple" cross-site request can
never be taken as an object. JSON and YAML are refused with a 400 when they nest deeper than the limit,
and YAML anchors/aliases are counted from the parser's events before any object is built: a body whose
aliases would expand past the budget (a "billion laughs") is refused without being expanded.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from .errors import ApiError, bad_request
from .patch import APPLY, JSON_PATCH, MERGE, STRATEGIC

JSON = "application/json"
YAML = "application/yaml"
PROTOBUF = "application/vnd.kubernetes.protobuf"
# What a create, update or delete body may be in (an empty Content-Type means JSON, as upstream).
OBJECT_TYPES = (JSON, YAML, PROTOBUF)
PATCH_TYPES = (JSON_PATCH, MERGE, STRATEGIC, APPLY)

try:  # libyaml: fast, and it stops at a nesting depth of 1000 by itself
    from yaml.cyaml import CParser, CSafeLoader

    _YAML_LOADER: Any = CSafeLoader
    _YAML_PARSER: Any = CParser
except ImportError:  # pragma: no cover - pyyaml without libyaml
    _YAML_LOADER = yaml.SafeLoader
    _YAML_PARSER = yaml.SafeLoader


def media_type(content_type: str | None) -> str:
    """`application/json; charset=utf-8` -> `application/json`; '' for a missing header."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def unsupported(got: str, accepted: tuple[str, ...]) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: "
        f"{', '.join(accepted)} (got {got or 'no Content-Type'})",
    )


def object_media_type(content_type: str | None) -> str:
    """The media type of a create/update/delete body, or a 415."""
    ctype = media_type(content_type) or JSON
    if ctype not in OBJECT_TYPES:
        raise unsupported(ctype, OBJECT_TYPES)
    return ctype


def patch_media_type(content_type: str | None) -> str:
    ctype = media_type(content_type)
    if ctype not in PATCH_TYPES:
        raise unsupported(ctype, PATCH_TYPES)
    return ctype


def too_deep(max_depth: int) -> ApiError:
    return bad_request(f"the request body nests deeper than {max_depth} levels")


def check_depth(value: Any, max_depth: int) -> None:
    """400 when `value` nests deeper than max_depth (iterative: no recursion on hostile input)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            raise too_deep(max_depth)
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))


def decode_json(raw: bytes, max_depth: int) -> Any:
    try:
        value = json.loads(raw)
    except RecursionError:  # json's C scanner stops at the interpreter's recursion limit
        raise too_deep(max_depth) from None
    except (ValueError, UnicodeDecodeError) as e:
        raise bad_request(f"the request body is not valid JSON: {e}") from None
    check_depth(value, max_depth)
    return value


def check_yaml_events(raw: bytes, max_depth: int, alias_budget: int) -> None:
    """Walk the YAML event stream (flat, no objects built): nesting depth, counting what aliases expand
    to. Raises 400 when either is over its limit."""
    # Per open collection: [anchor or None, expanded node count, deepest level reached below it].
    stack: list[list[Any]] = []
    anchors: dict[str, tuple[int, int]] = {}  # anchor -> (expanded nodes, depth below the node)
    expanded = 0  # nodes the aliases add: each alias stands for a whole copy of its anchor
    for event in yaml.parse(raw, Loader=_YAML_PARSER):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            stack.append([event.anchor, 1, 0])
            if len(stack) > max_depth:
                raise too_deep(max_depth)
            continue
        if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            anchor, count, below = stack.pop()
            node = (count, below + 1)
        elif isinstance(event, yaml.ScalarEvent):
            anchor, node = event.anchor, (1, 0)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in anchors:
                raise bad_request(f"the request body is not valid YAML: unknown alias {event.anchor!r}")
            anchor, node = None, anchors[event.anchor]
            if len(stack) + node[1] > max_depth:
                raise too_deep(max_depth)
        else:
            continue
        if anchor is not None:
            anchors[anchor] = node
        if isinstance(event, yaml.AliasEvent):
            expanded += node[0]
        if expanded > alias_budget:
            raise bad_request(
                f"the request body's YAML aliases expand to more than {alias_budget} extra nodes; "
                "write the object out without anchors and aliases"
            )
        if stack:
            stack[-1][1] += node[0]
            stack[-1][2] = max(stack[-1][2], node[1])


def decode_yaml(raw: bytes, max_depth: int, alias_budget: int) -> Any:
    try:
        check_yaml_events(raw, max_depth, alias_budget)
        return yaml.load(raw, Loader=_YAML_LOADER)
    except yaml.YAMLError as e:
        raise bad_request(f"the request body is not valid YAML: {e}") from None
