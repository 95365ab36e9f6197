"""Label selectors (equality and set-based) and field selectors, parsed once and applied to dicts."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import bad_request
from .resources import ResourceType

_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", "gt", "lt"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if not present:
            return False
        try:
            number = int(value or "")
        except ValueError:
            return False
        bound = int(self.values[0])
        return number > bound if self.op == "gt" else number < bound


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


_SET_RE = re.compile(r"^\s*(\S+)\s+(in|notin)\s*\((.*)\)\s*$")
_CMP_RE = re.compile(r"^\s*([^=!<>\s]+)\s*(==|=|!=|>|<)\s*(\S*)\s*$")


def parse_label_selector(text: str | None) -> list[Requirement]:
    if not text or not text.strip():
        return []
    reqs: list[Requirement] = []
    for raw in _split_top_level(text):
        part = raw.strip()
        if not part:
            raise bad_request(f"unable to parse requirement: empty requirement in label selector {text!r}")
        if m := _SET_RE.match(part):
            key, op, vals = m.group(1), m.group(2), tuple(v.strip() for v in m.group(3).split(","))
            if any(not _VALUE.match(v) for v in vals):
                raise bad_request(f"unable to parse requirement: invalid label value in {part!r}")
            reqs.append(Requirement(_check_key(key, part), op, vals))
        elif m := _CMP_RE.match(part):
            key, op, value = m.group(1), m.group(2), m.group(3)
            if op in (">", "<"):
                if not re.fullmatch(r"-?\d+", value):
                    raise bad_request(f"unable to parse requirement: {part!r}: {op} needs an integer value")
                reqs.append(Requirement(_check_key(key, part), "gt" if op == ">" else "lt", (value,)))
                continue
            if not _VALUE.match(value):
                raise bad_request(
                    f"unable to parse requirement: invalid label value {value!r} in {part!r}: "
                    "must be 63 characters or less, alphanumerics, '-', '_' or '.'"
                )
            reqs.append(Requirement(_check_key(key, part), "!=" if op == "!=" else "=", (value,)))
        elif part.startswith("!"):
            reqs.append(Requirement(_check_key(part[1:].strip(), part), "!"))
        else:
            reqs.append(Requirement(_check_key(part, part), "exists"))
    return reqs


def _check_key(key: str, part: str) -> str:
    if not _KEY.match(key) or len(key.split("/")[-1]) > 63:
        raise bad_request(
            f"unable to parse requirement: invalid label key {key!r} in {part!r}: "
            "name part must be 63 characters or less, alphanumerics, '-', '_' or '.', "
            "with an optional DNS subdomain prefix and '/'"
        )
    return key


def labels_match(reqs: list[Requirement], obj: dict[str, Any]) -> bool:
    if not reqs:
        return True
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(r.matches(labels) for r in reqs)


# ---- field selectors ----


@dataclass(frozen=True)
class FieldRequirement:
    path: str
    negate: bool
    value: str


def _unescape_split(text: str, sep: str) -> list[str]:
    out, cur, i = [], [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            cur.append(text[i + 1])
            i += 2
            continue
        if ch == sep:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    out.append("".join(cur))
    return out


def parse_field_selector(text: str | None, rt: ResourceType) -> list[FieldRequirement]:
    if not text or not text.strip():
        return []
    allowed = {"metadata.name", "metadata.namespace", *rt.field_labels}
    reqs = []
    for part in _unescape_split(text, ","):
        part = part.strip()
        if not part:
            continue
        if "!=" in part:
            path, value, negate = *part.split("!=", 1), True
        elif "==" in part:
            path, value, negate = *part.split("==", 1), False
        elif "=" in part:
            path, value, negate = *part.split("=", 1), False
        else:
            raise bad_request(f"invalid selector: {part!r}; expected key=value, key==value or key!=value")
        path = path.strip()
        if path not in allowed:
            raise bad_request(
                f"field label not supported: {path} (supported for {rt.name}: {', '.join(sorted(allowed))})"
            )
        reqs.append(FieldRequirement(path, negate, value.strip()))
    return reqs


def field_value(obj: dict[str, Any], path: str) -> str:
    if path == "source":  # events: the selector field "source" means source.component
        path = "source.component"
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def fields_match(reqs: list[FieldRequirement], obj: dict[str, Any]) -> bool:
    for r in reqs:
        equal = field_value(obj, r.path) == r.value
        if equal == r.negate:
            return False
    return True


def make_predicate(
    rt: ResourceType, label_selector: str | None, field_selector: str | None, namespace: str | None = None
) -> Callable[[dict[str, Any]], bool] | None:
    """A single predicate for list and watch; None when nothing filters (the fast path)."""
    labels = parse_label_selector(label_selector)
    fields = parse_field_selector(field_selector, rt)
    if not labels and not fields and not namespace:
        return None

    def predicate(obj: dict[str, Any]) -> bool:
        if namespace and (obj.get("metadata") or {}).get("namespace") != namespace:
            return False
        return labels_match(labels, obj) and fields_match(fields, obj)

    return predicate
