"""Prepare and unprepare on real files: which results count, CDI naming per (GPU, shareID), per-claim
errors, idempotency, concurrency, the checkpoint and start-up reconciliation."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from driver import cdi
from driver.checkpoint import Checkpoint, CheckpointError
from driver.claims import ClaimRef
from driver.inventory import load_inventory
from driver.state import DeviceState
from tests.support.driver_harness import DRIVER, allocated_claim, result

GiB = 1 << 30
S1, S2 = str(uuid.uuid4()), str(uuid.uuid4())


class Claims:
    """The claims 'in the API' for these tests; DeviceState reads them by (namespace, name)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.reads = 0

    def add(self, claim: dict[str, Any]) -> ClaimRef:
        meta = claim["metadata"]
        self.objects[(meta["namespace"], meta["name"])] = claim
        return ClaimRef(meta["namespace"], meta["uid"], meta["name"])

    def __call__(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads += 1
        return self.objects.get((namespace, name))

    def list(self) -> list[dict[str, Any]]:
        return list(self.objects.values())


def make_state(root: Path, claims: Claims, profile: str = "rtx3090x2") -> DeviceState:
    state = DeviceState(
        driver_name=DRIVER,
        node_name="node-1",
        inventory=load_inventory(profile, "node-1"),
        cdi_dir=root / "cdi",
        state_dir=root / "state",
        read_claim=claims,
        list_claims=claims.list,
    )
    state.restore()
    return state


def spec_of(root: Path, uid: str) -> dict[str, Any]:
    return json.loads(cdi.spec_path(root / "cdi", DRIVER, uid).read_text())


def test_two_shares_of_one_gpu_both_prepare_with_distinct_cdi_devices(tmp_path: Path) -> None:
    # anchors.md 0.2: the overlap check in NVIDIA's driver refuses the second sharer; we must not.
    claims = Claims()
    state = make_state(tmp_path, claims)
    a = claims.add(allocated_claim("a", results=[result("gpu-0", share_id=S1, memory="6Gi")]))
    b = claims.add(allocated_claim("b", results=[result("gpu-0", share_id=S2, memory="18Gi")]))
    res = state.prepare([a]) | state.prepare([b])
    assert not res[a.uid].error and not res[b.uid].error
    [da], [db] = res[a.uid].devices, res[b.uid].devices
    assert da["cdi_device_ids"] == [f"k8s.{DRIVER}/gpu={a.uid}-gpu-0-{S1}"]
    assert db["cdi_device_ids"] == [f"k8s.{DRIVER}/gpu={b.uid}-gpu-0-{S2}"]
    assert (da["share_id"], db["share_id"]) == (S1, S2)
    uuid0 = state.inventory.gpus[0].uuid
    assert spec_of(tmp_path, a.uid) == {
        "cdiVersion": "1.0.0",
        "kind": f"k8s.{DRIVER}/gpu",
        "devices": [
            {
                "name": f"{a.uid}-gpu-0-{S1}",
                "containerEdits": {
                    "env": [
                        f"GPU_DEVICE_0={uuid0}",
                        f"GPU_DEVICE_0_MEMORY={6 * GiB}",
                        f"GPU_DEVICE_0_SHARE_ID={S1}",
                    ]
                },
            }
        ],
    }
    env_b = spec_of(tmp_path, b.uid)["devices"][0]["containerEdits"]["env"]
    assert f"GPU_DEVICE_0_MEMORY={18 * GiB}" in env_b


def test_only_our_drivers_results_count_and_subrequest_names_are_stripped(tmp_path: Path) -> None:
    claims = Claims()
    state = make_state(tmp_path, claims)
    ref = claims.add(
        allocated_claim(
            "c",
            results=[
                result("gpu-1", request="gpu/small"),  # exclusive: no shareID, no consumedCapacity
                result("nic-0", driver="net.example.com", pool="node-1"),
                result("gpu-0", request="extra", share_id=S1, memory="1Gi"),
            ],
        )
    )
    [r] = state.prepare([ref]).values()
    assert not r.error
    assert [(d["device_name"], d["request_names"], d["share_id"]) for d in r.devices] == [
        ("gpu-1", ["gpu"], None),
        ("gpu-0", ["extra"], S1),
    ]
    assert r.devices[0]["cdi_device_ids"] == [f"k8s.{DRIVER}/gpu={ref.uid}-gpu-1"]
    env = spec_of(tmp_path, ref.uid)["devices"][0]["containerEdits"]["env"]
    assert f"GPU_DEVICE_1_MEMORY={24 * GiB}" in env and "GPU_DEVICE_1_SHARE_ID=" in env


def test_two_requests_on_the_same_share_become_one_cdi_device_with_both_names(tmp_path: Path) -> None:
    claims = Claims()
    state = make_state(tmp_path, claims)
    ref = claims.add(
        allocated_claim(
            "d",
            results=[
                result("gpu-0", request="a", share_id=S1, memory="1Gi"),
                result("gpu-0", request="b", share_id=S1, memory="1Gi"),
            ],
        )
    )
    [r] = state.prepare([ref]).values()
    assert [d["request_names"] for d in r.devices] == [["a", "b"]]


BAD = "bad-uid"


@pytest.mark.parametrize(
    ("claim", "message"),
    [
        (None, "not found in the API"),
        (allocated_claim("x", uid="other-uid", results=[result()]), "the claim was replaced"),
        (allocated_claim("x", uid=BAD), "not allocated"),
        (
            allocated_claim("x", uid=BAD, results=[result(pool="node-9")]),
            "pool 'node-9' is not this node's pool",
        ),
        (
            allocated_claim("x", uid=BAD, results=[result("gpu-7")]),
            "device 'gpu-7' is not a GPU on node node-1",
        ),
        (allocated_claim("x", uid=BAD, results=[result(memory="99Gi", share_id=S1)]), "exceeds gpu-0"),
        (
            allocated_claim(
                "x",
                uid=BAD,
                results=[result()],
                config=[
                    {
                        "source": "FromClaim",
                        "opaque": {
                            "driver": DRIVER,
                            "parameters": {
                                "apiVersion": f"{DRIVER}/v1alpha1",
                                "kind": "GpuConfig",
                                "sharing": "mps",
                            },
                        },
                    }
                ],
            ),
            "config[0].opaque.parameters: unknown key 'sharing'",
        ),
        (
            allocated_claim(
                "x",
                uid=BAD,
                results=[result()],
                config=[{"source": "FromClass", "opaque": {"driver": DRIVER, "parameters": "not-an-object"}}],
            ),
            "config[0].opaque.parameters: expected an object",
        ),
    ],
)
def test_a_bad_claim_fails_alone_with_an_error_naming_it_and_leaves_nothing_on_disk(
    tmp_path: Path, claim: dict[str, Any] | None, message: str
) -> None:
    claims = Claims()
    state = make_state(tmp_path, claims)
    good = claims.add(allocated_claim("good", results=[result("gpu-1")]))
    if claim is not None:
        claims.add(claim)
    res = state.prepare([good, ClaimRef("default", BAD, "x")])
    assert not res[good.uid].error
    assert message in res[BAD].error
    assert "ResourceClaim default/x (uid bad-uid)" in res[BAD].error
    assert cdi.list_spec_claims(tmp_path / "cdi", DRIVER) == {good.uid}
    assert set(Checkpoint(tmp_path / "state").load()) == {good.uid}


def test_a_claim_with_no_device_of_ours_is_an_error_naming_the_other_driver(tmp_path: Path) -> None:
    claims = Claims()
    state = make_state(tmp_path, claims)
    ref = claims.add(allocated_claim("n", results=[result("nic-0", driver="net.example.com")]))
    [r] = state.prepare([ref]).values()
    assert r.devices == []
    assert f"no device in status.allocation is from driver {DRIVER}" in r.error
    assert "(allocated by: net.example.com)" in r.error
    assert cdi.list_spec_claims(tmp_path / "cdi", DRIVER) == set()


def test_written_specs_load_in_the_sim_kubelets_strict_cdi_parser(tmp_path: Path) -> None:
    from sim.kubelet.cdi import load_spec_file

    claims = Claims()
    state = make_state(tmp_path, claims)
    ref = claims.add(
        allocated_claim(
            "k", results=[result("gpu-0", share_id=S1, memory="1Gi"), result("gpu-1", request="other")]
        )
    )
    [r] = state.prepare([ref]).values()
    spec = load_spec_file(cdi.spec_path(tmp_path / "cdi", DRIVER, ref.uid), 0)
    assert spec.kind == f"k8s.{DRIVER}/gpu"
    assert sorted(f"{spec.kind}={name}" for name in spec.devices) == sorted(
        i for d in r.devices for i in d["cdi_device_ids"]
    )


def test_prepare_is_idempotent_and_unprepare_works_after_the_claim_is_gone(tmp_path: Path) -> None:
    claims = Claims()
    state = make_state(tmp_path, claims)
    ref = claims.add(allocated_claim("e", results=[result("gpu-0", share_id=S1, memory="2Gi")]))
    first = state.prepare([ref])[ref.uid]
    again = state.prepare([ref])[ref.uid]
    assert first == again and claims.reads == 1  # the second answer comes from the checkpoint
    claims.objects.clear()  # the claim is deleted from the API before unprepare
    assert state.unprepare([ref]) == {ref.uid: ""}
    assert state.unprepare([ref]) == {ref.uid: ""}  # idempotent
    assert cdi.list_spec_claims(tmp_path / "cdi", DRIVER) == set()
    assert Checkpoint(tmp_path / "state").load() == {}


def test_prepared_claims_survive_a_restart_and_unprepare_from_the_checkpoint(tmp_path: Path) -> None:
    claims = Claims()
    ref = claims.add(allocated_claim("f", results=[result("gpu-1", share_id=S2, memory="3Gi")]))
    before = make_state(tmp_path, claims).prepare([ref])[ref.uid]
    claims.objects.clear()
    restarted = make_state(tmp_path, claims)
    assert restarted.prepare([ref])[ref.uid] == before
    assert restarted.unprepare([ref]) == {ref.uid: ""}
    assert not cdi.spec_path(tmp_path / "cdi", DRIVER, ref.uid).exists()


def test_restart_removes_leftover_specs_and_rewrites_missing_ones(tmp_path: Path) -> None:
    claims = Claims()
    ref = claims.add(allocated_claim("g", results=[result("gpu-0")]))
    make_state(tmp_path, claims).prepare([ref])
    good_spec = spec_of(tmp_path, ref.uid)
    cdi.spec_path(tmp_path / "cdi", DRIVER, ref.uid).unlink()
    leftover = cdi.spec_path(tmp_path / "cdi", DRIVER, "crashed-mid-prepare")
    leftover.write_text("{}")
    foreign = tmp_path / "cdi" / "k8s.other.vendor-gpu_x.json"
    foreign.write_text("{}")
    make_state(tmp_path, claims)
    assert not leftover.exists() and foreign.exists()
    assert spec_of(tmp_path, ref.uid) == good_spec


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[: len(raw) // 2],  # torn write
        lambda raw: raw.replace(b"gpu-0", b"gpu-1"),  # bit rot: still JSON, checksum no longer matches
        lambda raw: b"\x00\xff" + raw,
    ],
)
def test_a_corrupt_checkpoint_is_detected_and_names_the_file_and_the_fix(tmp_path: Path, damage: Any) -> None:
    claims = Claims()
    ref = claims.add(allocated_claim("h", results=[result("gpu-0")]))
    make_state(tmp_path, claims).prepare([ref])
    path = tmp_path / "state" / "checkpoint.json"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match=r"checkpoint .*checkpoint.json is corrupt.*move it aside"):
        make_state(tmp_path, claims)


def test_concurrent_prepares_and_unprepares_of_many_claims_stay_consistent(tmp_path: Path) -> None:
    claims = Claims()
    state = make_state(tmp_path, claims, "h100x8")
    refs = [
        claims.add(
            allocated_claim(
                f"c{i}", results=[result(f"gpu-{i % 8}", share_id=str(uuid.uuid4()), memory="1Gi")]
            )
        )
        for i in range(24)
    ]
    errors: list[str] = []
    barrier = threading.Barrier(6)

    def worker(k: int) -> None:
        barrier.wait()
        for _ in range(5):
            # Every worker prepares the same overlapping batches, so calls race on the same claims.
            batch = refs[(k * 4) % 24 : (k * 4) % 24 + 8]
            errors.extend(r.error for r in state.prepare(batch).values() if r.error)
            if k % 2:
                errors.extend(e for e in state.unprepare(batch[:2]).values() if e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    on_disk = Checkpoint(tmp_path / "state").load()
    assert set(on_disk) == set(state.prepared_claims())
    assert cdi.list_spec_claims(tmp_path / "cdi", DRIVER) == set(on_disk)
    state.prepare(refs)
    assert len(cdi.list_spec_claims(tmp_path / "cdi", DRIVER)) == 24
    assert state._claim_locks == {}  # per-claim locks do not pile up


def test_a_failed_checkpoint_write_fails_the_batch_and_leaves_no_spec(tmp_path: Path) -> None:
    claims = Claims()
    state = make_state(tmp_path, claims)
    refs = [claims.add(allocated_claim(f"w{i}", results=[result(f"gpu-{i}")])) for i in range(2)]
    # A directory where the checkpoint's temporary file must go: the write fails like a full disk would.
    blocker = tmp_path / "state" / ".checkpoint.json.tmp"
    blocker.mkdir()
    res = state.prepare(refs)
    assert all("writing the checkpoint failed" in res[r.uid].error for r in refs)
    assert cdi.list_spec_claims(tmp_path / "cdi", DRIVER) == set()
    assert state.prepared_claims() == {}
    blocker.rmdir()
    assert all(not r.error for r in state.prepare(refs).values())  # the kubelet's retry then succeeds


def test_on_real_gpus_every_device_of_a_request_names_all_its_gpus_for_the_nvidia_runtime() -> None:
    from driver.claims import plan_claim

    gpus = {g.device_name: g for g in load_inventory("h100x8", "node-1").gpus}
    claim = allocated_claim("r", results=[result("gpu-0"), result("gpu-1"), result("gpu-5", request="other")])
    ref = ClaimRef("default", claim["metadata"]["uid"], "r")
    real = plan_claim(ref, claim, DRIVER, "node-1", gpus, real_gpu=True)
    visible = [[e for e in d["env"] if e.startswith("NVIDIA_VISIBLE_DEVICES=")] for d in real]
    both = f"NVIDIA_VISIBLE_DEVICES={gpus['gpu-0'].uuid},{gpus['gpu-1'].uuid}"
    assert visible == [[both], [both], [f"NVIDIA_VISIBLE_DEVICES={gpus['gpu-5'].uuid}"]]
    mock = plan_claim(ref, claim, DRIVER, "node-1", gpus, real_gpu=False)
    assert not any(e.startswith("NVIDIA_VISIBLE_DEVICES") for d in mock for e in d["env"])


def reserved(claim: dict[str, Any], pod: str = "p") -> dict[str, Any]:
    claim["status"]["reservedFor"] = [{"resource": "pods", "name": pod, "uid": str(uuid.uuid4())}]
    return claim


def test_without_a_checkpoint_reserved_claims_are_rebuilt_from_the_api_before_anything_is_removed(
    tmp_path: Path,
) -> None:
    claims = Claims()
    state = make_state(tmp_path, claims)
    running = [
        claims.add(
            reserved(
                allocated_claim(
                    f"r{i}", results=[result(f"gpu-{i % 2}", share_id=str(uuid.uuid4()), memory="2Gi")]
                )
            )
        )
        for i in range(3)
    ]
    released = claims.add(allocated_claim("released", results=[result("gpu-1", share_id=S1, memory="1Gi")]))
    assert all(not r.error for r in state.prepare([*running, released]).values())
    specs = {r.uid: spec_of(tmp_path, r.uid) for r in running}
    (tmp_path / "state" / "checkpoint.json").rename(tmp_path / "state" / "checkpoint.json.aside")

    restarted = make_state(tmp_path, claims)
    assert set(restarted.prepared_claims()) == {r.uid for r in running}
    assert {r.uid: spec_of(tmp_path, r.uid) for r in running} == specs
    assert not cdi.spec_path(tmp_path / "cdi", DRIVER, released.uid).exists()  # no pod reserves it
    assert set(Checkpoint(tmp_path / "state").load()) == {r.uid for r in running}  # saved at once
    # Prepare answers from the rebuilt entries without reading the API, and unprepare removes the specs.
    reads = claims.reads
    assert [restarted.prepare([r])[r.uid].devices for r in running] == [
        state.prepare([r])[r.uid].devices for r in running
    ]
    assert claims.reads == reads
    assert restarted.unprepare(running) == {r.uid: "" for r in running}
    assert cdi.list_spec_claims(tmp_path / "cdi", DRIVER) == set()


def test_a_rebuild_keeps_only_this_nodes_and_this_drivers_claims(tmp_path: Path) -> None:
    claims = Claims()
    other_node = claims.add(
        reserved(allocated_claim("n2", node="node-2", results=[result("gpu-0", pool="node-2")]))
    )
    other_driver = claims.add(
        reserved(allocated_claim("d2", results=[result("gpu-0", driver="other.example.com")]))
    )
    ours = claims.add(reserved(allocated_claim("mine", results=[result("gpu-0", share_id=S2, memory="1Gi")])))
    state = make_state(tmp_path, claims)
    assert set(state.prepared_claims()) == {ours.uid}
    assert other_node.uid not in state.prepared_claims() and other_driver.uid not in state.prepared_claims()
    assert cdi.spec_path(tmp_path / "cdi", DRIVER, ours.uid).exists()


def test_following_the_corrupt_checkpoint_advice_keeps_every_prepared_claim(tmp_path: Path) -> None:
    claims = Claims()
    refs = [
        claims.add(
            reserved(
                allocated_claim(f"c{i}", results=[result("gpu-0", share_id=str(uuid.uuid4()), memory="1Gi")])
            )
        )
        for i in range(4)
    ]
    make_state(tmp_path, claims).prepare(refs)
    path = tmp_path / "state" / "checkpoint.json"
    path.write_bytes(path.read_bytes()[:10])
    with pytest.raises(CheckpointError) as err:
        make_state(tmp_path, claims)
    assert {r.uid for r in refs} <= cdi.list_spec_claims(tmp_path / "cdi", DRIVER)  # nothing removed
    # The advice names the command; run exactly it.
    command = str(err.value).split("(e.g. ", 1)[1].split(")", 1)[0].split()
    assert command[0] == "mv"
    Path(command[1]).rename(command[2])
    restarted = make_state(tmp_path, claims)
    assert set(restarted.prepared_claims()) == {r.uid for r in refs}
    assert cdi.list_spec_claims(tmp_path / "cdi", DRIVER) == {r.uid for r in refs}


def test_when_the_api_cannot_be_read_a_rebuild_removes_nothing(tmp_path: Path) -> None:
    claims = Claims()
    ref = claims.add(reserved(allocated_claim("k", results=[result("gpu-0")])))
    make_state(tmp_path, claims).prepare([ref])
    (tmp_path / "state" / "checkpoint.json").unlink()

    def unreachable() -> list[dict[str, Any]]:
        raise ConnectionError("the API server is unreachable")

    state = DeviceState(
        driver_name=DRIVER,
        node_name="node-1",
        inventory=load_inventory("rtx3090x2", "node-1"),
        cdi_dir=tmp_path / "cdi",
        state_dir=tmp_path / "state",
        read_claim=claims,
        list_claims=unreachable,
    )
    with pytest.raises(ConnectionError):
        state.restore()
    assert cdi.spec_path(tmp_path / "cdi", DRIVER, ref.uid).exists()
    assert not (tmp_path / "state" / "checkpoint.json").exists()
