"""The Kubernetes protobuf wire format (`application/vnd.kubernetes.protobuf`), driven by a schema.

client-go's typed clients send every built-in kind as protobuf and ask for protobuf answers, so the
sim speaks it for every kind in `protobuf_schema.json` (message layouts generated from k8s.io/api's and
k8s.io/apimachinery's `generated.proto` and Go struct tags by `protobuf_schema_gen.py`). Nothing here
is written per kind. Objects on this side are the JSON dicts the Store holds; the JSON a decoded
object turns into follows Go's encoding/json on the same struct (omitempty, omitzero, pointers, `null`
for nil slices and maps without omitempty), so a protobuf client and a JSON client are seen alike.

Wire facts (upstream, byte for byte):
- an object is `k8s\\x00` + a runtime.Unknown: typeMeta(1){apiVersion(1), kind(2)}, raw(2) = the
  object's message, contentEncoding(3) and contentType(4) empty but present;
- fields go out in field-number order; Go value fields (non-pointers) always, even when zero; pointers
  only when set; map entries sorted by key, each {key(1), value(2)};
- a watch response is a sequence of frames: a 4-byte big-endian length, then a bare metav1.WatchEvent
  {type(1), object(2) = RawExtension{raw(1) = the enveloped object}}.
An unknown field number, a wrong wire type or a truncated body is a 400 that names the message.
"""

from __future__ import annotations

import base64
import datetime as _dt
import functools
import json
import re
import struct
from pathlib import Path
from typing import Any

from drakit.quantity import QuantityError, canonical

from .errors import ApiError, bad_request

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"
WATCH_CONTENT_TYPE = CONTENT_TYPE + ";stream=watch"
SCHEMA_FILE = Path(__file__).with_name("protobuf_schema.json")

_SCALAR_WIRE = {"string": 2, "bytes": 2, "bool": 0, "int32": 0, "int64": 0, "uint32": 0, "uint64": 0}
_SCALAR_WIRE |= {"double": 1, "float": 5}
_ZERO: dict[str, Any] = {"string": "", "bytes": "", "bool": False, "double": 0.0, "float": 0.0}
_ZERO |= dict.fromkeys(("int32", "int64", "uint32", "uint64"), 0)
# JSON of the zero value of the types whose JSON is not an object (Go value fields, never omitted)
_SPECIAL_ZERO: dict[str, Any] = {
    "time": None,
    "microtime": None,
    "duration": "0s",
    "quantity": "0",
    "intorstring": 0,
    "rawjson": None,
}
_MASK64 = (1 << 64) - 1


class Field:
    __slots__ = (
        "inline",
        "json",
        "map",
        "message",
        "number",
        "omitempty",
        "omitzero",
        "pointer",
        "repeated",
        "special",
        "tag",
        "type",
        "value",
        "value_message",
        "wire",
    )

    def __init__(self, spec: list[Any]) -> None:
        self.number, self.json, self.type, flags = spec[:4]
        self.value = spec[4] if len(spec) > 4 else None
        self.repeated = "r" in flags
        self.map = "m" in flags
        self.pointer = "p" in flags
        self.omitempty = "e" in flags
        self.omitzero = "z" in flags
        self.inline = "i" in flags
        self.wire = 2 if self.map else _SCALAR_WIRE.get(self.type, 2)
        self.tag = _varint_bytes(self.number << 3 | self.wire)
        self.special = self.type in _SPECIAL_ZERO
        self.message: Message | None = None  # resolved once every message is built
        self.value_message: Message | None = None


class Message:
    __slots__ = ("by_number", "by_wire", "fields", "json_names", "name")

    def __init__(self, name: str, fields: list[Field]) -> None:
        self.name = name
        self.fields = [f for f in fields if f.number]  # Go struct order = JSON order
        self.by_number = {f.number: f for f in self.fields}
        self.by_wire = sorted(self.fields, key=lambda f: f.number)
        # every JSON key this message accepts, JSON-only ones (kind, apiVersion) included
        self.json_names: frozenset[str] = frozenset(f.json for f in fields if not f.inline)

    def all_json_names(self) -> frozenset[str]:
        names = set(self.json_names)
        for f in self.fields:
            if f.inline and f.message is not None:
                names |= f.message.all_json_names()
        return frozenset(names)


def _load() -> tuple[dict[str, Message], dict[str, dict[str, str]]]:
    data = json.loads(SCHEMA_FILE.read_text())
    messages = {name: Message(name, [Field(s) for s in specs]) for name, specs in data["messages"].items()}
    for msg in messages.values():
        for f in msg.fields:
            if f.type in messages:
                f.message = messages[f.type]
            if f.value in messages:
                f.value_message = messages[f.value]
    for msg in messages.values():
        msg.json_names = msg.all_json_names()
    return messages, data["kinds"]


def message_for(api_version: str, kind: str) -> Message | None:
    name = KINDS.get(api_version, {}).get(kind)
    return MESSAGES[name] if name else None


def supported(obj: Any) -> bool:
    """Whether this JSON object is of a kind the codec can put on the wire."""
    return isinstance(obj, dict) and message_for(obj.get("apiVersion", ""), obj.get("kind", "")) is not None


# ---------------------------------------------------------------- wire primitives


def _varint_bytes(value: int) -> bytes:
    if 0 <= value < 128:
        return _SMALL[value]
    value &= _MASK64
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL = [bytes([i]) for i in range(128)]


def _read_varint(buf: bytes, i: int, where: str) -> tuple[int, int]:
    shift = result = 0
    n = len(buf)
    while True:
        if i >= n or shift > 63:
            raise bad_request(f"protobuf body is truncated or malformed inside a varint of {where}")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _fields(buf: bytes, msg_name: str) -> list[tuple[int, int, Any]]:
    """(number, wire type, value) triples: ints for varints, bytes otherwise."""
    out: list[tuple[int, int, Any]] = []
    i, n = 0, len(buf)
    while i < n:
        # one-byte varints (nearly every key and length) are read inline: this loop is the hot path
        key = buf[i]
        if key < 0x80:
            i += 1
        else:
            key, i = _read_varint(buf, i, msg_name)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(buf, i, msg_name)
        elif wire == 2:
            size = buf[i] if i < n else 0x80
            if size < 0x80:
                i += 1
            else:
                size, i = _read_varint(buf, i, msg_name)
            if i + size > n:
                raise bad_request(f"protobuf body is truncated inside field {number} of {msg_name}")
            value, i = buf[i : i + size], i + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if i + size > n:
                raise bad_request(f"protobuf body is truncated inside field {number} of {msg_name}")
            value, i = buf[i : i + size], i + size
        else:
            raise bad_request(f"protobuf field {number} of {msg_name} uses unsupported wire type {wire}")
        out.append((number, wire, value))
    return out


MESSAGES, KINDS = _load()

# ---------------------------------------------------------------- special types


_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d+))?([Zz]|[+-]\d\d:\d\d)")
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)


def _parse_time(text: Any, where: str) -> tuple[int, int]:
    m = _RFC3339.fullmatch(text) if isinstance(text, str) else None
    if not m:
        raise bad_request(f"{where}: {text!r} is not an RFC 3339 time")
    y, mo, d, h, mi, s, frac, zone = m.groups()
    tz = _dt.UTC
    if zone not in ("Z", "z"):
        sign = -1 if zone[0] == "-" else 1
        tz = _dt.timezone(sign * _dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    try:
        t = _dt.datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=tz)
    except ValueError as e:
        raise bad_request(f"{where}: {text!r} is not a valid time ({e})") from None
    delta = t - _EPOCH
    nanos = int((frac or "0")[:9].ljust(9, "0"))
    return delta.days * 86400 + delta.seconds, nanos


def _format_time(seconds: int, micros: int | None, where: str) -> str:
    try:
        t = _EPOCH + _dt.timedelta(seconds=seconds)
    except OverflowError:
        raise bad_request(f"{where}: time {seconds}s since the epoch is out of range") from None
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    if micros is not None:
        text += f".{micros:06d}"
    return text + "Z"


_DURATION_UNITS = {"ns": 1, "us": 1000, "µs": 1000, "μs": 1000, "ms": 10**6, "s": 10**9, "m": 60 * 10**9}
_DURATION_UNITS["h"] = 3600 * 10**9
_DURATION_PART = re.compile(r"(\d*\.?\d*)(ns|us|µs|μs|ms|s|m|h)")


def _parse_duration(text: Any, where: str) -> int:
    """Go's time.ParseDuration."""
    if not isinstance(text, str) or not text:
        raise bad_request(f"{where}: {text!r} is not a duration such as 1m30s")
    sign, body = (-1, text[1:]) if text[0] == "-" else (1, text.lstrip("+"))
    if body == "0":
        return 0
    total, pos = 0, 0
    for m in _DURATION_PART.finditer(body):
        if m.start() != pos or m.group(1) in ("", "."):
            break
        whole, _, frac = m.group(1).partition(".")
        unit = _DURATION_UNITS[m.group(2)]
        total += int(whole or "0") * unit + (int(frac) * unit // 10 ** len(frac) if frac else 0)
        pos = m.end()
    if pos != len(body) or pos == 0:
        raise bad_request(f"{where}: {text!r} is not a duration such as 1m30s")
    return sign * total


def _format_duration(nanos: int) -> str:
    """Go's time.Duration.String()."""
    if nanos == 0:
        return "0s"
    sign = "-" if nanos < 0 else ""
    n = abs(nanos)
    if n < 10**9:
        for unit, size in (("ms", 10**6), ("µs", 1000), ("ns", 1)):
            if n >= size:
                return sign + _trim(n, size) + unit
    out = ""
    hours, n = divmod(n, 3600 * 10**9)
    minutes, n = divmod(n, 60 * 10**9)
    if hours:
        out += f"{hours}h"
    if hours or minutes:
        out += f"{minutes}m"
    return sign + out + _trim(n, 10**9) + "s"


def _trim(n: int, size: int) -> str:
    whole, frac = divmod(n, size)
    if not frac:
        return str(whole)
    digits = str(frac).rjust(len(str(size)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"


# field number -> wire type of the special messages (their layouts are fixed by apimachinery)
_SPECIAL_WIRES = {
    "time": {1: 0, 2: 0},
    "microtime": {1: 0, 2: 0},
    "duration": {1: 0},
    "quantity": {1: 2},
    "intorstring": {1: 0, 2: 0, 3: 2},
    "rawjson": {1: 2},
}


def _decode_special(kind: str, buf: bytes, where: str) -> Any:
    values: dict[int, Any] = {}
    wires = _SPECIAL_WIRES[kind]
    for number, wire, value in _fields(buf, _SPECIAL_NAMES[kind]):
        want = wires.get(number)
        if want is None:
            raise _unknown_field(_SPECIAL_NAMES[kind], number, where)
        if wire != want:
            raise _wrong_wire(_SPECIAL_NAMES[kind], number, wire, where)
        values[number] = (wire, value)

    def num(n: int, bits: int = 64) -> int:
        return _signed(values[n][1], bits) if n in values else 0

    if kind in ("time", "microtime"):
        if not buf:
            return None  # the zero time
        if kind == "time":  # metav1.Time keeps whole seconds on decode, as upstream does
            return _format_time(num(1), None, where)
        seconds, nanos = num(1), num(2, 32)
        seconds += nanos // 10**9
        return _format_time(seconds, nanos % 10**9 // 1000, where)
    if kind == "duration":
        return _format_duration(num(1))
    if kind == "quantity":
        text = _utf8(values[1][1], where) if 1 in values else "0"
        try:
            return _canonical(text)
        except ValueError as e:  # QuantityError included
            raise bad_request(f"{where}: {e}") from None
    if kind == "intorstring":
        if num(1) == 1:
            return _utf8(values[3][1], where) if 3 in values else ""
        return num(2, 32)
    raw = values.get(1, (2, None))[1]
    if raw is None or not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise bad_request(f"{where}: the raw bytes of {_SPECIAL_NAMES[kind]} are not JSON") from None


@functools.lru_cache(maxsize=4096)
def _canonical_str(text: str) -> str:
    return canonical(text)


def _canonical(value: Any) -> str:
    # the same few quantities appear on every device of a slice
    return _canonical_str(value) if isinstance(value, str) else canonical(value)


_SPECIAL_NAMES = {
    "time": "k8s.io.apimachinery.pkg.apis.meta.v1.Time",
    "microtime": "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime",
    "duration": "k8s.io.apimachinery.pkg.apis.meta.v1.Duration",
    "quantity": "k8s.io.apimachinery.pkg.api.resource.Quantity",
    "intorstring": "k8s.io.apimachinery.pkg.util.intstr.IntOrString",
    "rawjson": "k8s.io.apimachinery.pkg.runtime.RawExtension",
}


def _encode_special(kind: str, value: Any, where: str) -> bytes:
    if kind in ("time", "microtime"):
        if value is None:
            return b""
        seconds, nanos = _parse_time(value, where)
        if kind == "microtime":
            nanos = nanos // 1000 * 1000
        return b"\x08" + _varint_bytes(seconds) + b"\x10" + _varint_bytes(nanos)
    if kind == "duration":
        return b"\x08" + _varint_bytes(0 if value is None else _parse_duration(value, where))
    if kind == "quantity":
        try:
            text = "0" if value is None else _canonical(value)
        except QuantityError as e:
            raise bad_request(f"{where}: {e}") from None
        data = text.encode()
        return b"\x0a" + _varint_bytes(len(data)) + data
    if kind == "intorstring":
        if isinstance(value, str):
            data = value.encode()
            return b"\x08\x01\x10\x00\x1a" + _varint_bytes(len(data)) + data
        if value is None:
            value = 0
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad_request(f"{where}: {value!r} must be an integer or a string")
        return b"\x08\x00\x10" + _varint_bytes(value) + b"\x1a\x00"
    if value is None:
        return b""
    data = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    return b"\x0a" + _varint_bytes(len(data)) + data


# ---------------------------------------------------------------- errors


def _unknown_field(message: str, number: int, where: str) -> ApiError:
    at = f" (at {where})" if where else ""
    return bad_request(
        f"protobuf message {message} has no field number {number}{at}: this server's schema "
        "(k8s.io/api v0.36) does not know it; it is refused rather than dropped"
    )


def _wrong_wire(message: str, number: int, wire: int, where: str) -> ApiError:
    at = f" (at {where})" if where else ""
    return bad_request(f"protobuf field {number} of message {message}{at} has the wrong wire type {wire}")


def _utf8(raw: bytes, where: str) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise bad_request(f"{where}: a protobuf string is not valid UTF-8") from None


# ---------------------------------------------------------------- messages: protobuf -> JSON


def _scalar(f: Field, wire: int, raw: Any, where: str) -> Any:
    t = f.type
    if t == "string":
        return _utf8(raw, where)
    if t == "int64":
        return _signed(raw, 64)
    if t == "int32":
        return _signed(raw, 32)
    if t == "bool":
        return raw != 0
    if t == "bytes":
        return base64.b64encode(raw).decode()
    if t in ("uint32", "uint64"):
        return raw & ((1 << (32 if t == "uint32" else 64)) - 1)
    if t == "double":
        return struct.unpack("<d", raw)[0]
    return struct.unpack("<f", raw)[0]


def _value(f: Field, type_name: str, msg: Message | None, raw: bytes, where: str) -> Any:
    if msg is not None:
        return _decode_message(raw, msg, where)
    if type_name in _SPECIAL_ZERO:
        return _decode_special(type_name, raw, where)
    raise bad_request(f"{where}: no protobuf layout for {type_name}")  # the generator forbids this


def _map_entry(f: Field, raw: bytes, where: str, parent: str) -> tuple[str, Any]:
    key, value, seen = "", None, False
    for number, wire, v in _fields(raw, f"{parent}.{f.json} map entry"):
        if number == 1 and wire == 2:
            key = _utf8(v, where)
        elif number == 2:
            seen = True
            vt = f.value
            if vt in _SCALAR_WIRE:
                if wire != _SCALAR_WIRE[vt]:
                    raise _wrong_wire(f"{parent}.{f.json} map entry", number, wire, where)
                value = _scalar_type(vt, v, where)
            elif wire != 2:
                raise _wrong_wire(f"{parent}.{f.json} map entry", number, wire, where)
            else:
                value = _value(f, vt, f.value_message, v, f"{where}[{key}]")
        else:
            raise _unknown_field(f"{parent}.{f.json} map entry", number, where)
    if not seen:  # a value field left off the wire is its zero value
        vt = f.value
        value = _ZERO[vt] if vt in _ZERO else _value(f, vt, f.value_message, b"", f"{where}[{key}]")
    return key, value


def _scalar_type(t: str, raw: Any, where: str) -> Any:
    if t == "string":
        return _utf8(raw, where)
    if t == "bytes":
        return base64.b64encode(raw).decode()
    if t == "bool":
        return raw != 0
    if t == "int32":
        return _signed(raw, 32)
    if t == "int64":
        return _signed(raw, 64)
    if t == "double":
        return struct.unpack("<d", raw)[0]
    if t == "float":
        return struct.unpack("<f", raw)[0]
    return raw


def _decode_message(buf: bytes, msg: Message, path: str) -> dict[str, Any]:
    values: dict[int, Any] = {}
    for number, wire, raw in _fields(buf, msg.name):
        f = msg.by_number.get(number)
        if f is None:
            raise _unknown_field(msg.name, number, path)
        # the path of a field is only spelled out where it is needed (nested values, errors)
        if f.map:
            if wire != 2:
                raise _wrong_wire(msg.name, number, wire, path)
            key, value = _map_entry(f, raw, _join(path, f.json), msg.name)
            values.setdefault(number, {})[key] = value
            continue
        if wire != f.wire:
            if f.repeated and wire == 2 and f.wire in (0, 1, 5):  # packed (proto3 writers)
                items = values.setdefault(number, [])
                items.extend(_unpack(f, raw, _join(path, f.json), msg.name))
                continue
            raise _wrong_wire(msg.name, number, wire, path)
        if f.type == "string":
            try:
                value = raw.decode()
            except UnicodeDecodeError:
                raise bad_request(f"{_join(path, f.json)}: a protobuf string is not valid UTF-8") from None
        elif f.wire == 2 and f.type != "bytes":
            value = _value(f, f.type, f.message, raw, _join(path, f.json))
        else:
            value = _scalar(f, wire, raw, "")
        if f.repeated:
            values.setdefault(number, []).append(value)
        else:
            values[number] = value
    out: dict[str, Any] = {}
    for f in msg.fields:
        present = f.number in values
        if f.inline:
            sub = values[f.number] if present else _decode_message(b"", f.message, path)  # type: ignore[arg-type]
            out.update(sub)
            continue
        if present:
            value = values[f.number]
            if not (f.pointer or f.repeated or f.map) and (f.omitempty or f.omitzero):
                if f.type in _ZERO and value == _ZERO[f.type]:
                    continue
                if f.omitzero and f.special and value is None:
                    continue  # omitzero on a metav1.Time (omitempty never drops a Go struct)
            out[f.json] = value
            continue
        if f.pointer or f.repeated or f.map or f.type == "bytes":
            if not (f.omitempty or f.omitzero):
                out[f.json] = None  # a nil pointer, slice or map: Go writes null
            continue
        if f.type in _ZERO:
            if not (f.omitempty or f.omitzero):
                out[f.json] = _ZERO[f.type]
            continue
        if f.special:
            zero = _SPECIAL_ZERO[f.type]
            if f.omitzero and f.type in ("time", "microtime"):
                continue
            out[f.json] = zero
            continue
        out[f.json] = _decode_message(b"", f.message, f"{path}.{f.json}" if path else f.json)  # type: ignore[arg-type]
    return out


def _unpack(f: Field, raw: bytes, where: str, msg_name: str) -> list[Any]:
    items: list[Any] = []
    i = 0
    while i < len(raw):
        if f.wire == 0:
            v, i = _read_varint(raw, i, msg_name)
        else:
            size = 8 if f.wire == 1 else 4
            if i + size > len(raw):
                raise bad_request(f"protobuf body is truncated inside packed field {f.number} of {msg_name}")
            v, i = raw[i : i + size], i + size
        items.append(_scalar(f, f.wire, v, where))
    return items


# ---------------------------------------------------------------- messages: JSON -> protobuf


def _encode_message(obj: Any, msg: Message, path: str, inlined: bool = False) -> bytes:
    if obj is None:
        obj = {}
    if not isinstance(obj, dict):
        raise bad_request(
            f"{path or 'the object'}: expected an object for {msg.name}, got {type(obj).__name__}"
        )
    extra = () if inlined else obj.keys() - msg.json_names
    if extra:
        where = f"{path}.{min(extra)}" if path else min(extra)
        raise ApiError(
            406,
            "NotAcceptable",
            f"{where} has no field in protobuf message {msg.name} (k8s.io/api v0.36); it cannot be "
            f"sent as {CONTENT_TYPE} without loss: accept application/json",
        )
    out = bytearray()
    for f in msg.by_wire:
        if f.inline:
            sub = _encode_message(obj, f.message, path, inlined=True)  # type: ignore[arg-type]
            out += f.tag + _varint_bytes(len(sub)) + sub
            continue
        value = obj.get(f.json)
        if f.map:
            if value:
                where = _join(path, f.json)
                if not isinstance(value, dict):
                    raise bad_request(f"{where}: expected a map")
                for key in sorted(value):
                    entry = _encode_map_entry(f, key, value[key], f"{where}[{key}]")
                    out += f.tag + _varint_bytes(len(entry)) + entry
            continue
        if f.repeated:
            if value:
                where = _join(path, f.json)
                if not isinstance(value, list):
                    raise bad_request(f"{where}: expected a list")
                for i, item in enumerate(value):
                    out += _encode_field(f, f.type, f.message, item, f"{where}[{i}]")
            continue
        if value is None and (f.pointer or f.type == "bytes"):
            continue
        if f.type in _SCALAR_WIRE:
            try:
                out += f.tag + _encode_scalar(f.type, value, "")
            except ApiError:
                _encode_scalar(f.type, value, _join(path, f.json))  # the same error, with its path
                raise
            continue
        out += _encode_field(f, f.type, f.message, value, _join(path, f.json))
    return bytes(out)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _encode_map_entry(f: Field, key: str, value: Any, where: str) -> bytes:
    k = key.encode()
    entry = b"\x0a" + _varint_bytes(len(k)) + k
    vt = f.value
    if vt == "bytes" and value is None:
        return entry
    if vt in _SCALAR_WIRE:
        data = _encode_scalar(vt, value, where)
        key_byte = bytes([0x10 | _SCALAR_WIRE[vt]])
        return entry + key_byte + data
    sub = (
        _encode_message(value, f.value_message, where)
        if f.value_message
        else _encode_special(vt, value, where)
    )  # type: ignore[arg-type]
    return entry + b"\x12" + _varint_bytes(len(sub)) + sub


def _encode_field(f: Field, type_name: str, msg: Message | None, value: Any, where: str) -> bytes:
    if type_name in _SCALAR_WIRE:
        return f.tag + _encode_scalar(type_name, value, where)
    sub = _encode_message(value, msg, where) if msg is not None else _encode_special(type_name, value, where)
    return f.tag + _varint_bytes(len(sub)) + sub


def _encode_scalar(t: str, value: Any, where: str) -> bytes:
    """The value bytes (after the tag) of a scalar; None is the zero value."""
    if t == "string":
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise bad_request(f"{where}: expected a string, got {value!r}")
        data = value.encode()
        return _varint_bytes(len(data)) + data
    if t == "bytes":
        try:
            data = base64.b64decode(value or "", validate=True)
        except (ValueError, TypeError):
            raise bad_request(f"{where}: expected base64 data") from None
        return _varint_bytes(len(data)) + data
    if t == "bool":
        if value is None:
            value = False
        if not isinstance(value, bool):
            raise bad_request(f"{where}: expected true or false, got {value!r}")
        return b"\x01" if value else b"\x00"
    if t in ("double", "float"):
        return struct.pack("<d" if t == "double" else "<f", float(value or 0))
    if value is None:
        value = 0
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad_request(f"{where}: expected an integer, got {value!r}")
    return _varint_bytes(value)


# ---------------------------------------------------------------- objects, lists, watch frames


def _envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    av, k = api_version.encode(), kind.encode()
    type_meta = b"\x0a" + _varint_bytes(len(av)) + av + b"\x12" + _varint_bytes(len(k)) + k
    body = b"\x0a" + _varint_bytes(len(type_meta)) + type_meta + b"\x12" + _varint_bytes(len(raw)) + raw
    return MAGIC + body + b"\x1a\x00\x22\x00"


def encode(obj: dict[str, Any]) -> bytes:
    """The protobuf body of a JSON object (an object, a List, a Status, DeleteOptions)."""
    api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
    msg = message_for(api_version, kind)
    if msg is None:
        raise ApiError(
            406,
            "NotAcceptable",
            f"{api_version} {kind} cannot be served as {CONTENT_TYPE}; accept application/json",
        )
    return _envelope(api_version, kind, _encode_message(obj, msg, ""))


def decode(raw: bytes) -> dict[str, Any]:
    """Turn a Kubernetes protobuf body (`k8s\\x00` + runtime.Unknown) into the JSON object it stands for."""
    if not raw.startswith(MAGIC):
        raise bad_request("protobuf body lacks the k8s\\x00 envelope")
    unknown: dict[int, Any] = {}
    for number, wire, value in _fields(raw[len(MAGIC) :], "k8s.io.apimachinery.pkg.runtime.Unknown"):
        if number not in (1, 2, 3, 4):
            raise _unknown_field("k8s.io.apimachinery.pkg.runtime.Unknown", number, "")
        if wire != 2:
            raise _wrong_wire("k8s.io.apimachinery.pkg.runtime.Unknown", number, wire, "")
        unknown[number] = value
    type_meta: dict[int, str] = {}
    for number, wire, value in _fields(unknown.get(1, b""), "k8s.io.apimachinery.pkg.runtime.TypeMeta"):
        if number not in (1, 2) or wire != 2:
            raise _unknown_field("k8s.io.apimachinery.pkg.runtime.TypeMeta", number, "typeMeta")
        type_meta[number] = _utf8(value, "typeMeta")
    encoding = unknown.get(3, b"")
    if encoding:
        raise ApiError(
            415,
            "UnsupportedMediaType",
            f"protobuf contentEncoding {encoding!r} is not supported; send it plain",
        )
    api_version, kind = type_meta.get(1, ""), type_meta.get(2, "")
    msg = message_for(api_version, kind)
    if msg is None:
        raise ApiError(
            415,
            "UnsupportedMediaType",
            f"{api_version or '(no apiVersion)'} {kind or '(no kind)'} has no protobuf layout in this "
            "server; send it as application/json",
        )
    body = _decode_message(unknown.get(2, b""), msg, "")
    return {"kind": kind, "apiVersion": api_version, **body}


decode_body = decode  # the name server.py has always called


def watch_frame(event_type: str, obj: dict[str, Any]) -> bytes:
    """One length-prefixed frame of a protobuf watch stream."""
    inner = encode(obj)
    raw_ext = b"\x0a" + _varint_bytes(len(inner)) + inner
    t = event_type.encode()
    event = b"\x0a" + _varint_bytes(len(t)) + t + b"\x12" + _varint_bytes(len(raw_ext)) + raw_ext
    return struct.pack(">I", len(event)) + event


def watch_frame_or_error(event_type: str, obj: dict[str, Any]) -> bytes:
    """A watch frame; an object that cannot be encoded becomes an ERROR frame with its Status."""
    try:
        return watch_frame(event_type, obj)
    except ApiError as e:
        return watch_frame("ERROR", e.status())


def decode_watch_stream(data: bytes) -> list[dict[str, Any]]:
    """The events of a protobuf watch body: [{"type": ..., "object": {...}}] (for clients and tests)."""
    events, i = [], 0
    while i < len(data):
        if i + 4 > len(data):
            raise bad_request("protobuf watch stream is truncated inside a frame length")
        (size,) = struct.unpack(">I", data[i : i + 4])
        frame = data[i + 4 : i + 4 + size]
        if len(frame) != size:
            raise bad_request("protobuf watch stream is truncated inside a frame")
        i += 4 + size
        fields = {n: v for n, _, v in _fields(frame, "k8s.io.apimachinery.pkg.apis.meta.v1.WatchEvent")}
        obj_raw = {n: v for n, _, v in _fields(fields.get(2, b""), "RawExtension")}.get(1, b"")
        events.append({"type": _utf8(fields.get(1, b""), "type"), "object": decode(obj_raw)})
    return events


# ---------------------------------------------------------------- content negotiation


def _media_types(header: str) -> list[tuple[str, str]]:
    out = []
    for part in header.split(","):
        media, _, params = part.strip().partition(";")
        if media:
            out.append((media.strip().lower(), params.replace(" ", "").lower()))
    return out


def is_protobuf(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == CONTENT_TYPE


def protobuf_only(accept: str) -> bool:
    """True when the client can read protobuf but not JSON: then answers go out as protobuf.

    `Accept: application/vnd.kubernetes.protobuf,application/json` (client-go's default) is answered
    in JSON as before; an entry with parameters such as `as=Table` asks for another kind, not this one.
    """
    types = _media_types(accept or "")
    pb = any(m == CONTENT_TYPE and ("as=" not in p) for m, p in types)
    readable = {"application/json", "*/*", "application/*", "application/yaml"}
    return pb and not any(m in readable for m, _ in types)


def check_acceptable(accept: str, api_version: str, kind: str) -> None:
    """406 before a response starts when the client reads only protobuf and the kind has no layout."""
    if protobuf_only(accept) and message_for(api_version, kind) is None:
        raise ApiError(
            406,
            "NotAcceptable",
            f"{api_version} {kind} cannot be served as {CONTENT_TYPE}; accept application/json",
        )


def encode_response(code: int, obj: Any) -> tuple[int, bytes]:
    """(status code, body) of an answer to a protobuf-only client; a kind with no layout is a 406 Status."""
    if supported(obj):
        return code, encode(obj)
    what = (
        f"{obj.get('apiVersion', '')} {obj.get('kind', '')}".strip()
        if isinstance(obj, dict)
        else "this answer"
    )
    err = ApiError(
        406, "NotAcceptable", f"{what} cannot be served as {CONTENT_TYPE}; accept application/json"
    )
    return 406, encode(err.status())


def stream_content_type(accept: str) -> str:
    return WATCH_CONTENT_TYPE if protobuf_only(accept) else "application/json"
