"""Publishing ResourceSlices through the official client against the simulated API server: what the
server stores, the dropped-field check with DRAConsumableCapacity off, generations, splitting, and
republishing after the kubelet wipes the slices."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from drakit.gpuprofiles import load_profile
from drakit.names import SLICES
from driver.kube import api_client
from driver.publisher import DroppedFieldsError, SlicePublisher
from driver.slices import PublishSettings, build_slices
from sim.testing import SimApi, sim_api
from tests.support.driver_harness import DRIVER

MiB = 1 << 20
SETTINGS = PublishSettings("node-1", DRIVER, True, "range", MiB, MiB)


@pytest.fixture
def api() -> Iterator[SimApi]:
    with sim_api() as a:
        yield a


def publisher(api: SimApi, profile: str = "h100x8", settings: PublishSettings = SETTINGS) -> SlicePublisher:
    gpus = load_profile(profile, settings.node_name)
    return SlicePublisher(api_client(str(api.kubeconfig)), gpus, settings)


def test_eight_gpus_are_stored_exactly_as_built_and_a_second_publish_writes_nothing(api: SimApi) -> None:
    pub = publisher(api)
    assert pub.publish() is True
    [stored] = api.slices()
    assert stored["spec"] == build_slices(load_profile("h100x8", "node-1"), SETTINGS, 1)[0]["spec"]
    version = stored["metadata"]["resourceVersion"]
    assert pub.publish() is False
    assert api.slices()[0]["metadata"]["resourceVersion"] == version


def test_a_restarted_driver_adopts_identical_slices_and_bumps_the_generation_on_change(api: SimApi) -> None:
    publisher(api).publish()
    version = api.slices()[0]["metadata"]["resourceVersion"]
    assert publisher(api).publish() is False  # a new process, same GPUs: nothing written
    assert api.slices()[0]["metadata"]["resourceVersion"] == version
    changed = publisher(api, settings=dataclasses.replace(SETTINGS, memory_policy="none"))
    assert changed.publish() is True
    assert api.slices()[0]["spec"]["pool"]["generation"] == 2


@pytest.mark.parametrize("kube_version", ["1.34", "1.35"])
def test_gate_off_fails_loudly_naming_the_gate_and_leaves_no_slice(kube_version: str) -> None:
    with sim_api(kube_version) as api:
        with pytest.raises(DroppedFieldsError) as err:
            publisher(api).publish()
        message = str(err.value)
        assert "DRAConsumableCapacity" in message
        assert "spec.devices[0].allowMultipleAllocations" in message
        assert "spec.devices[0].capacity.memory.requestPolicy" in message
        assert api.slices() == []


def test_gate_off_with_sharing_off_publishes_exclusive_gpus() -> None:
    with sim_api("1.35") as old:
        settings = dataclasses.replace(SETTINGS, sharing=False, memory_policy="none")
        assert publisher(old, "rtx3090x2", settings).publish()
        assert [d.get("allowMultipleAllocations") for d in old.slices()[0]["spec"]["devices"]] == [None, None]


def test_gate_explicitly_enabled_on_1_35_keeps_the_fields() -> None:
    with sim_api("1.35", {"DRAConsumableCapacity": True}) as api:
        publisher(api, "odd16380").publish()
        assert api.slices()[0]["spec"]["devices"][0]["allowMultipleAllocations"] is True


def test_more_than_128_gpus_split_into_two_slices_then_shrink_with_a_generation_bump(api: SimApi) -> None:
    many = [dataclasses.replace(g, index=i) for i, g in enumerate(load_profile("h100x8", "node-1") * 17)]
    pub = SlicePublisher(api_client(str(api.kubeconfig)), many, SETTINGS)
    pub.publish()
    slices = api.slices()
    assert [len(s["spec"]["devices"]) for s in slices] == [128, 8]
    pools = {(s["spec"]["pool"]["generation"], s["spec"]["pool"]["resourceSliceCount"]) for s in slices}
    assert pools == {(1, 2)}
    pub.gpus = many[:8]
    assert pub.publish()
    [one] = api.slices()
    assert one["spec"]["pool"] == {"name": "node-1", "generation": 2, "resourceSliceCount": 1}


def test_wiped_slices_are_republished_with_a_new_generation(api: SimApi) -> None:
    pub = publisher(api)
    pub.publish()
    pub.start_watching()
    try:
        for round_ in (1, 2):
            # What the kubelet does at its start, or 30 s after it lost the driver.
            api.store.delete_collection(SLICES, field_selector="spec.nodeName=node-1")
            [back] = api.wait_for_slices(
                lambda s, r=round_: len(s) == 1 and s[0]["spec"]["pool"]["generation"] == 1 + r,
                what=f"republish #{round_} after a wipe",
            )
            assert back["spec"]["devices"] == build_slices(pub.gpus, SETTINGS, 1)[0]["spec"]["devices"]
    finally:
        pub.stop_watching()


def test_a_slice_changed_by_someone_else_is_put_back(api: SimApi) -> None:
    pub = publisher(api, "rtx3090x2")
    pub.publish()
    pub.start_watching()
    try:
        [s] = api.slices()
        s["spec"]["devices"] = s["spec"]["devices"][:1]
        api.store.update(SLICES, s)
        [back] = api.wait_for_slices(
            lambda sl: len(sl) == 1 and len(sl[0]["spec"]["devices"]) == 2,
            what="the edited slice to be restored",
        )
        assert back["spec"]["pool"]["generation"] == 2
    finally:
        pub.stop_watching()


def test_remove_all_deletes_only_this_nodes_slices(api: SimApi) -> None:
    publisher(api).publish()
    other = dataclasses.replace(SETTINGS, node_name="node-2")
    publisher(api, "rtx3090x2", other).publish()
    assert publisher(api).remove_all() == 1
    assert [s["spec"]["nodeName"] for s in api.slices()] == ["node-2"]
