"""The one CEL environment for DRA device selectors: upstream's own.

Selectors are compiled and evaluated by k8s.io/dynamic-resource-allocation/cel itself (cel-go with
Kubernetes' CEL libraries: quantity, semver, ip, url, lists, sets, regex, strings, optional syntax,
`cel.bind`), built from sim/celgo into a c-shared library by sim/celbuild.py and called through ctypes.
So the sim has upstream's libraries, its type-checked compile against the DRA `device` declaration
(unknown fields and non-bool results are compile errors), its cost model and its messages exactly.

* `compile_selector` compiles as upstream's allocator does (stored expressions, runtime cost limit
  `MAX_COST`); `Program.matches` evaluates against one device (`device_variable`).
* `validate_selector` checks a selector as API validation does for a new object (new-expressions
  environment for the enabled gates, worst-case cost estimate against `MAX_COST`).
"""

from __future__ import annotations

import ctypes
import json
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sim import celbuild

MAX_EXPRESSION_LENGTH = 10 * 1024  # resource.CELSelectorExpressionMaxLength
MAX_COST = 1_000_000  # resource.CELSelectorExpressionMaxCost: runtime budget and estimate limit
CACHE_SIZE = 4096

# Flags of dra_cel_compile (sim/celgo/main.go).
_CONSUMABLE_CAPACITY = 1 << 0
_LIST_TYPE_ATTRIBUTES = 1 << 1
_NEW_EXPRESSIONS = 1 << 2
_ESTIMATE_COST = 1 << 3
_ERROR_TYPES = {1: "Invalid", 2: "InternalError", 3: "Required"}


class CelError(Exception):
    """Base for CEL failures; `str()` is upstream's text."""


class CelCompileError(CelError):
    pass


class CelRuntimeError(CelError):
    pass


class CelLibraryError(RuntimeError):
    """The compiled CEL library is missing or unusable (not a property of any selector)."""


# --- the library ----------------------------------------------------------------------------------

_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()
_P = ctypes.POINTER


def _library() -> ctypes.CDLL:
    global _lib
    if _lib is not None:
        return _lib
    with _lib_lock:
        if _lib is None:
            path = celbuild.library_path()
            if not path.is_file():
                raise CelLibraryError(
                    f"the sim's CEL library ({path}) is not built: run `make setup` "
                    "(or `python -m sim.celbuild`), which needs Go and builds it once"
                )
            try:
                lib = ctypes.CDLL(str(path))
            except OSError as exc:
                raise CelLibraryError(
                    f"the sim's CEL library {path} cannot be loaded ({exc}): "
                    "rebuild it with `python -m sim.celbuild --force`"
                ) from None
            lib.dra_cel_compile.restype = ctypes.c_int64
            lib.dra_cel_compile.argtypes = [
                ctypes.c_char_p,
                ctypes.c_int,
                ctypes.c_int,
                ctypes.c_uint64,
                _P(ctypes.c_void_p),
                _P(ctypes.c_int),
                _P(ctypes.c_uint64),
            ]
            lib.dra_cel_device.restype = ctypes.c_int64
            lib.dra_cel_device.argtypes = [ctypes.c_char_p, ctypes.c_int, _P(ctypes.c_void_p)]
            lib.dra_cel_match.restype = ctypes.c_int
            lib.dra_cel_match.argtypes = [
                ctypes.c_int64,
                ctypes.c_int64,
                _P(ctypes.c_void_p),
                _P(ctypes.c_uint64),
            ]
            lib.dra_cel_release.restype = None
            lib.dra_cel_release.argtypes = [ctypes.c_int64]
            lib.dra_cel_free_string.restype = None
            lib.dra_cel_free_string.argtypes = [ctypes.c_void_p]
            _lib = lib
    return _lib


def _take_string(lib: ctypes.CDLL, ptr: ctypes.c_void_p) -> str:
    if not ptr.value:
        return ""
    try:
        return ctypes.string_at(ptr.value).decode("utf-8", "replace")
    finally:
        lib.dra_cel_free_string(ptr)


def _compile(expression: str, flags: int) -> tuple[int, str, str, int | None]:
    """(handle or 0, error type, error text, estimated max cost or None)."""
    lib = _library()
    err, err_type, max_cost = ctypes.c_void_p(), ctypes.c_int(), ctypes.c_uint64()
    # With its length: a NUL inside the expression is part of it, as it is for upstream.
    data = expression.encode("utf-8", "surrogatepass")
    handle = lib.dra_cel_compile(
        data, len(data), flags, MAX_COST, ctypes.byref(err), ctypes.byref(err_type), ctypes.byref(max_cost)
    )
    text = _take_string(lib, err)
    # Without estimation upstream reports math.MaxUint64; with it, that value is a saturated estimate.
    cost = max_cost.value if flags & _ESTIMATE_COST else None
    return handle, _ERROR_TYPES.get(err_type.value, "InternalError"), text, cost


# --- devices --------------------------------------------------------------------------------------


class DeviceInput:
    """One device as a selector sees it (the `device` variable), decoded once for many evaluations."""

    __slots__ = ("__weakref__", "driver", "handle")

    def __init__(self, driver: str, handle: int) -> None:
        self.driver = driver
        self.handle = handle
        weakref.finalize(self, _library().dra_cel_release, handle)


def device_key(driver: str, device: Mapping[str, Any], consumable_capacity: bool = True) -> tuple:
    """A content key for what `device_variable` reads of a device: equal keys give the same variable.

    Built from the repr of the parsed JSON (dicts, lists, str, int, float, bool, None), which tells
    apart every value that could evaluate differently (1, 1.0, True and "1" all differ); two orders of
    one mapping give two keys, which costs a second evaluation, never a wrong result.
    """
    multi = device.get("allowMultipleAllocations") if consumable_capacity else None
    return (driver, repr(device.get("attributes")), repr(device.get("capacity")), multi)


def device_variable(driver: str, device: Mapping[str, Any], consumable_capacity: bool = True) -> DeviceInput:
    """The `device` CEL variable for one ResourceSlice device (v1 layout).

    With DRAConsumableCapacity off the API server has dropped `allowMultipleAllocations`, so the
    variable says false, as upstream's does for an unset field.
    """
    doc: dict[str, Any] = {
        "driver": driver,
        "attributes": dict(device.get("attributes") or {}),
        "capacity": {
            name: {"value": str((cap or {}).get("value", "0"))}
            for name, cap in (device.get("capacity") or {}).items()
        },
    }
    if consumable_capacity and device.get("allowMultipleAllocations") is not None:
        doc["allowMultipleAllocations"] = bool(device["allowMultipleAllocations"])
    lib = _library()
    err = ctypes.c_void_p()
    data = json.dumps(doc).encode()
    handle = lib.dra_cel_device(data, len(data), ctypes.byref(err))
    if not handle:
        raise CelRuntimeError(_take_string(lib, err))
    return DeviceInput(driver, handle)


# --- programs -------------------------------------------------------------------------------------


class Program:
    """A compiled selector; evaluate it with `matches`."""

    __slots__ = ("__weakref__", "_handle", "expression")

    def __init__(self, expression: str, handle: int) -> None:
        self.expression = expression
        self._handle = handle
        weakref.finalize(self, _library().dra_cel_release, handle)

    def matches(self, device: DeviceInput) -> bool:
        """Evaluate against a device from `device_variable`; raises CelRuntimeError with upstream's
        text (a missing key carries upstream's hint about optional chaining and has())."""
        lib = _library()
        err, cost = ctypes.c_void_p(), ctypes.c_uint64()
        result = lib.dra_cel_match(self._handle, device.handle, ctypes.byref(err), ctypes.byref(cost))
        if result < 0:
            raise CelRuntimeError(_take_string(lib, err))
        return result == 1


_cache: OrderedDict[str, Program | CelCompileError] = OrderedDict()
_cache_lock = threading.Lock()


def compile_selector(expression: str) -> Program:
    """Compile a device selector as upstream's allocator does, once per expression (cached, compile
    errors too); raises CelCompileError with upstream's text."""
    with _cache_lock:
        hit = _cache.get(expression)
        if hit is not None:
            _cache.move_to_end(expression)
    if hit is None:
        # Stored expressions: the allocator accepts whatever the API server once stored, so the
        # environment has every library and device field regardless of feature gates.
        handle, _, text, _ = _compile(expression, 0)
        hit = Program(expression, handle) if handle else CelCompileError(text)
        with _cache_lock:
            _cache[expression] = hit
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
    if isinstance(hit, CelCompileError):
        raise CelCompileError(str(hit))
    return hit


@dataclass(frozen=True)
class SelectorProblem:
    """Why API validation rejects a selector: `reason` is the field error type (Invalid, Forbidden,
    TooLong, Required, InternalError) and `detail` upstream's text."""

    reason: str
    detail: str


def validate_selector(
    expression: str, *, consumable_capacity: bool = True, list_type_attributes: bool = False
) -> SelectorProblem | None:
    """Check a selector of a new object as kube-apiserver does (pkg/apis/resource/validation)."""
    if len(expression) > MAX_EXPRESSION_LENGTH:
        return SelectorProblem("TooLong", f"may not be more than {MAX_EXPRESSION_LENGTH} bytes")
    flags = _NEW_EXPRESSIONS | _ESTIMATE_COST
    flags |= _CONSUMABLE_CAPACITY if consumable_capacity else 0
    flags |= _LIST_TYPE_ATTRIBUTES if list_type_attributes else 0
    handle, err_type, text, cost = _compile(expression, flags)
    if not handle:
        return SelectorProblem(err_type, text)
    _library().dra_cel_release(handle)
    if cost is not None and cost > MAX_COST:
        return SelectorProblem("Forbidden", "too complex, exceeds cost limit")
    return None


def estimated_cost(expression: str) -> int | None:
    """Upstream's worst-case cost estimate for a new selector (None when it does not compile)."""
    handle, _, _, cost = _compile(expression, _NEW_EXPRESSIONS | _ESTIMATE_COST | _CONSUMABLE_CAPACITY)
    if handle:
        _library().dra_cel_release(handle)
    return cost if handle else None
