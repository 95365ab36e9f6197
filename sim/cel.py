"""The one CEL environment for DRA device selectors.

Backed by the Rust `cel` package (common-expression-language). It lacks Kubernetes' CEL libraries and
`cel.bind`, so this module adds them:

* Quantity and semver values are carried as one-key marker maps (`{"__quantity__": "<decimal>"}`) whose
  payload is canonical, so `==` is semantic like upstream's `Quantity.Equal`; `quantity()`,
  `compareTo`, `isGreaterThan`, `isLessThan`, `sign`, `add`, `sub`, `asInteger`, `isInteger`,
  `asApproximateFloat`, `isQuantity`, `semver()`, `isSemver`, `major`, `minor`, `patch` are callbacks.
* `cel.bind(x, init, body)` is rewritten before compiling to `[init].map(x, body)[0]`: a one-element
  comprehension binds `x` to `init` once and evaluates `body` once, which is what `cel.bind` means.
* Undeclared identifiers and functions are reported at compile time with upstream's wording, because
  the Rust engine only finds them when evaluation reaches them.
* Unknown attribute/capacity domains evaluate to an empty map as upstream: every string literal in
  the expression that is not a known domain is added as an empty domain for that expression.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import cel as _cel

from sim.quantity import Quantity, QuantityError

MAX_EXPRESSION_LENGTH = 10 * 1024
_Q = "__quantity__"
_V = "__semver__"


class CelError(Exception):
    """Base for CEL failures; `str()` is the upstream-style text."""


class CelCompileError(CelError):
    pass


class CelRuntimeError(CelError):
    pass


# --- values --------------------------------------------------------------------------------------


def quantity_value(q: Quantity) -> dict[str, str]:
    return {_Q: _canon_decimal(q.value)}


def _canon_decimal(d: Decimal) -> str:
    text = format(d.normalize(), "f")
    return "0" if text in ("-0", "0") else text


_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


@dataclass(frozen=True)
class SemVer:
    major: int
    minor: int
    patch: int
    pre: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str, normalize: bool = False) -> SemVer:
        t = text
        if normalize:
            # semver(text, true): drop a leading "v", pad missing minor/patch, strip leading zeros.
            core, rest = re.match(r"^v?([0-9.]*)(.*)$", t).groups()
            parts = [p for p in core.split(".") if p] or ["0"]
            parts += ["0"] * (3 - len(parts))
            t = ".".join(str(int(p)) for p in parts) + rest
        m = _SEMVER.match(t)
        if not m:
            raise ValueError(f"could not parse {text!r} as semver")
        return cls(int(m[1]), int(m[2]), int(m[3]), tuple(m[4].split(".")) if m[4] else ())

    def key(self) -> tuple:
        # Semver precedence: a pre-release sorts before the release; identifiers compare numerically
        # when numeric, numeric < alphanumeric.
        pre: tuple = (1,) if not self.pre else (0, *(
            (0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.pre))
        return (self.major, self.minor, self.patch, pre)

    def __str__(self) -> str:
        base = f"{self.major}.{self.minor}.{self.patch}"
        return base + ("-" + ".".join(self.pre) if self.pre else "")


def semver_value(v: SemVer) -> dict[str, str]:
    return {_V: str(v)}


def _as_quantity(x: Any) -> Quantity | None:
    if isinstance(x, dict) and len(x) == 1 and _Q in x:
        return Quantity(Decimal(x[_Q]))
    return None


def _as_semver(x: Any) -> SemVer | None:
    if isinstance(x, dict) and len(x) == 1 and _V in x:
        return SemVer.parse(x[_V])
    return None


def _no_overload(name: str) -> CelRuntimeError:
    return CelRuntimeError(f"no such overload: {name}")


def _cmp(name: str, a: Any, b: Any) -> int:
    qa, qb = _as_quantity(a), _as_quantity(b)
    if qa is not None and qb is not None:
        return (qa.value > qb.value) - (qa.value < qb.value)
    va, vb = _as_semver(a), _as_semver(b)
    if va is not None and vb is not None:
        ka, kb = va.key(), vb.key()
        return (ka > kb) - (ka < kb)
    raise _no_overload(name)


def _fn_quantity(text: Any) -> dict[str, str]:
    if not isinstance(text, str):
        raise _no_overload("quantity")
    try:
        return quantity_value(Quantity.parse(text))
    except QuantityError:
        raise CelRuntimeError(f"quantity: invalid quantity {text!r}") from None


def _fn_is_quantity(text: Any) -> bool:
    try:
        Quantity.parse(text)
    except QuantityError:
        return False
    return isinstance(text, str)


def _fn_semver(text: Any, normalize: bool = False) -> dict[str, str]:
    if not isinstance(text, str):
        raise _no_overload("semver")
    try:
        return semver_value(SemVer.parse(text, normalize=bool(normalize)))
    except (ValueError, AttributeError):
        raise CelRuntimeError(f"semver: could not parse {text!r} as semver") from None


def _fn_is_semver(text: Any, normalize: bool = False) -> bool:
    try:
        SemVer.parse(text, normalize=bool(normalize))
    except (ValueError, AttributeError, TypeError):
        return False
    return True


def _quantity_arg(name: str, x: Any) -> Quantity:
    q = _as_quantity(x)
    if q is not None:
        return q
    if isinstance(x, int) and not isinstance(x, bool):
        return Quantity(Decimal(x))
    raise _no_overload(name)


def _semver_part(name: str, idx: int):
    def part(x: Any) -> int:
        v = _as_semver(x)
        if v is None:
            raise _no_overload(name)
        return (v.major, v.minor, v.patch)[idx]
    return part


def _as_integer(x: Any) -> int:
    q = _quantity_arg("asInteger", x)
    if q.value != q.value.to_integral_value() or abs(q.value) >= 2**63:
        raise CelRuntimeError("cannot convert value to integer")
    return int(q.value)


_FUNCTIONS: dict[str, Any] = {
    "quantity": _fn_quantity,
    "isQuantity": _fn_is_quantity,
    "semver": _fn_semver,
    "isSemver": _fn_is_semver,
    "compareTo": lambda a, b: _cmp("compareTo", a, b),
    "isGreaterThan": lambda a, b: _cmp("isGreaterThan", a, b) > 0,
    "isLessThan": lambda a, b: _cmp("isLessThan", a, b) < 0,
    "sign": lambda a: (lambda q: (q.value > 0) - (q.value < 0))(_quantity_arg("sign", a)),
    "isInteger": lambda a: (lambda q: q.value == q.value.to_integral_value() and abs(q.value) < 2**63)(
        _quantity_arg("isInteger", a)),
    "asInteger": _as_integer,
    "asApproximateFloat": lambda a: float(_quantity_arg("asApproximateFloat", a).value),
    "add": lambda a, b: quantity_value(_quantity_arg("add", a) + _quantity_arg("add", b)),
    "sub": lambda a, b: quantity_value(_quantity_arg("sub", a) - _quantity_arg("sub", b)),
    "major": _semver_part("major", 0),
    "minor": _semver_part("minor", 1),
    "patch": _semver_part("patch", 2),
}

# Functions the Rust engine provides natively, and the CEL macros.
_BUILTIN_FUNCTIONS = {
    "has", "size", "int", "uint", "double", "string", "bytes", "bool", "dyn", "type", "duration",
    "timestamp", "matches", "contains", "startsWith", "endsWith", "all", "exists", "exists_one", "map",
    "filter", "getFullYear", "getMonth", "getDayOfMonth", "getDayOfYear", "getDayOfWeek", "getDate",
    "getHours", "getMinutes", "getSeconds", "getMilliseconds",
}
_MACROS_WITH_VAR = {"all", "exists", "exists_one", "map", "filter"}
_KEYWORDS = {"true", "false", "null", "in"}


# --- source preprocessing -------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""(?P<ws>\s+)
      |(?P<str>(?:[rR])?(?:[bB])?(?:\"\"\"(?:\\.|[^\\])*?\"\"\"|'''(?:\\.|[^\\])*?'''|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'))
      |(?P<num>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[uU]?|0x[0-9a-fA-F]+[uU]?)
      |(?P<ident>[A-Za-z_][A-Za-z0-9_]*)
      |(?P<op>\|\||&&|==|!=|<=|>=|[-+*/%!<>?:.,()\[\]{}])
      |(?P<bad>.)""",
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    pos: int


def _tokens(src: str) -> list[_Tok]:
    return [_Tok(m.lastgroup or "", m.group(), m.start()) for m in _TOKEN.finditer(src)
            if m.lastgroup != "ws"]


def _string_literal_value(tok: str) -> str | None:
    t = tok.lstrip("rRbB")
    for q in ('"""', "'''", '"', "'"):
        if t.startswith(q) and t.endswith(q) and len(t) >= 2 * len(q):
            return t[len(q):-len(q)]
    return None


def _rewrite_bind(src: str) -> str:
    """Rewrite every `cel.bind(v, init, body)` into `[init].map(v, body)[0]`, innermost first."""
    for _ in range(256):
        toks = _tokens(src)
        site = None
        for i in range(len(toks) - 3):
            if (toks[i].text == "cel" and toks[i + 1].text == "." and toks[i + 2].text == "bind"
                    and toks[i + 3].text == "(" and (i == 0 or toks[i - 1].text != ".")):
                site = i
        if site is None:
            return src
        depth, args, start = 0, [], toks[site + 3].pos + 1
        end = None
        for tok in toks[site + 3:]:
            if tok.text in "([{" and tok.kind == "op":
                depth += 1
            elif tok.text in ")]}" and tok.kind == "op":
                depth -= 1
                if depth == 0:
                    args.append(src[start:tok.pos])
                    end = tok.pos + 1
                    break
            elif tok.text == "," and depth == 1:
                args.append(src[start:tok.pos])
                start = tok.pos + 1
        if end is None or len(args) != 3 or not re.fullmatch(r"\s*[A-Za-z_][A-Za-z0-9_]*\s*", args[0]):
            raise CelCompileError(_compile_message(src, toks[site].pos,
                                                   "cel.bind() requires a variable name, an init and a body"))
        var, init, body = (a.strip() for a in args)
        src = f"{src[:toks[site].pos]}[{init}].map({var}, {body})[0]{src[end:]}"
    raise CelCompileError("cel.bind nested too deeply")


def _compile_message(src: str, pos: int, what: str) -> str:
    line = src.count("\n", 0, pos) + 1
    col = pos - (src.rfind("\n", 0, pos) + 1) + 1
    return f"compilation failed: ERROR: <input>:{line}:{col}: {what}"


def _check_identifiers(src: str) -> None:
    """Reject undeclared variables and functions at compile time, as cel-go's checker does."""
    toks = _tokens(src)
    bound: set[str] = set()
    for i, tok in enumerate(toks):
        if tok.kind == "bad":
            raise CelCompileError(_compile_message(
                src, tok.pos, f"Syntax error: token recognition error at: '{tok.text}'"))
        if (tok.kind == "ident" and tok.text in _MACROS_WITH_VAR and i > 0 and toks[i - 1].text == "."
                and i + 2 < len(toks) and toks[i + 1].text == "(" and toks[i + 2].kind == "ident"):
            bound.add(toks[i + 2].text)
    known = set(_FUNCTIONS) | _BUILTIN_FUNCTIONS
    for i, tok in enumerate(toks):
        if tok.kind != "ident" or tok.text in _KEYWORDS:
            continue
        after_dot = i > 0 and toks[i - 1].text == "."
        is_call = i + 1 < len(toks) and toks[i + 1].text == "("
        if is_call:
            if tok.text not in known and not (tok.text == "bind" and after_dot):
                raise CelCompileError(_compile_message(
                    src, tok.pos, f"undeclared reference to '{tok.text}' (in container '')"))
        elif not after_dot and tok.text != "device" and tok.text not in bound and tok.text != "cel":
            raise CelCompileError(_compile_message(
                src, tok.pos, f"undeclared reference to '{tok.text}' (in container '')"))


@dataclass(frozen=True)
class Program:
    expression: str
    _program: Any
    literals: frozenset[str]

    def matches(self, device: Mapping[str, Any]) -> bool:
        """Evaluate against a `device` built by `device_variable`; raises CelRuntimeError."""
        dev = device
        missing = [lit for lit in self.literals
                   if lit not in device["attributes"] or lit not in device["capacity"]]
        if missing:
            attrs, caps = dict(device["attributes"]), dict(device["capacity"])
            for lit in missing:
                attrs.setdefault(lit, {})
                caps.setdefault(lit, {})
            dev = {**device, "attributes": attrs, "capacity": caps}
        ctx = _cel.Context()
        for name, fn in _FUNCTIONS.items():
            ctx.add_function(name, fn)
        ctx.add_variable("device", dev)
        try:
            with _ENGINE_LOCK:
                result = self._program.execute(ctx)
        except KeyError as exc:
            raise CelRuntimeError(f"no such key: {exc.args[0] if exc.args else exc}") from None
        except Exception as exc:  # the engine raises several builtin types; all are runtime errors
            raise CelRuntimeError(_runtime_text(exc)) from None
        if not isinstance(result, bool):
            raise CelRuntimeError(f"expression returned {type(result).__name__} instead of bool")
        return result


_ENGINE_LOCK = threading.Lock()


def _runtime_text(exc: Exception) -> str:
    text = str(exc)
    inner = re.search(r"CelRuntimeError: (.*?)\. Check function arguments", text)
    if inner:
        return inner.group(1)
    return text


@functools.lru_cache(maxsize=4096)
def compile_selector(expression: str) -> Program:
    """Compile a device selector once; raises CelCompileError with upstream-style text."""
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise CelCompileError(f"compilation failed: expression is longer than {MAX_EXPRESSION_LENGTH} bytes")
    rewritten = _rewrite_bind(expression)
    try:
        program = _cel.compile(rewritten)
    except (ValueError, RuntimeError) as exc:
        text = re.sub(r"^Failed to parse expression '.*?': ", "", str(exc), flags=re.DOTALL)
        raise CelCompileError("compilation failed: " + text.split("\n")[0]) from None
    _check_identifiers(rewritten)
    literals = frozenset(
        v for tok in _tokens(rewritten) if tok.kind == "str"
        and (v := _string_literal_value(tok.text)) is not None
    )
    return Program(expression, program, literals)


# --- the device variable --------------------------------------------------------------------------


def _split_name(name: str, driver: str) -> tuple[str, str]:
    domain, sep, ident = name.rpartition("/")
    return (domain, ident) if sep else (driver, name)


def _attribute_value(attr: Mapping[str, Any]) -> Any:
    if "string" in attr and attr["string"] is not None:
        return attr["string"]
    if "bool" in attr and attr["bool"] is not None:
        return bool(attr["bool"])
    if "int" in attr and attr["int"] is not None:
        return int(attr["int"])
    if "version" in attr and attr["version"] is not None:
        return semver_value(SemVer.parse(attr["version"]))
    for key in ("strings", "bools", "ints"):
        if attr.get(key) is not None:
            return list(attr[key])
    if attr.get("versions") is not None:
        return [semver_value(SemVer.parse(v)) for v in attr["versions"]]
    raise CelRuntimeError("unsupported attribute value")


def device_variable(
    driver: str, device: Mapping[str, Any], consumable_capacity: bool = True
) -> dict[str, Any]:
    """The `device` CEL variable for one ResourceSlice device (v1 layout)."""
    attributes: dict[str, dict[str, Any]] = {}
    for name, attr in (device.get("attributes") or {}).items():
        domain, ident = _split_name(name, driver)
        attributes.setdefault(domain, {})[ident] = _attribute_value(attr or {})
    capacity: dict[str, dict[str, Any]] = {}
    for name, cap in (device.get("capacity") or {}).items():
        domain, ident = _split_name(name, driver)
        capacity.setdefault(domain, {})[ident] = quantity_value(Quantity.parse(cap["value"]))
    var: dict[str, Any] = {"driver": driver, "attributes": attributes, "capacity": capacity}
    if consumable_capacity:
        var["allowMultipleAllocations"] = bool(device.get("allowMultipleAllocations"))
    return var
