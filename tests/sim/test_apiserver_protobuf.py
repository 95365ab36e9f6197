"""The Kubernetes protobuf codec: client-go's own bytes both ways, hand-built vectors, refusals.

The fixture pairs under tests/fixtures/k8s-protobuf were written by the real client-go v0.36
serializer (README.md there); each `.pb` must decode to its `.json` (or `.from-pb.json` where
protobuf cannot carry an empty list) and each `.json` must encode to the same bytes.
"""

from __future__ import annotations

import datetime
import json
import random
import struct
from pathlib import Path
from typing import Any

import pytest

from sim.apiserver import ApiError
from sim.apiserver import protobuf as pb

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "k8s-protobuf"
CASES = json.loads((FIXTURES / "index.json").read_text())["cases"]
OBJECT_CASES = [c for c in CASES if c["kind"] != "WatchEvent"]
WATCH_CASES = [c for c in CASES if c["kind"] == "WatchEvent"]


def _go_json(obj: Any) -> str:
    """Compact JSON as Go's encoding/json writes it (HTML characters escaped)."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _decoded_json(case: dict[str, Any]) -> str:
    alt = FIXTURES / f"{case['name']}.from-pb.json"
    return (alt if alt.exists() else FIXTURES / case["jsonFile"]).read_text().strip()


def test_fixture_set_is_complete() -> None:
    kinds = {(c["apiVersion"], c["kind"]) for c in CASES}
    for version in ("v1", "v1beta1", "v1beta2"):
        for kind in (
            "ResourceSlice",
            "ResourceSliceList",
            "ResourceClaim",
            "ResourceClaimTemplate",
            "DeviceClass",
        ):
            assert (f"resource.k8s.io/{version}", kind) in kinds
    assert {("v1", k) for k in ("Pod", "Node", "Event", "ConfigMap", "Secret", "ServiceAccount")} <= kinds
    assert {("events.k8s.io/v1", "Event"), ("coordination.k8s.io/v1", "Lease")} <= kinds
    assert len(CASES) == 130


@pytest.mark.parametrize("case", OBJECT_CASES, ids=[c["name"] for c in OBJECT_CASES])
def test_client_go_bytes_decode_to_its_json_and_json_encodes_to_its_bytes(case: dict[str, Any]) -> None:
    data = (FIXTURES / case["pbFile"]).read_bytes()
    decoded = pb.decode(data)
    want = _decoded_json(case)
    assert decoded == json.loads(want)
    # field order and omission follow Go's struct encoding exactly, so even the JSON text matches
    assert _go_json(decoded) == want
    obj = json.loads((FIXTURES / case["jsonFile"]).read_text())
    assert case["checks"]["json_decode_to_pb_bytes_equal"]
    assert pb.encode(obj) == data
    assert pb.encode(decoded) == data


@pytest.mark.parametrize("case", WATCH_CASES, ids=[c["name"] for c in WATCH_CASES])
def test_watch_stream_frames_match_client_go(case: dict[str, Any]) -> None:
    data = (FIXTURES / case["pbFile"]).read_bytes()
    events = [json.loads(line) for line in (FIXTURES / case["jsonFile"]).read_text().splitlines()]
    assert pb.decode_watch_stream(data) == events
    assert b"".join(pb.watch_frame(e["type"], e["object"]) for e in events) == data


def test_captured_nvidia_bodies_decode() -> None:
    captured = [c for c in CASES if c["source"] == "capture"]
    assert [c["extra"]["method"] for c in captured] == ["POST", "DELETE", "PUT"]
    for case in captured:
        assert pb.is_protobuf(case["extra"]["contentType"])
        decoded = pb.decode((FIXTURES / case["pbFile"]).read_bytes())
        assert decoded["kind"] == case["kind"]


# ---------------------------------------------------------------- hand-built vectors


def tag(number: int, wire: int) -> bytes:
    return bytes([number << 3 | wire])


def ld(number: int, payload: bytes) -> bytes:
    assert len(payload) < 128 and number < 16
    return tag(number, 2) + bytes([len(payload)]) + payload


def envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    type_meta = ld(1, api_version.encode()) + ld(2, kind.encode())
    return pb.MAGIC + ld(1, type_meta) + tag(2, 2) + pb._varint_bytes(len(raw)) + raw + b"\x1a\x00\x22\x00"


def test_config_map_built_by_hand_decodes_to_json_like_go() -> None:
    label = ld(1, b"app") + ld(2, b"x")
    meta = ld(1, b"cm") + ld(3, b"team") + ld(11, label)
    body = envelope("v1", "ConfigMap", ld(1, meta) + ld(2, ld(1, b"k") + ld(2, b"v")))
    assert pb.decode(body) == {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"name": "cm", "namespace": "team", "labels": {"app": "x"}},
        "data": {"k": "v"},
    }


def test_value_fields_always_go_on_the_wire_and_pointers_only_when_set() -> None:
    got = pb.encode({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}})
    # ObjectMeta: name, then generateName .. resourceVersion as empty strings, generation 0 and an
    # empty creationTimestamp; deletionGracePeriodSeconds (a pointer) is absent
    meta = ld(1, b"n") + b"".join(ld(n, b"") for n in (2, 3, 4, 5, 6)) + tag(7, 0) + b"\x00" + ld(8, b"")
    # spec {} and status {phase: ""} are value structs: present even when empty
    assert got == envelope("v1", "Namespace", ld(1, meta) + ld(2, b"") + ld(3, ld(1, b"")))
    # DeviceAttribute's members are pointers: {"int": 0} is sent (and comes back), {} sends nothing
    rs = _slice({"name": "gpu-0", "attributes": {"zero": {"int": 0}, "unset": {}}})
    device = pb.decode(pb.encode(rs))["spec"]["devices"][0]
    assert device["attributes"] == {"unset": {}, "zero": {"int": 0}}
    encoded = pb.encode(rs)
    assert ld(1, b"zero") + ld(2, tag(2, 0) + b"\x00") in encoded
    assert ld(1, b"unset") + ld(2, b"") in encoded


def _slice(device: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": "s"},
        "spec": {"driver": "d", "pool": {"name": "p", "resourceSliceCount": 1}, "devices": [device], **spec},
    }


def test_negative_ints_take_ten_bytes_and_decode_signed() -> None:
    rs = _slice({"name": "gpu-0", "attributes": {"minor": {"int": -1}}})
    encoded = pb.encode(rs)
    assert tag(2, 0) + b"\xff" * 9 + b"\x01" in encoded
    assert pb.decode(encoded)["spec"]["devices"][0]["attributes"]["minor"] == {"int": -1}


def test_quantities_travel_in_canonical_form() -> None:
    rs = _slice({"name": "gpu-0", "capacity": {"memory": {"value": "1.5"}, "cores": {"value": "1.5Gi"}}})
    encoded = pb.encode(rs)
    assert ld(1, b"1500m") in encoded and ld(1, b"1536Mi") in encoded
    capacity = pb.decode(encoded)["spec"]["devices"][0]["capacity"]
    assert capacity == {"cores": {"value": "1536Mi"}, "memory": {"value": "1500m"}}
    # a nil *Quantity with no omitempty comes back as null, as Go writes it
    policy = {"value": "1Gi", "requestPolicy": {"validRange": {"min": "1Mi"}}}
    back = pb.decode(pb.encode(_slice({"name": "gpu-0", "capacity": {"memory": policy}})))
    assert back["spec"]["devices"][0]["capacity"]["memory"]["requestPolicy"] == {
        "default": None,
        "validRange": {"min": "1Mi"},
    }


def test_times_whole_seconds_and_micro_times_keep_microseconds() -> None:
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "l", "creationTimestamp": "2026-01-15T10:30:00.75+01:00"},
        "spec": {"acquireTime": "2026-01-15T10:30:00.123456Z", "renewTime": "2026-01-15T10:30:01.000007Z"},
    }
    encoded = pb.encode(lease)
    seconds = int(datetime.datetime(2026, 1, 15, 9, 30, tzinfo=datetime.UTC).timestamp())
    # metav1.Time sends the nanoseconds it was given; decoding keeps whole seconds (upstream does)
    assert ld(8, tag(1, 0) + pb._varint_bytes(seconds) + tag(2, 0) + pb._varint_bytes(750_000_000)) in encoded
    back = pb.decode(encoded)
    assert back["metadata"]["creationTimestamp"] == "2026-01-15T09:30:00Z"
    assert back["spec"]["acquireTime"] == "2026-01-15T10:30:00.123456Z"
    assert back["spec"]["renewTime"] == "2026-01-15T10:30:01.000007Z"
    # a zero creationTimestamp is omitzero: absent; a zero eventTime has no omitzero: null
    event = pb.decode(pb.encode({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"}}))
    assert "creationTimestamp" not in event["metadata"]
    assert event["eventTime"] is None and event["firstTimestamp"] is None


def test_int_or_string_both_forms() -> None:
    assert pb._encode_special("intorstring", 8080, "p") == b"\x08\x00\x10\x90\x3f\x1a\x00"
    assert pb._encode_special("intorstring", "http", "p") == b"\x08\x01\x10\x00\x1a\x04http"
    for value in (8080, "http", -5):
        assert pb._decode_special("intorstring", pb._encode_special("intorstring", value, "p"), "p") == value


@pytest.mark.parametrize(
    ("text", "nanos", "go"),
    [
        ("0", 0, "0s"),
        ("90s", 90 * 10**9, "1m30s"),
        ("1h2m3.5s", (3723 * 10**9) + 5 * 10**8, "1h2m3.5s"),
        ("1500ns", 1500, "1.5µs"),
        ("2.25ms", 2_250_000, "2.25ms"),
        ("-3m", -180 * 10**9, "-3m0s"),
        ("2h", 7200 * 10**9, "2h0m0s"),
    ],
)
def test_durations_parse_and_print_like_go(text: str, nanos: int, go: str) -> None:
    assert pb._parse_duration(text, "d") == nanos
    assert pb._format_duration(nanos) == go


def test_secret_bytes_maps_and_opaque_raw_json() -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "AAEC"}}
    encoded = pb.encode(secret)
    assert ld(2, ld(1, b"k") + ld(2, b"\x00\x01\x02")) in encoded
    assert pb.decode(encoded)["data"] == {"k": "AAEC"}
    params = {"apiVersion": "gpu.example.com/v1", "kind": "GpuConfig", "sharing": {"strategy": "TimeSlicing"}}
    claim = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": "c"},
        "spec": {
            "devices": {"config": [{"requests": ["gpu"], "opaque": {"driver": "d", "parameters": params}}]}
        },
    }
    encoded = pb.encode(claim)
    assert json.dumps(params, separators=(",", ":")).encode() in encoded
    assert pb.decode(encoded)["spec"]["devices"]["config"][0] == claim["spec"]["devices"]["config"][0]


def test_packed_repeated_scalars_are_read() -> None:
    # proto3 writers pack repeated ints; client-go does not, but the reader takes both
    ints = ld(6, bytes([1, 2, 3]))
    attrs = ld(1, b"a") + ld(2, ints)
    device = ld(1, b"gpu-0") + ld(2, attrs)
    spec = ld(1, b"d") + ld(2, ld(1, b"p")) + ld(6, device)
    obj = pb.decode(envelope("resource.k8s.io/v1", "ResourceSlice", ld(1, ld(1, b"s")) + ld(2, spec)))
    assert obj["spec"]["devices"][0]["attributes"]["a"] == {"ints": [1, 2, 3]}


def test_list_and_status_round_trip() -> None:
    status = ApiError(404, "NotFound", 'pods "x" not found', details={"name": "x", "kind": "pods"}).status()
    assert pb.decode(pb.encode(status)) == {**status, "details": {"name": "x", "kind": "pods"}}
    listing = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSliceList",
        "metadata": {"resourceVersion": "7", "continue": "abc", "remainingItemCount": 0},
        "items": [_slice({"name": "gpu-0"})],
    }
    back = pb.decode(pb.encode(listing))
    assert back["metadata"] == {"resourceVersion": "7", "continue": "abc", "remainingItemCount": 0}
    assert back["items"][0]["spec"]["devices"] == [{"name": "gpu-0"}]
    assert "apiVersion" not in back["items"][0]  # list items carry no TypeMeta on the wire


# ---------------------------------------------------------------- refusals


def test_unknown_field_number_is_a_400_naming_message_and_number() -> None:
    body = envelope("v1", "ConfigMap", ld(1, ld(1, b"cm")) + ld(9, b"?"))
    with pytest.raises(ApiError) as e:
        pb.decode(body)
    assert e.value.code == 400
    assert "k8s.io.api.core.v1.ConfigMap has no field number 9" in e.value.message


def test_unknown_field_deep_inside_names_the_nested_message_and_path() -> None:
    attrs = ld(1, b"a") + ld(2, tag(15, 0) + b"\x01")
    device = ld(1, b"gpu-0") + ld(2, attrs)
    spec = ld(1, b"d") + ld(2, ld(1, b"p")) + ld(6, device)
    with pytest.raises(ApiError) as e:
        pb.decode(envelope("resource.k8s.io/v1", "ResourceSlice", ld(1, ld(1, b"s")) + ld(2, spec)))
    assert e.value.code == 400
    assert "k8s.io.api.resource.v1.DeviceAttribute has no field number 15" in e.value.message
    assert "spec.devices.attributes[a]" in e.value.message


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"\x0a\x00", "k8s\\x00 envelope"),
        (envelope("v1", "ConfigMap", ld(1, b"\x0a\x05ab")), "truncated"),
        (envelope("v1", "ConfigMap", tag(1, 0) + b"\x01"), "wrong wire type 0"),
        (envelope("v1", "ConfigMap", tag(1, 3)), "unsupported wire type 3"),
        (envelope("v1", "ConfigMap", ld(2, ld(1, b"\xff") + ld(2, b"v"))), "not valid UTF-8"),
    ],
)
def test_malformed_bodies_are_400(body: bytes, words: str) -> None:
    with pytest.raises(ApiError) as e:
        pb.decode(body)
    assert e.value.code == 400 and words in e.value.message


def test_kind_without_layout_is_415_saying_send_json() -> None:
    with pytest.raises(ApiError) as e:
        pb.decode(envelope("apiextensions.k8s.io/v1", "CustomResourceDefinition", b""))
    assert e.value.code == 415 and "application/json" in e.value.message


def test_field_the_schema_lacks_is_not_dropped_on_encode() -> None:
    with pytest.raises(ApiError) as e:
        pb.encode(_slice({"name": "gpu-0", "futureField": 1}))
    assert e.value.code == 406 and "spec.devices[0].futureField" in e.value.message


def test_negotiation_answers_protobuf_only_to_clients_that_cannot_read_json() -> None:
    assert pb.protobuf_only("application/vnd.kubernetes.protobuf")
    assert pb.protobuf_only("application/vnd.kubernetes.protobuf;stream=watch")
    assert not pb.protobuf_only("application/vnd.kubernetes.protobuf,application/json")
    assert not pb.protobuf_only("application/vnd.kubernetes.protobuf, */*")
    assert not pb.protobuf_only(
        "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json"
    )
    assert not pb.protobuf_only("")
    assert pb.stream_content_type("application/vnd.kubernetes.protobuf") == pb.WATCH_CONTENT_TYPE


def test_watch_frame_is_length_prefixed_watch_event() -> None:
    frame = pb.watch_frame("ADDED", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})
    (size,) = struct.unpack(">I", frame[:4])
    assert size == len(frame) - 4 and frame[4:6] == b"\x0a\x05" and frame[6:11] == b"ADDED"
    assert pb.decode_watch_stream(frame)[0]["object"]["metadata"] == {"name": "c"}


def test_mangled_bodies_are_refused_with_a_status_never_a_crash() -> None:
    # hostile input: flipped, cut and spliced bytes of real bodies end as a decoded object or an
    # ApiError (400/415), never another exception (a 500)
    rng = random.Random(10)
    bodies = [(FIXTURES / c["pbFile"]).read_bytes() for c in OBJECT_CASES[::7]]
    for _ in range(400):
        data = bytearray(rng.choice(bodies))
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(4, len(data))
            choice = rng.random()
            if choice < 0.5:
                data[i] = rng.randrange(256)
            elif choice < 0.75:
                del data[i : i + rng.randint(1, 8)]
            else:
                data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 6)))
        try:
            pb.decode(bytes(data))
        except ApiError as e:
            assert e.code in (400, 415), e


def test_watch_event_that_cannot_be_encoded_becomes_an_error_frame() -> None:
    frame = pb.watch_frame_or_error("ADDED", _slice({"name": "gpu-0", "futureField": 1}))
    [event] = pb.decode_watch_stream(frame)
    assert event["type"] == "ERROR" and event["object"]["code"] == 406
    assert "futureField" in event["object"]["message"]


def test_schema_generator_reads_numbers_from_proto_and_json_rules_from_go_tags(tmp_path: Path) -> None:
    from sim.apiserver import protobuf_schema_gen as gen

    (tmp_path / "generated.proto").write_text(
        "package k8s.io.api.demo.v1;\n"
        "message Thing {\n"
        "  // comment { with braces }\n"
        "  optional k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta metadata = 1;\n"
        "  repeated string names = 2;\n"
        "  map<string, .k8s.io.apimachinery.pkg.api.resource.Quantity> sizes = 3;\n"
        "  optional int64 count = 4;\n"
        "  optional Inner inner = 5;\n"
        "}\n"
        "message Inner {\n  optional bool on = 1;\n}\n"
    )
    (tmp_path / "types.go").write_text(
        "package v1\n"
        "type Thing struct {\n"
        '\tmetav1.TypeMeta `json:",inline"`\n'
        "\t// a `quoted` comment\n"
        '\tmetav1.ObjectMeta `json:"metadata,omitempty" protobuf:"bytes,1,opt,name=metadata"`\n'
        '\tNames []string `json:"names" protobuf:"bytes,2,rep,name=names"`\n'
        '\tSizes map[string]resource.Quantity `json:"sizes,omitempty" protobuf:"bytes,3,rep,name=sizes"`\n'
        '\tCount *int64 `json:"count,omitempty" protobuf:"varint,4,opt,name=count"`\n'
        '\tInner `json:",inline" protobuf:"bytes,5,opt,name=inner"`\n'
        "}\n"
        "type Inner struct {\n"
        '\tOn bool `json:"on" protobuf:"varint,1,opt,name=on"`\n'
        "}\n"
    )
    proto = gen._parse_proto(tmp_path / "generated.proto", "k8s.io.api.demo.v1")
    assert proto["Thing"][2] == ("", "map<string,k8s.io.apimachinery.pkg.api.resource.Quantity>", "sizes", 3)
    assert proto["Thing"][4] == ("optional", "k8s.io.api.demo.v1.Inner", "inner", 5)
    go = gen._parse_go(tmp_path)
    assert [(f["number"], f["json"]) for f in go["Thing"]] == [
        (0, "kind"),
        (0, "apiVersion"),
        (1, "metadata"),
        (2, "names"),
        (3, "sizes"),
        (4, "count"),
        (5, ""),
    ]
    count, inner = go["Thing"][5], go["Thing"][6]
    assert count["pointer"] and count["omitempty"] and not go["Thing"][3]["omitempty"]
    assert inner["inline"] and not inner["pointer"]
