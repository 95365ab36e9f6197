"""Strict schema validation, DRA rules and DRAConsumableCapacity gate dropping on writes."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from sim.apiserver import ApiError, Store
from sim.config import SimConfig

SLICES = "resourceslices.resource.k8s.io"
CLAIMS = "resourceclaims.resource.k8s.io"
TEMPLATES = "resourceclaimtemplates.resource.k8s.io"
SHARE_ID = "a671734a-e8e5-11e4-8fde-42010af09327"


def gpu(
    name: str = "gpu-0", policy: dict[str, Any] | None = None, multi: bool | None = True
) -> dict[str, Any]:
    cap: dict[str, Any] = {"value": "24Gi"}
    if policy is not None:
        cap["requestPolicy"] = policy
    dev: dict[str, Any] = {
        "name": name,
        "attributes": {"uuid": {"string": "GPU-1"}},
        "capacity": {"memory": cap},
    }
    if multi is not None:
        dev["allowMultipleAllocations"] = multi
    return dev


def rslice(devices: list[dict[str, Any]], name: str = "node-1-gpu") -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": name},
        "spec": {
            "driver": "gpu.example.com",
            "nodeName": "node-1",
            "pool": {"name": "node-1", "generation": 1, "resourceSliceCount": 1},
            "devices": devices,
        },
    }


def claim(requests: list[dict[str, Any]], name: str = "c") -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name},
        "spec": {"devices": {"requests": requests}},
    }


EXACT = {
    "name": "gpu",
    "exactly": {"deviceClassName": "gpu.example.com", "capacity": {"requests": {"memory": "6Gi"}}},
}
RANGE = {"default": "24Gi", "validRange": {"min": "1Gi", "step": "1Gi"}}


def error_of(store: Store, resource: str, obj: dict[str, Any], namespace: str | None = None) -> ApiError:
    with pytest.raises(ApiError) as e:
        store.create(resource, obj, namespace=namespace)
    return e.value


def fields(err: ApiError) -> list[str]:
    return [c["field"] for c in err.causes]


def test_unknown_field_is_bad_request_naming_the_path(store: Store) -> None:
    bad = rslice([dict(gpu(), bogus=1)])
    err = error_of(store, SLICES, bad)
    assert err.code == 400 and 'unknown field "spec.devices[0].bogus"' in err.message
    assert fields(err) == ["spec.devices[0].bogus"]


def test_misspelt_claim_field_is_rejected_with_its_path(store: Store) -> None:
    req = copy.deepcopy(EXACT)
    req["exactly"]["capacity"] = {"request": {"memory": "6Gi"}}
    err = error_of(store, CLAIMS, claim([req]), "default")
    assert fields(err) == ["spec.devices.requests[0].exactly.capacity.request"]


def test_wrong_type_is_bad_request_naming_the_field(store: Store) -> None:
    err = error_of(store, SLICES, rslice([gpu(multi="yes")]))  # type: ignore[arg-type]
    assert err.code == 400 and fields(err) == ["spec.devices[0].allowMultipleAllocations"]


def test_missing_required_field_is_invalid(store: Store) -> None:
    obj = rslice([gpu()])
    del obj["spec"]["driver"]
    err = error_of(store, SLICES, obj)
    assert err.code == 422 and err.reason == "Invalid" and "spec.driver" in fields(err)


def test_every_bad_field_is_reported_at_once(store: Store) -> None:
    obj = rslice(
        [
            gpu(policy={"default": "24Gi", "validRange": {"min": "1Gi", "step": "5Gi"}}, multi=None),
            gpu("GPU_1"),
        ]
    )
    err = error_of(store, SLICES, obj)
    assert err.code == 422
    assert set(fields(err)) == {"spec.devices[0].capacity[memory].requestPolicy", "spec.devices[1].name"}


def test_request_policy_needs_allow_multiple_allocations(store: Store) -> None:
    err = error_of(store, SLICES, rslice([gpu(policy=RANGE, multi=False)]))
    assert err.causes[0]["field"] == "spec.devices[0].capacity[memory].requestPolicy"
    assert "allowMultipleAllocations must be true" in err.causes[0]["message"]


@pytest.mark.parametrize(
    ("policy", "field", "text"),
    [
        (
            {"default": "24Gi", "validRange": {"min": "1Gi", "step": "5Gi"}},
            "spec.devices[0].capacity[memory].requestPolicy.default",
            "multiple of validRange.step",
        ),
        (
            {"default": "24Gi", "validRange": {"min": "1Gi", "max": "30Gi"}},
            "spec.devices[0].capacity[memory].requestPolicy.validRange.max",
            "less than or equal to capacity value",
        ),
        (
            {"default": "512Mi", "validRange": {"min": "1Gi"}},
            "spec.devices[0].capacity[memory].requestPolicy.default",
            "greater than or equal to validRange.min",
        ),
        (
            {"validRange": {"min": "1Gi"}},
            "spec.devices[0].capacity[memory].requestPolicy.default",
            "Required value",
        ),
        (
            {"default": "1Gi", "validValues": ["1Gi"], "validRange": {"min": "1Gi"}},
            "spec.devices[0].capacity[memory].requestPolicy",
            "exactly one policy can be specified",
        ),
        (
            {"default": "2Gi", "validValues": ["4Gi", "2Gi"]},
            "spec.devices[0].capacity[memory].requestPolicy.validValues",
            "ascending",
        ),
        (
            {"default": "3Gi", "validValues": ["2Gi", "4Gi"]},
            "spec.devices[0].capacity[memory].requestPolicy.default",
            "must be one of validValues",
        ),
    ],
)
def test_request_policy_consistency(store: Store, policy: dict[str, Any], field: str, text: str) -> None:
    err = error_of(store, SLICES, rslice([gpu(policy=policy)]))
    assert any(c["field"] == field and text in c["message"] for c in err.causes), err.causes


def test_valid_policy_on_a_shareable_device_is_stored_verbatim(store: Store) -> None:
    policy = {"default": "24Gi", "validRange": {"min": "1Gi", "max": "24Gi", "step": "1Gi"}}
    out = store.create(SLICES, rslice([gpu(policy=policy)]))
    assert out["spec"]["devices"][0]["capacity"]["memory"]["requestPolicy"] == policy
    assert out["spec"]["devices"][0]["allowMultipleAllocations"] is True


def test_slice_limits_and_one_of_node_selection(store: Store) -> None:
    too_many = rslice([gpu(f"gpu-{i}", multi=None) for i in range(129)])
    assert "spec.devices" in fields(error_of(store, SLICES, too_many))
    dev = gpu(multi=None)
    dev["attributes"] = {f"a{i}": {"int": i} for i in range(32)}
    assert "spec.devices[0]" in fields(error_of(store, SLICES, rslice([dev])))
    both = rslice([gpu()])
    both["spec"]["allNodes"] = True
    assert "spec" in fields(error_of(store, SLICES, both))


def test_attribute_needs_exactly_one_value_and_semver(store: Store) -> None:
    dev = gpu()
    dev["attributes"] = {"x": {"int": 1, "string": "a"}, "driverVersion": {"version": "8.0"}}
    err = error_of(store, SLICES, rslice([dev]))
    assert set(fields(err)) == {
        "spec.devices[0].attributes[x]",
        "spec.devices[0].attributes[driverVersion].version",
    }


def test_claim_request_needs_exactly_one_of_exactly_or_first_available(store: Store) -> None:
    err = error_of(store, CLAIMS, claim([{"name": "gpu"}]), "default")
    assert fields(err) == ["spec.devices.requests[0]"]


def test_claim_defaults_allocation_mode_and_count(store: Store) -> None:
    out = store.create(CLAIMS, claim([EXACT]), namespace="default")
    assert out["spec"]["devices"]["requests"][0]["exactly"]["allocationMode"] == "ExactCount"
    assert out["spec"]["devices"]["requests"][0]["exactly"]["count"] == 1


def test_claim_spec_is_immutable(store: Store) -> None:
    c = store.create(CLAIMS, claim([EXACT]), namespace="default")
    c["spec"]["devices"]["requests"][0]["exactly"]["count"] = 2
    with pytest.raises(ApiError) as e:
        store.update(CLAIMS, c)
    assert e.value.code == 422 and fields(e.value) == ["spec"]


def allocate(
    store: Store, share_id: str | None, devices: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    c = store.get(CLAIMS, "c", "default")
    result: dict[str, Any] = {
        "request": "gpu",
        "driver": "gpu.example.com",
        "pool": "node-1",
        "device": "gpu-0",
    }
    if share_id:
        result["shareID"] = share_id
        result["consumedCapacity"] = {"memory": "6Gi"}
    c["status"] = {"allocation": {"devices": {"results": [result]}}}
    if devices is not None:
        c["status"]["devices"] = devices
    return store.update(CLAIMS, c, subresource="status")


def test_claim_status_share_id_must_be_a_uuid(store: Store) -> None:
    store.create(CLAIMS, claim([EXACT]), namespace="default")
    with pytest.raises(ApiError) as e:
        allocate(store, "not-a-uuid")
    assert fields(e.value) == ["status.allocation.devices.results[0].shareID"]
    assert allocate(store, SHARE_ID)["status"]["allocation"]["devices"]["results"][0]["shareID"] == SHARE_ID


def test_claim_status_devices_must_match_an_allocated_device(store: Store) -> None:
    store.create(CLAIMS, claim([EXACT]), namespace="default")
    wrong = [{"driver": "gpu.example.com", "pool": "node-1", "device": "gpu-0"}]  # shareID missing
    with pytest.raises(ApiError) as e:
        allocate(store, SHARE_ID, wrong)
    assert "must be an allocated device in the claim" in e.value.causes[0]["message"]
    right = [dict(wrong[0], shareID=SHARE_ID)]
    assert allocate(store, SHARE_ID, right)["status"]["devices"] == right


def test_claim_template_is_validated_like_a_claim(store: Store) -> None:
    tmpl = {
        "metadata": {"name": "t"},
        "spec": {"spec": {"devices": {"requests": [{"name": "Bad_Name", "exactly": EXACT["exactly"]}]}}},
    }
    err = error_of(store, TEMPLATES, tmpl, "default")
    assert fields(err) == ["spec.spec.devices.requests[0].name"]


def test_bad_object_names_are_invalid(store: Store) -> None:
    err = error_of(store, "configmaps", {"metadata": {"name": "Upper_Case"}}, "default")
    assert (err.code, fields(err)) == (422, ["metadata.name"])


def test_body_of_another_kind_is_bad_request(store: Store) -> None:
    err = error_of(
        store, "configmaps", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}, "default"
    )
    assert err.code == 400 and "ConfigMap" in err.message


# ---- DRAConsumableCapacity gate ----


def test_gate_off_silently_drops_consumable_capacity_fields() -> None:
    old = Store(SimConfig(kube_version="1.35"))
    out = old.create(SLICES, rslice([gpu(policy=RANGE)]))
    dev = out["spec"]["devices"][0]
    assert "allowMultipleAllocations" not in dev and dev["capacity"]["memory"] == {"value": "24Gi"}
    c = old.create(CLAIMS, claim([EXACT]), namespace="default")
    assert "capacity" not in c["spec"]["devices"]["requests"][0]["exactly"]


def test_gate_default_follows_the_emulated_version_and_flags_override() -> None:
    assert not SimConfig(kube_version="1.34").gate("DRAConsumableCapacity")
    assert SimConfig(kube_version="1.36").gate("DRAConsumableCapacity")
    assert SimConfig.from_flags("1.34", "DRAConsumableCapacity=true").gate("DRAConsumableCapacity")
    off = Store(SimConfig.from_flags("1.37", "DRAConsumableCapacity=false"))
    assert "allowMultipleAllocations" not in off.create(SLICES, rslice([gpu()]))["spec"]["devices"][0]
    with pytest.raises(ValueError, match="unknown feature gate"):
        SimConfig.from_flags("1.36", "NoSuchGate=true")


def test_gate_off_keeps_fields_the_old_object_already_had() -> None:
    on = SimConfig(kube_version="1.36")
    store = Store(on)
    created = store.create(SLICES, rslice([gpu(policy=RANGE)]))
    store.config = SimConfig(kube_version="1.35")  # a downgrade: the stored object keeps its fields
    created["metadata"]["labels"] = {"touched": "yes"}
    updated = store.update(SLICES, created)
    assert updated["spec"]["devices"][0]["allowMultipleAllocations"] is True
    assert "requestPolicy" in updated["spec"]["devices"][0]["capacity"]["memory"]


def test_quantities_are_stored_in_canonical_form(store: Store) -> None:
    dev = gpu(policy={"default": "24576Mi", "validRange": {"min": "1024Mi", "step": "1Gi"}})
    out = store.create(SLICES, rslice([dev]))
    assert out["spec"]["devices"][0]["capacity"]["memory"]["requestPolicy"] == {
        "default": "24Gi",
        "validRange": {"min": "1Gi", "step": "1Gi"},
    }


def test_a_string_that_is_not_a_quantity_is_bad_request_naming_the_field(store: Store) -> None:
    req = copy.deepcopy(EXACT)
    req["exactly"]["capacity"]["requests"]["memory"] = "six gigs"
    err = error_of(store, CLAIMS, claim([req]), "default")
    assert err.code == 400
    assert fields(err) == ["spec.devices.requests[0].exactly.capacity.requests[memory]"]


def test_cel_selector_that_does_not_compile_is_invalid(store: Store) -> None:
    cls = {
        "metadata": {"name": "gpu.example.com"},
        "spec": {"selectors": [{"cel": {"expression": "device.driver =="}}]},
    }
    err = error_of(store, "deviceclasses.resource.k8s.io", cls)
    assert err.code == 422 and fields(err) == ["spec.selectors[0].cel.expression"]
    assert "compilation failed" in err.causes[0]["message"]


def test_prioritized_list_gate_off_drops_first_available_and_the_request_is_then_invalid() -> None:
    store = Store(SimConfig.from_flags("1.36", "DRAPrioritizedList=false"))
    req = {"name": "gpu", "firstAvailable": [{"name": "big", "deviceClassName": "gpu.example.com"}]}
    err = error_of(store, CLAIMS, claim([req]), "default")
    assert fields(err) == ["spec.devices.requests[0]"]
