"""`python -m driver` as a real process against the simulated API server: registration order, prepare and
unprepare of claims read from the API, restart from the checkpoint, clean SIGTERM, exit codes."""

from __future__ import annotations

import json
import signal
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from drakit.api import dra_v1_pb2, dra_v1_pb2_grpc, pluginregistration_pb2, pluginregistration_pb2_grpc
from drakit.names import CLAIMS
from sim.testing import SimApi, sim_api, wait_for_file
from tests.support.driver_harness import (
    DRIVER,
    DRAClient,
    DriverProcess,
    allocated_claim,
    free_port,
    result,
    short_tmp_dir,
)

GiB = 1 << 30


@dataclass
class Node:
    root: Path
    api: SimApi

    def args(self, *extra: str, gpus: str = "rtx3090x2") -> list[str]:
        return [
            "--node-name",
            "node-1",
            "--kubeconfig",
            str(self.api.kubeconfig),
            "--gpus",
            gpus,
            "--plugin-dir",
            str(self.root / "plugins"),
            "--registry-dir",
            str(self.root / "registry"),
            "--cdi-dir",
            str(self.root / "cdi"),
            "--state-dir",
            str(self.root / "state"),
            *extra,
        ]

    def start(self, *extra: str, gpus: str = "rtx3090x2") -> DriverProcess:
        driver = DriverProcess(self.args(*extra, gpus=gpus))
        try:
            # Logged after both sockets serve (a killed predecessor's socket file may still be there).
            driver.wait_for_log(f"driver {DRIVER} ready on node node-1")
        except AssertionError:
            driver.stop(signal.SIGKILL)
            raise
        return driver


@pytest.fixture
def node() -> Iterator[Node]:
    with sim_api() as api, short_tmp_dir("node") as root:
        yield Node(root, api)


def test_dra_socket_serves_as_soon_as_registration_appears_and_get_info_names_it(node: Node) -> None:
    with DriverProcess(node.args()):
        wait_for_file(node.root / "registry", f"{DRIVER}-reg.sock", what="driver registration socket")
        with grpc.insecure_channel(f"unix://{node.root}/registry/{DRIVER}-reg.sock") as reg:
            info = pluginregistration_pb2_grpc.RegistrationStub(reg).GetInfo(
                pluginregistration_pb2.InfoRequest(), timeout=10, wait_for_ready=True
            )
        endpoint = str(node.root / "plugins" / "dra.sock")
        assert (info.type, info.name, info.endpoint) == ("DRAPlugin", DRIVER, endpoint)
        # No waiting for readiness: the DRA service must already be listening.
        with grpc.insecure_channel(f"unix://{info.endpoint}") as dra:
            answer = dra_v1_pb2_grpc.DRAPluginStub(dra).NodePrepareResources(
                dra_v1_pb2.NodePrepareResourcesRequest(), timeout=5, wait_for_ready=False
            )
        assert dict(answer.claims) == {}
        [published] = node.api.wait_for_slices(lambda s: len(s) == 1, what="the driver's slice")
        assert [d["name"] for d in published["spec"]["devices"]] == ["gpu-0", "gpu-1"]


def test_two_sharers_read_from_the_api_prepare_and_unprepare_after_deletion(node: Node) -> None:
    shares = [str(uuid.uuid4()), str(uuid.uuid4())]
    claims = [
        node.api.add_claim(
            allocated_claim(
                f"share-{i}", results=[result("gpu-0", share_id=shares[i], memory=f"{4 * (i + 1)}Gi")]
            )
        )
        for i in range(2)
    ]
    with node.start():
        client = DRAClient(node.root / "plugins" / "dra.sock")
        try:
            response = client.prepare(claims)
            for i, claim in enumerate(claims):
                uid = claim["metadata"]["uid"]
                entry = response.claims[uid]
                assert entry.error == ""
                [d] = entry.devices
                assert (d.device_name, d.share_id) == ("gpu-0", shares[i])
                spec = json.loads((node.root / "cdi" / f"k8s.{DRIVER}-gpu_{uid}.json").read_text())
                env = spec["devices"][0]["containerEdits"]["env"]
                assert f"GPU_DEVICE_0_MEMORY={4 * (i + 1) * GiB}" in env
                assert f"GPU_DEVICE_0_SHARE_ID={shares[i]}" in env
            for claim in claims:
                node.api.store.delete(CLAIMS, claim["metadata"]["name"], namespace="default")
            assert all(r.error == "" for r in client.unprepare(claims).claims.values())
            assert list((node.root / "cdi").iterdir()) == []
        finally:
            client.close()


def test_a_replaced_claim_is_refused_naming_it(node: Node) -> None:
    claim = node.api.add_claim(allocated_claim("old", results=[result("gpu-1")]))
    stale = json.loads(json.dumps(claim))
    stale["metadata"]["uid"] = str(uuid.uuid4())
    with node.start():
        client = DRAClient(node.root / "plugins" / "dra.sock")
        try:
            entry = client.prepare([stale]).claims[stale["metadata"]["uid"]]
        finally:
            client.close()
    assert "ResourceClaim default/old" in entry.error and "replaced" in entry.error


def test_after_kill_9_a_restarted_driver_unprepares_from_its_checkpoint(node: Node) -> None:
    claim = node.api.add_claim(allocated_claim("keep", results=[result("gpu-1")]))
    uid = claim["metadata"]["uid"]
    with node.start() as first:
        client = DRAClient(node.root / "plugins" / "dra.sock")
        try:
            assert client.prepare([claim]).claims[uid].error == ""
        finally:
            client.close()
        first.stop(signal.SIGKILL)
    node.api.store.delete(CLAIMS, "keep", namespace="default")
    with node.start() as second:
        second.wait_for_log("restored 1 prepared claim(s)")
        client = DRAClient(node.root / "plugins" / "dra.sock")
        try:
            assert client.unprepare([claim]).claims[uid].error == ""
        finally:
            client.close()
    assert not (node.root / "cdi" / f"k8s.{DRIVER}-gpu_{uid}.json").exists()


def test_sigterm_exits_0_removing_sockets_and_with_the_flag_its_slices(node: Node) -> None:
    port = free_port()
    with node.start(
        "--remove-slices-on-exit", "--metrics-port", str(port), "--metrics-address", "127.0.0.1"
    ) as driver:
        driver.wait_for_log(f"metrics on http://127.0.0.1:{port}/metrics")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            assert "dra_gpu_driver_prepared_claims 0.0" in r.read().decode()
        assert len(node.api.slices()) == 1
        assert driver.stop() == 0, driver.log
    assert "stopped cleanly" in driver.log
    assert not (node.root / "plugins" / "dra.sock").exists()
    assert not (node.root / "registry" / f"{DRIVER}-reg.sock").exists()
    assert node.api.slices() == []


def test_with_the_gate_off_the_driver_exits_1_naming_the_gate_and_never_registers() -> None:
    with sim_api("1.35") as api, short_tmp_dir("node") as root:
        with DriverProcess(Node(root, api).args()) as driver:
            driver.proc.wait(30)
        assert driver.proc.returncode == 1
        assert "DRAConsumableCapacity" in driver.log
        assert not (root / "registry" / f"{DRIVER}-reg.sock").exists()
        assert api.slices() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gpus", "nope"], "GPU profile 'nope'"),
        (["--memory-min", "20Gi", "--memory-step", "8Gi"], "--memory-min 20Gi plus --memory-step 8Gi"),
        (["--kubeconfig", "/nonexistent/kubeconfig"], "--kubeconfig /nonexistent/kubeconfig: cannot be used"),
    ],
)
def test_bad_input_exits_2_with_the_reason(node: Node, args: list[str], message: str) -> None:
    with DriverProcess([*node.args(), *args]) as driver:
        driver.proc.wait(30)
    assert driver.proc.returncode == 2
    assert message in driver.log


def test_a_corrupt_checkpoint_stops_start_up_with_exit_2_naming_the_file(node: Node) -> None:
    (node.root / "state").mkdir()
    (node.root / "state" / "checkpoint.json").write_text('{"version": 1, "claims": {}, "checksum": "x"}')
    with DriverProcess(node.args()) as driver:
        driver.proc.wait(30)
    assert driver.proc.returncode == 2
    assert f"checkpoint {node.root}/state/checkpoint.json is corrupt (checksum mismatch)" in driver.log
    assert not (node.root / "registry" / f"{DRIVER}-reg.sock").exists()
