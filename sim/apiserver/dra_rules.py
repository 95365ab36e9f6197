"""DRA rules a real kube-apiserver enforces on resource.k8s.io/v1 objects beyond the OpenAPI schema
(pkg/apis/resource/validation and the registry strategies). Gate dropping lives in dra_gates.py.

Written from the team's dra-facts.md §1.3, §1.5, §2.1 and §3.1. Quantities are parsed by
drakit/quantity.py, the one home for quantity maths.
"""

from __future__ import annotations

import contextvars
import itertools
import math
import re
from decimal import Decimal
from typing import Any

from drakit.quantity import parse_quantity

from ..cel import validate_selector
from ..config import SimConfig
from .errors import field_cause
from .resources import ResourceType

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_C_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)"
    r"(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

MAX_DEVICES = 128
MAX_DEVICES_ADVANCED = 64
MAX_ATTRIBUTES_AND_CAPACITIES = 32
MAX_REQUESTS = 32
MAX_SUBREQUESTS = 8
MAX_SELECTORS = 32
MAX_CONSTRAINTS = 32
MAX_CONFIGS = 32
MAX_RESULTS = 32
MAX_RESERVED_FOR = 256
MAX_VALID_VALUES = 10
MAX_CEL_LENGTH = 10 * 1024

Causes = list[dict[str, str]]
# (DRAConsumableCapacity, DRAListTypeAttributes) for CEL selectors of the object being validated: the
# new-expressions CEL environment depends on them. Set by validate().
_cel_gates: contextvars.ContextVar[tuple[bool, bool]] = contextvars.ContextVar(
    "cel_gates", default=(True, False)
)
_CEL_REASONS = {
    "Invalid": "FieldValueInvalid",
    "Forbidden": "FieldValueForbidden",
    "Required": "FieldValueRequired",
    "InternalError": "InternalError",
}


def _bad(causes: Causes, path: str, message: str, reason: str = "FieldValueInvalid") -> None:
    causes.append(field_cause(path, message, reason))


def _required(causes: Causes, path: str) -> None:
    causes.append(field_cause(path, "Required value", "FieldValueRequired"))


def _dns_subdomain(causes: Causes, path: str, value: Any, max_len: int = 253) -> None:
    if not isinstance(value, str) or not value:
        _required(causes, path)
    elif not _DNS_SUBDOMAIN.match(value) or len(value) > max_len:
        _bad(
            causes,
            path,
            f"Invalid value: {value!r}: must be a lowercase RFC 1123 subdomain of at most "
            f"{max_len} characters (lower case alphanumerics, '-' or '.')",
        )


def _dns_label(causes: Causes, path: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        _required(causes, path)
    elif not _DNS_LABEL.match(value) or len(value) > 63:
        _bad(
            causes,
            path,
            f"Invalid value: {value!r}: must be a lowercase RFC 1123 label (lower case "
            "alphanumerics or '-', at most 63 characters)",
        )


def _qualified_name(causes: Causes, path: str, key: str) -> None:
    domain, slash, ident = key.rpartition("/")
    if slash and (not _DNS_SUBDOMAIN.match(domain) or len(domain) > 63):
        _bad(
            causes,
            path,
            f"Invalid value: {key!r}: the domain before '/' must be a DNS subdomain of at most 63 characters",
        )
    if not _C_IDENT.match(ident) or len(ident) > 32:
        _bad(
            causes,
            path,
            f"Invalid value: {key!r}: the name must be a C identifier of at most 32 characters "
            "(letters, digits, '_', not starting with a digit)",
        )


def _fully_qualified_name(causes: Causes, path: str, key: Any) -> None:
    if not isinstance(key, str) or "/" not in key:
        _bad(
            causes,
            path,
            f"Invalid value: {key!r}: a fully qualified name must be a domain and a name "
            "separated by a slash",
        )
        return
    _qualified_name(causes, path, key)


def _quantity(causes: Causes, path: str, value: Any) -> Decimal | None:
    if value is None:
        _required(causes, path)
        return None
    try:
        return parse_quantity(value).value
    except (ValueError, TypeError, ArithmeticError):
        _bad(
            causes,
            path,
            f"Invalid value: {value!r}: quantities must match the regular expression "
            "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' (for example 6Gi or 1024)",
        )
        return None


def _int_value(q: Decimal, milli: bool) -> int:
    """Quantity.Value() (rounds up) or MilliValue() for fractional ranges."""
    return math.ceil(q * 1000) if milli else math.ceil(q)


# ---- ResourceSlice ----


def _validate_capacity(causes: Causes, path: str, cap: dict[str, Any], multi: bool, milli: bool) -> None:
    value = _quantity(causes, f"{path}.value", cap.get("value"))
    policy = cap.get("requestPolicy")
    if policy is None:
        return
    if not multi:
        _bad(
            causes,
            f"{path}.requestPolicy",
            "Forbidden: allowMultipleAllocations must be true",
            "FieldValueForbidden",
        )
        return
    ppath = f"{path}.requestPolicy"
    values, rng = policy.get("validValues"), policy.get("validRange")
    if values is not None and rng is not None:
        _bad(causes, ppath, "Forbidden: exactly one policy can be specified", "FieldValueForbidden")
        return
    default = None
    if "default" in policy and policy["default"] is not None:
        default = _quantity(causes, f"{ppath}.default", policy["default"])
    elif values is not None or rng is not None:
        _required(causes, f"{ppath}.default")
    if value is None:
        return
    if default is not None and default > value:
        _bad(
            causes,
            f"{ppath}.default",
            f"Invalid value: {policy['default']!r}: must be less than or equal to "
            f"capacity value ({cap.get('value')})",
        )
    if values is not None:
        if len(values) > MAX_VALID_VALUES:
            _bad(
                causes,
                f"{ppath}.validValues",
                f"Too many: {len(values)}: must have at most {MAX_VALID_VALUES} items",
                "FieldValueTooMany",
            )
        parsed = [_quantity(causes, f"{ppath}.validValues[{i}]", v) for i, v in enumerate(values)]
        ok = [p for p in parsed if p is not None]
        for i, p in enumerate(parsed):
            if p is not None and p > value:
                _bad(
                    causes,
                    f"{ppath}.validValues[{i}]",
                    f"Invalid value: {values[i]!r}: must be less than or "
                    f"equal to capacity value ({cap.get('value')})",
                )
        if len(ok) == len(parsed) and any(b <= a for a, b in itertools.pairwise(ok)):
            _bad(
                causes,
                f"{ppath}.validValues",
                "Invalid value: must be sorted in ascending order without duplicates",
            )
        if default is not None and ok and default not in ok:
            _bad(
                causes,
                f"{ppath}.default",
                f"Invalid value: {policy['default']!r}: must be one of validValues",
            )
    if rng is not None:
        rpath = f"{ppath}.validRange"
        mn = _quantity(causes, f"{rpath}.min", rng.get("min"))
        mx = _quantity(causes, f"{rpath}.max", rng["max"]) if rng.get("max") is not None else None
        st = _quantity(causes, f"{rpath}.step", rng["step"]) if rng.get("step") is not None else None
        if mn is None:
            return
        if mn > value:
            _bad(
                causes,
                f"{rpath}.min",
                f"Invalid value: {rng['min']!r}: must be less than or equal to capacity "
                f"value ({cap.get('value')})",
            )
        if default is not None and default < mn:
            _bad(
                causes,
                f"{ppath}.default",
                f"Invalid value: {policy['default']!r}: must be greater than or "
                f"equal to validRange.min ({rng['min']})",
            )
        if mx is not None:
            if mx < mn:
                _bad(
                    causes,
                    f"{rpath}.max",
                    f"Invalid value: {rng['max']!r}: must be greater than or equal to "
                    f"validRange.min ({rng['min']})",
                )
            if mx > value:
                _bad(
                    causes,
                    f"{rpath}.max",
                    f"Invalid value: {rng['max']!r}: must be less than or equal to "
                    f"capacity value ({cap.get('value')})",
                )
            if default is not None and default > mx:
                _bad(
                    causes,
                    f"{ppath}.default",
                    f"Invalid value: {policy['default']!r}: must be less than or "
                    f"equal to validRange.max ({rng['max']})",
                )
        if st is not None:
            if st <= 0:
                _bad(causes, f"{rpath}.step", f"Invalid value: {rng['step']!r}: must be positive")
                return
            if mn + st > value:
                _bad(
                    causes,
                    f"{rpath}.step",
                    f"Invalid value: {rng['step']!r}: validRange.min + step must be less "
                    f"than or equal to capacity value ({cap.get('value')})",
                )
            imn, ist = _int_value(mn, milli), _int_value(st, milli)
            for label, q, raw in (
                ("default", default, policy.get("default")),
                ("validRange.max", mx, rng.get("max")),
            ):
                if q is not None and (_int_value(q, milli) - imn) % ist != 0:
                    field = f"{ppath}.default" if label == "default" else f"{rpath}.max"
                    _bad(
                        causes,
                        field,
                        f"Invalid value: {raw!r}: must be validRange.min ({rng['min']}) plus a "
                        f"multiple of validRange.step ({rng['step']})",
                    )


def _validate_attribute(causes: Causes, path: str, attr: Any, list_types: bool) -> None:
    if not isinstance(attr, dict):
        return
    scalar = [k for k in ("int", "bool", "string", "version") if attr.get(k) is not None]
    lists = [k for k in ("ints", "bools", "strings", "versions") if attr.get(k) is not None]
    if lists and not list_types:
        _bad(
            causes,
            f"{path}.{lists[0]}",
            "Forbidden: list attributes need the DRAListTypeAttributes feature gate",
            "FieldValueForbidden",
        )
    chosen = scalar + lists
    if len(chosen) != 1:
        _bad(
            causes,
            path,
            "Invalid value: exactly one value must be specified (int, bool, string or version)"
            if chosen
            else "Required value: exactly one value must be specified",
            "FieldValueInvalid",
        )
        return
    kind = chosen[0]
    if kind == "string" and len(attr["string"]) > 64:
        _bad(
            causes,
            f"{path}.string",
            f"Too long: may not be more than 64 bytes (got {len(attr['string'])})",
            "FieldValueTooLong",
        )
    if kind == "version":
        v = attr["version"]
        if len(v) > 64:
            _bad(causes, f"{path}.version", "Too long: may not be more than 64 bytes", "FieldValueTooLong")
        elif not _SEMVER.match(v):
            _bad(
                causes,
                f"{path}.version",
                f"Invalid value: {v!r}: must be a semantic version 2.0.0 string (for example 1.2.3)",
            )


def validate_slice(obj: dict[str, Any], config: SimConfig) -> Causes:
    causes: Causes = []
    spec = obj.get("spec") or {}
    _dns_subdomain(causes, "spec.driver", spec.get("driver"), 63)
    pool = spec.get("pool") or {}
    pname = pool.get("name")
    if not pname:
        _required(causes, "spec.pool.name")
    elif len(pname) > 253 or any(not _DNS_SUBDOMAIN.match(part) for part in pname.split("/")):
        _bad(
            causes,
            "spec.pool.name",
            f"Invalid value: {pname!r}: must be one or more DNS subdomains separated by "
            "'/', at most 253 characters",
        )
    if isinstance(pool.get("generation"), int) and pool["generation"] < 0:
        _bad(causes, "spec.pool.generation", "Invalid value: must be greater than or equal to 0")
    count = pool.get("resourceSliceCount")
    if isinstance(count, int) and count <= 0:
        _bad(causes, "spec.pool.resourceSliceCount", "Invalid value: must be greater than 0")
    selectors = [
        k
        for k in ("nodeName", "nodeSelector", "allNodes", "perDeviceNodeSelection")
        if spec.get(k) not in (None, False, "")
    ]
    if len(selectors) != 1:
        _bad(
            causes,
            "spec",
            "Invalid value: exactly one of `nodeName`, `nodeSelector`, `allNodes`, "
            f"`perDeviceNodeSelection` is required (found {len(selectors)})",
        )
    devices = spec.get("devices") or []
    if devices and spec.get("sharedCounters"):
        _bad(
            causes,
            "spec",
            "Forbidden: only one of `devices` and `sharedCounters` may be set",
            "FieldValueForbidden",
        )
    advanced = any(isinstance(d, dict) and (d.get("taints") or d.get("consumesCounters")) for d in devices)
    limit = MAX_DEVICES_ADVANCED if advanced else MAX_DEVICES
    if len(devices) > limit:
        _bad(
            causes,
            "spec.devices",
            f"Too many: {len(devices)}: must have at most {limit} items",
            "FieldValueTooMany",
        )
    milli = config.gate("DRAFractionalCapacityRange")
    list_types = config.gate("DRAListTypeAttributes")
    seen: set[str] = set()
    for i, dev in enumerate(devices):
        if not isinstance(dev, dict):
            continue
        path = f"spec.devices[{i}]"
        name = dev.get("name")
        _dns_label(causes, f"{path}.name", name)
        if name in seen:
            _bad(causes, f"{path}.name", f"Duplicate value: {name!r}", "FieldValueDuplicate")
        seen.add(name)
        attrs = dev.get("attributes") or {}
        caps = dev.get("capacity") or {}
        if len(attrs) + len(caps) > MAX_ATTRIBUTES_AND_CAPACITIES:
            _bad(
                causes,
                path,
                f"Too many: {len(attrs) + len(caps)}: must have at most "
                f"{MAX_ATTRIBUTES_AND_CAPACITIES} attributes and capacities combined",
                "FieldValueTooMany",
            )
        for key, attr in attrs.items():
            _qualified_name(causes, f"{path}.attributes[{key}]", key)
            _validate_attribute(causes, f"{path}.attributes[{key}]", attr, list_types)
        multi = dev.get("allowMultipleAllocations") is True
        for key, cap in caps.items():
            _qualified_name(causes, f"{path}.capacity[{key}]", key)
            if isinstance(cap, dict):
                _validate_capacity(causes, f"{path}.capacity[{key}]", cap, multi, milli)
        dev_selectors = [
            k for k in ("nodeName", "nodeSelector", "allNodes") if dev.get(k) not in (None, False, "")
        ]
        if spec.get("perDeviceNodeSelection") and len(dev_selectors) != 1:
            _bad(
                causes,
                path,
                "Invalid value: with perDeviceNodeSelection exactly one of `nodeName`, "
                "`nodeSelector`, `allNodes` is required on each device",
            )
        elif not spec.get("perDeviceNodeSelection") and dev_selectors:
            _bad(
                causes,
                f"{path}.{dev_selectors[0]}",
                "Forbidden: only allowed when perDeviceNodeSelection is set",
                "FieldValueForbidden",
            )
    return causes


# ---- ResourceClaim / ResourceClaimTemplate ----


def _validate_selectors(causes: Causes, path: str, selectors: Any) -> None:
    selectors = selectors or []
    if len(selectors) > MAX_SELECTORS:
        _bad(
            causes,
            path,
            f"Too many: {len(selectors)}: must have at most {MAX_SELECTORS} items",
            "FieldValueTooMany",
        )
    for i, sel in enumerate(selectors):
        expr = ((sel or {}).get("cel") or {}).get("expression")
        if not expr:
            _required(causes, f"{path}[{i}].cel.expression")
        elif len(expr) > MAX_CEL_LENGTH:
            _bad(
                causes,
                f"{path}[{i}].cel.expression",
                f"Too long: may not be more than {MAX_CEL_LENGTH} bytes",
                "FieldValueTooLong",
            )
        else:
            consumable, lists = _cel_gates.get()
            problem = validate_selector(expr, consumable_capacity=consumable, list_type_attributes=lists)
            if problem is None:
                continue
            if problem.reason == "Invalid":
                message = f"Invalid value: {expr!r}: {problem.detail}"
            elif problem.reason == "Forbidden":
                message = f"Forbidden: {problem.detail}"
            elif problem.reason == "Required":
                message = f"Required value: {problem.detail}"
            else:
                message = f"Internal error: {problem.detail}"
            _bad(causes, f"{path}[{i}].cel.expression", message, _CEL_REASONS[problem.reason])


def _validate_exact(causes: Causes, path: str, req: dict[str, Any]) -> None:
    _dns_subdomain(causes, f"{path}.deviceClassName", req.get("deviceClassName"))
    _validate_selectors(causes, f"{path}.selectors", req.get("selectors"))
    mode = req.get("allocationMode", "ExactCount")
    count = req.get("count")
    if mode == "ExactCount" and isinstance(count, int) and count <= 0:
        _bad(causes, f"{path}.count", f"Invalid value: {count}: must be greater than zero")
    if mode == "All" and count not in (None, 0):
        _bad(
            causes,
            f"{path}.count",
            f"Invalid value: {count}: must not be specified when allocationMode is All",
        )
    if mode not in ("ExactCount", "All"):
        _bad(
            causes,
            f"{path}.allocationMode",
            f'Unsupported value: {mode!r}: supported values: "All", "ExactCount"',
            "FieldValueNotSupported",
        )
    for key, q in (((req.get("capacity") or {}).get("requests")) or {}).items():
        _qualified_name(causes, f"{path}.capacity.requests[{key}]", key)
        _quantity(causes, f"{path}.capacity.requests[{key}]", q)


def validate_claim_spec(causes: Causes, path: str, spec: dict[str, Any]) -> set[str]:
    devices = spec.get("devices") or {}
    requests = devices.get("requests") or []
    if len(requests) > MAX_REQUESTS:
        _bad(
            causes,
            f"{path}.devices.requests",
            f"Too many: {len(requests)}: must have at most {MAX_REQUESTS} items",
            "FieldValueTooMany",
        )
    names: set[str] = set()
    for i, req in enumerate(requests):
        if not isinstance(req, dict):
            continue
        rpath = f"{path}.devices.requests[{i}]"
        name = req.get("name")
        _dns_label(causes, f"{rpath}.name", name)
        if name in names:
            _bad(causes, f"{rpath}.name", f"Duplicate value: {name!r}", "FieldValueDuplicate")
        names.add(name)
        exact, first = req.get("exactly"), req.get("firstAvailable")
        if (exact is None) == (not first):
            _bad(causes, rpath, "Invalid value: exactly one of `exactly` or `firstAvailable` is required")
        if isinstance(exact, dict):
            _validate_exact(causes, f"{rpath}.exactly", exact)
        if first:
            if len(first) > MAX_SUBREQUESTS:
                _bad(
                    causes,
                    f"{rpath}.firstAvailable",
                    f"Too many: {len(first)}: must have at most {MAX_SUBREQUESTS} items",
                    "FieldValueTooMany",
                )
            subs: set[str] = set()
            for j, sub in enumerate(first):
                if not isinstance(sub, dict):
                    continue
                spath = f"{rpath}.firstAvailable[{j}]"
                _dns_label(causes, f"{spath}.name", sub.get("name"))
                if sub.get("name") in subs:
                    _bad(
                        causes,
                        f"{spath}.name",
                        f"Duplicate value: {sub.get('name')!r}",
                        "FieldValueDuplicate",
                    )
                subs.add(sub.get("name"))
                names.add(f"{name}/{sub.get('name')}")
                _validate_exact(causes, spath, sub)
    constraints = devices.get("constraints") or []
    if len(constraints) > MAX_CONSTRAINTS:
        _bad(
            causes,
            f"{path}.devices.constraints",
            f"Too many: must have at most {MAX_CONSTRAINTS} items",
            "FieldValueTooMany",
        )
    for i, c in enumerate(constraints):
        if not isinstance(c, dict):
            continue
        cpath = f"{path}.devices.constraints[{i}]"
        _check_refs(causes, f"{cpath}.requests", c.get("requests"), names)
        match, distinct = c.get("matchAttribute"), c.get("distinctAttribute")
        if (match is None) == (distinct is None):
            _bad(
                causes,
                cpath,
                "Invalid value: exactly one of `matchAttribute` or `distinctAttribute` is required",
            )
        if match is not None:
            _fully_qualified_name(causes, f"{cpath}.matchAttribute", match)
        if distinct is not None:
            _fully_qualified_name(causes, f"{cpath}.distinctAttribute", distinct)
    configs = devices.get("config") or []
    if len(configs) > MAX_CONFIGS:
        _bad(
            causes,
            f"{path}.devices.config",
            f"Too many: must have at most {MAX_CONFIGS} items",
            "FieldValueTooMany",
        )
    for i, c in enumerate(configs):
        if isinstance(c, dict):
            _check_refs(causes, f"{path}.devices.config[{i}].requests", c.get("requests"), names)
            _validate_opaque(causes, f"{path}.devices.config[{i}].opaque", c.get("opaque"))
    return names


def _validate_opaque(causes: Causes, path: str, opaque: Any) -> None:
    if not isinstance(opaque, dict):
        _required(causes, path)
        return
    _dns_subdomain(causes, f"{path}.driver", opaque.get("driver"), 63)
    if opaque.get("parameters") is None:
        _required(causes, f"{path}.parameters")


def _check_refs(causes: Causes, path: str, refs: Any, names: set[str]) -> None:
    for j, ref in enumerate(refs or []):
        if ref not in names:
            _bad(
                causes,
                f"{path}[{j}]",
                f"Invalid value: {ref!r}: must be the name of a request in the claim or "
                "the name of a request and a subrequest separated by '/'",
            )


def _validate_claim_status(causes: Causes, status: dict[str, Any], names: set[str]) -> None:
    alloc = status.get("allocation")
    allocated: set[tuple[Any, Any, Any, Any]] = set()
    if isinstance(alloc, dict):
        results = (alloc.get("devices") or {}).get("results") or []
        if len(results) > MAX_RESULTS:
            _bad(
                causes,
                "status.allocation.devices.results",
                f"Too many: must have at most {MAX_RESULTS} items",
                "FieldValueTooMany",
            )
        for i, r in enumerate(results):
            if not isinstance(r, dict):
                continue
            rpath = f"status.allocation.devices.results[{i}]"
            if r.get("request") not in names:
                _bad(
                    causes,
                    f"{rpath}.request",
                    f"Invalid value: {r.get('request')!r}: must be the name of a "
                    "request in the claim (or <request>/<subrequest>)",
                )
            _dns_subdomain(causes, f"{rpath}.driver", r.get("driver"), 63)
            if not r.get("pool"):
                _required(causes, f"{rpath}.pool")
            _dns_label(causes, f"{rpath}.device", r.get("device"))
            share = r.get("shareID")
            if share is not None and not _UUID.match(share):
                _bad(
                    causes,
                    f"{rpath}.shareID",
                    f"Invalid value: {share!r}: must be a lowercase UUID in 8-4-4-4-12 form",
                )
            for key, q in (r.get("consumedCapacity") or {}).items():
                _quantity(causes, f"{rpath}.consumedCapacity[{key}]", q)
            allocated.add((r.get("driver"), r.get("pool"), r.get("device"), share))
    for i, d in enumerate(status.get("devices") or []):
        if not isinstance(d, dict):
            continue
        ident = (d.get("driver"), d.get("pool"), d.get("device"), d.get("shareID"))
        if ident not in allocated:
            _bad(
                causes,
                f"status.devices[{i}]",
                f"Invalid value: {list(ident)}: must be an allocated device in the claim",
            )
    reserved = status.get("reservedFor") or []
    if len(reserved) > MAX_RESERVED_FOR:
        _bad(
            causes,
            "status.reservedFor",
            f"Too many: {len(reserved)}: must have at most {MAX_RESERVED_FOR} items",
            "FieldValueTooMany",
        )
    uids = [r.get("uid") for r in reserved if isinstance(r, dict)]
    if len(set(uids)) != len(uids):
        _bad(causes, "status.reservedFor", "Duplicate value: each uid may appear once", "FieldValueDuplicate")
    if reserved and not alloc:
        _bad(
            causes,
            "status.reservedFor",
            "Forbidden: may not be set when the claim is not allocated",
            "FieldValueForbidden",
        )


def validate(rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None, config: SimConfig) -> Causes:
    token = _cel_gates.set((config.gate("DRAConsumableCapacity"), config.gate("DRAListTypeAttributes")))
    try:
        return _validate(rt, obj, old, config)
    finally:
        _cel_gates.reset(token)


def _validate(rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None, config: SimConfig) -> Causes:
    causes: Causes = []
    if rt.kind == "ResourceSlice":
        causes += validate_slice(obj, config)
    elif rt.kind == "DeviceClass":
        spec = obj.get("spec") or {}
        _validate_selectors(causes, "spec.selectors", spec.get("selectors"))
        for i, c in enumerate(spec.get("config") or []):
            _validate_opaque(causes, f"spec.config[{i}].opaque", (c or {}).get("opaque"))
    elif rt.kind == "ResourceClaim":
        names = validate_claim_spec(causes, "spec", obj.get("spec") or {})
        if isinstance(obj.get("status"), dict):
            _validate_claim_status(causes, obj["status"], names)
        if old is not None:
            if obj.get("spec") != old.get("spec"):
                _bad(causes, "spec", "Invalid value: field is immutable", "FieldValueInvalid")
            old_alloc = (old.get("status") or {}).get("allocation")
            new_alloc = (obj.get("status") or {}).get("allocation")
            if old_alloc and new_alloc and old_alloc != new_alloc:
                _bad(
                    causes,
                    "status.allocation",
                    "Invalid value: field is immutable once set (clear it to deallocate)",
                )
    elif rt.kind == "ResourceClaimTemplate":
        validate_claim_spec(causes, "spec.spec", ((obj.get("spec") or {}).get("spec")) or {})
        if old is not None and obj.get("spec") != old.get("spec"):
            _bad(causes, "spec", "Invalid value: field is immutable")
    return causes
