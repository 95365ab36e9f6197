"""Kubernetes protobuf request bodies: decoded for the kinds kubectl's generators send, refused otherwise."""

from __future__ import annotations

import pytest

from sim.apiserver import ApiError
from sim.apiserver.protobuf import MAGIC, decode_body


def field(number: int, payload: bytes) -> bytes:
    assert len(payload) < 128 and number < 16
    return bytes([number << 3 | 2, len(payload)]) + payload


def envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    type_meta = field(1, api_version.encode()) + field(2, kind.encode())
    return MAGIC + field(1, type_meta) + field(2, raw)


def test_config_map_with_labels_and_data_decodes_to_json() -> None:
    label = field(1, b"app") + field(2, b"x")
    meta = field(1, b"cm") + field(3, b"team") + field(11, label)
    body = envelope("v1", "ConfigMap", field(1, meta) + field(2, field(1, b"k") + field(2, b"v")))
    assert decode_body(body) == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cm", "namespace": "team", "labels": {"app": "x"}},
        "data": {"k": "v"},
    }


def test_unknown_field_is_refused_not_dropped() -> None:
    body = envelope("v1", "ConfigMap", field(1, field(1, b"cm")) + field(9, b"?"))
    with pytest.raises(ApiError) as e:
        decode_body(body)
    assert e.value.code == 415 and "field 9 of ConfigMap" in e.value.message


def test_unsupported_kind_says_to_send_json() -> None:
    with pytest.raises(ApiError) as e:
        decode_body(envelope("apps/v1", "Deployment", b""))
    assert e.value.code == 415 and "send JSON" in e.value.message


def test_body_without_envelope_is_bad_request() -> None:
    with pytest.raises(ApiError) as e:
        decode_body(b"\x0a\x00")
    assert e.value.code == 400
