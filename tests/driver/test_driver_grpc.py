"""The kubelet plugin over real unix sockets, with a kubelet-side client built from the same protos and
claims read from the simulated API server:
registration answers, v1 and v1beta1 prepare/unprepare, batches with per-claim errors, idempotency and
concurrent calls, and the metrics those calls produce."""

from __future__ import annotations

import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from drakit.api import pluginregistration_pb2, pluginregistration_pb2_grpc
from driver.inventory import load_inventory
from driver.kube import ClaimLister, ClaimReader, api_client
from driver.metrics import Metrics
from driver.plugin import KubeletPlugin
from driver.state import DeviceState
from sim.testing import SimApi, sim_api
from tests.support.driver_harness import DRIVER, DRAClient, allocated_claim, result, short_tmp_dir


class Plugin:
    """The plugin in this process, reading claims from the simulated API server with the official client."""

    def __init__(self, root: Path, api: SimApi) -> None:
        self.root, self.api = root, api
        self.api_client = api_client(str(api.kubeconfig))
        self.state = DeviceState(
            driver_name=DRIVER,
            node_name="node-1",
            inventory=load_inventory("rtx3090x2", "node-1"),
            cdi_dir=root / "cdi",
            state_dir=root / "state",
            read_claim=ClaimReader(self.api_client),
            list_claims=ClaimLister(self.api_client),
        )
        self.state.restore()
        self.metrics = Metrics()
        self.plugin = KubeletPlugin(
            self.state,
            self.metrics,
            DRIVER,
            root / "plugins" / "dra.sock",
            root / "registry" / f"{DRIVER}-reg.sock",
        )
        self.plugin.start()
        self.client = DRAClient(root / "plugins" / "dra.sock")

    def add(self, claim: dict[str, Any]) -> dict[str, Any]:
        return self.api.add_claim(claim)

    def close(self) -> None:
        self.client.close()
        self.plugin.stop()
        self.metrics.close()
        self.api_client.close()


@pytest.fixture
def plugin() -> Iterator[Plugin]:
    with short_tmp_dir() as root, sim_api() as api:
        p = Plugin(root, api)
        try:
            yield p
        finally:
            p.close()


def test_registration_socket_answers_get_info_for_a_dra_plugin(plugin: Plugin) -> None:
    with grpc.insecure_channel(f"unix://{plugin.root}/registry/{DRIVER}-reg.sock") as channel:
        stub = pluginregistration_pb2_grpc.RegistrationStub(channel)
        info = stub.GetInfo(pluginregistration_pb2.InfoRequest(), timeout=5)
        assert info.type == "DRAPlugin"
        assert info.name == DRIVER
        assert info.endpoint == str(plugin.root / "plugins" / "dra.sock")
        assert list(info.supported_versions) == ["v1.DRAPlugin", "v1beta1.DRAPlugin"]
        stub.NotifyRegistrationStatus(
            pluginregistration_pb2.RegistrationStatus(plugin_registered=True), timeout=5
        )
    assert plugin.plugin.registration.registered.is_set()


def test_v1_prepare_answers_devices_with_share_id_and_v1beta1_without(plugin: Plugin) -> None:
    share = str(uuid.uuid4())
    claim = plugin.add(
        allocated_claim("a", results=[result("gpu-1", request="gpu/big", share_id=share, memory="8Gi")])
    )
    uid = claim["metadata"]["uid"]
    v1 = plugin.client.prepare([claim]).claims[uid]
    assert v1.error == ""
    [d] = v1.devices
    assert (list(d.request_names), d.pool_name, d.device_name) == (["gpu"], "node-1", "gpu-1")
    assert list(d.cdi_device_ids) == [f"k8s.{DRIVER}/gpu={uid}-gpu-1-{share}"]
    assert d.HasField("share_id") and d.share_id == share
    beta = plugin.client.prepare([claim], version="v1beta1").claims[uid]
    assert [(x.device_name, list(x.cdi_device_ids)) for x in beta.devices] == [
        ("gpu-1", list(d.cdi_device_ids))
    ]
    exclusive = plugin.add(allocated_claim("b", results=[result("gpu-0")]))
    [e] = plugin.client.prepare([exclusive]).claims[exclusive["metadata"]["uid"]].devices
    assert not e.HasField("share_id")


def test_a_batch_answers_every_claim_and_a_bad_one_does_not_fail_the_others(plugin: Plugin) -> None:
    good = [
        plugin.add(
            allocated_claim(
                f"g{i}", results=[result(f"gpu-{i % 2}", share_id=str(uuid.uuid4()), memory="1Gi")]
            )
        )
        for i in range(4)
    ]
    unallocated = plugin.add(allocated_claim("pending"))
    missing = allocated_claim("gone")
    response = plugin.client.prepare([*good, unallocated, missing])
    assert set(response.claims) == {c["metadata"]["uid"] for c in [*good, unallocated, missing]}
    assert all(response.claims[c["metadata"]["uid"]].error == "" for c in good)
    assert "default/pending" in response.claims[unallocated["metadata"]["uid"]].error
    assert "not allocated" in response.claims[unallocated["metadata"]["uid"]].error
    assert "not found in the API" in response.claims[missing["metadata"]["uid"]].error
    unprepared = plugin.client.unprepare([*good, missing])
    assert {uid: r.error for uid, r in unprepared.claims.items()} == {
        c["metadata"]["uid"]: "" for c in [*good, missing]
    }
    assert not any((plugin.root / "cdi").iterdir())


def test_repeated_and_concurrent_calls_give_the_same_answer(plugin: Plugin) -> None:
    claims = [
        plugin.add(
            allocated_claim(
                f"c{i}", results=[result(f"gpu-{i % 2}", share_id=str(uuid.uuid4()), memory="2Gi")]
            )
        )
        for i in range(8)
    ]
    answers: list[Any] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def call() -> None:
        try:
            barrier.wait()
            answers.append(plugin.client.prepare(claims))
        except BaseException as err:  # surfaced by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len(answers) == 8 and all(a == answers[0] for a in answers)
    assert all(r.error == "" for r in answers[0].claims.values())
    assert len(list((plugin.root / "cdi").iterdir())) == 8
    assert len(plugin.state.prepared_claims()) == 8
    for _ in range(2):
        assert all(r.error == "" for r in plugin.client.unprepare(claims).claims.values())
    assert plugin.state.prepared_claims() == {}


def test_metrics_count_prepares_unprepares_errors_and_durations(plugin: Plugin) -> None:
    port = plugin.metrics.serve("127.0.0.1", 0)
    ok = plugin.add(allocated_claim("ok", results=[result("gpu-0")]))
    plugin.client.prepare([ok, allocated_claim("missing")])
    plugin.client.unprepare([ok])
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    assert 'dra_gpu_driver_claims_total{method="prepare"} 2.0' in text
    assert 'dra_gpu_driver_claim_errors_total{method="prepare"} 1.0' in text
    assert 'dra_gpu_driver_claims_total{method="unprepare"} 1.0' in text
    assert 'dra_gpu_driver_request_duration_seconds_count{method="prepare"} 1.0' in text
    assert 'dra_gpu_driver_requests_total{method="prepare",version="v1"} 1.0' in text
    assert "dra_gpu_driver_prepared_claims 0.0" in text


def test_plugin_stop_removes_both_sockets(plugin: Plugin) -> None:
    assert (plugin.root / "plugins" / "dra.sock").is_socket()
    plugin.plugin.stop()
    assert not (plugin.root / "plugins" / "dra.sock").exists()
    assert not (plugin.root / "registry" / f"{DRIVER}-reg.sock").exists()
