"""A simulated container's CDI device nodes and mounts, applied in a private mount namespace: the
container sees only its own device nodes, keeps its env and args exactly, and leaves no mount behind.
Where the host refuses namespaces the kubelet says why (the decision is tested without faking root).
"""

from __future__ import annotations

import ast
import json
import os
import sys
from pathlib import Path

import pytest

from conformance.providers.base import ProviderConfig
from conformance.providers.sim import SimProvider
from sim.kubelet.cdi import CDIError, ContainerEdits, Resolution
from sim.kubelet.containers import StartError, start_process
from sim.kubelet.mountns import CAP_SYS_ADMIN, effective_caps, host_unavailable_reason, unavailable_reason

ALL_CAPS = 0x1FFFFFFFFFF
LIST_DEV = (
    "import os,sys; print(sorted(os.listdir('/dev'))); print(open('/dev/nvidia0').read().strip()); "
    "print(sys.argv[1:])"
)


def host_can_isolate() -> None:
    reason = host_unavailable_reason()
    if reason:
        pytest.skip(reason)


def mountinfo() -> list[str]:
    return sorted(Path("/proc/self/mountinfo").read_text().splitlines())


def fake_gpus(tmp_path: Path) -> Path:
    devdir = tmp_path / "fake-dev"
    devdir.mkdir()
    for i in range(2):
        (devdir / f"nvidia{i}").write_text(f"GPU-{i}\n")
    return devdir


def plan_for(devdir: Path, *indices: int, mounts: list[dict] | None = None) -> dict:
    edits = ContainerEdits(
        device_nodes=[{"path": f"/dev/nvidia{i}", "hostPath": str(devdir / f"nvidia{i}")} for i in indices],
        mounts=mounts or [],
    )
    plan, dropped = Resolution(["k8s.x/gpu=a"], edits).mount_plan()
    assert not dropped
    return plan


# ---- the decision ----------------------------------------------------------------------------------
def test_no_linux_means_no_namespace_with_the_reason():
    assert "need Linux (this is darwin)" in unavailable_reason("darwin", None, None)


def test_missing_cap_sys_admin_is_the_reason():
    reason = unavailable_reason("linux", ALL_CAPS & ~(1 << CAP_SYS_ADMIN), None)
    assert "without CAP_SYS_ADMIN" in reason and "run it as root" in reason


def test_a_refused_unshare_is_the_reason():
    reason = unavailable_reason("linux", ALL_CAPS, "unshare(CLONE_NEWNS): Operation not permitted")
    assert reason.endswith("unshare(CLONE_NEWNS): Operation not permitted")


def test_root_with_cap_sys_admin_and_a_working_probe_can_isolate():
    assert unavailable_reason("linux", ALL_CAPS, None) is None


def test_cap_eff_is_read_from_proc_status():
    assert effective_caps("Name:\tx\nCapEff:\t000001fffeffffff\n") == 0x1FFFEFFFFFF
    assert effective_caps("Name:\tx\n") is None


def test_sim_provider_reports_the_kubelets_reason(tmp_path):
    from conformance.profiles import load_profile

    provider = SimProvider(ProviderConfig(profile=load_profile("reference"), work_dir=tmp_path))
    node = provider.state_dir / "node-1"
    node.mkdir(parents=True)
    assert "did not say" in provider.container_edits_unapplied("node-1")
    (node / "container-isolation.json").write_text(json.dumps({"applied": False, "reason": "no caps here"}))
    assert provider.container_edits_unapplied("node-1") == "no caps here"
    (node / "container-isolation.json").write_text(json.dumps({"applied": True, "reason": ""}))
    assert provider.container_edits_unapplied("node-1") == ""


def test_device_nodes_outside_dev_are_refused():
    edits = ContainerEdits(device_nodes=[{"path": "/opt/gpu0"}])
    with pytest.raises(CDIError, match="private /dev only"):
        Resolution(["k8s.x/gpu=a"], edits).mount_plan()


def test_a_mount_onto_a_missing_host_path_is_dropped_with_why(tmp_path):
    edits = ContainerEdits(mounts=[{"hostPath": str(tmp_path), "containerPath": "/no/such/dir/here"}])
    plan, dropped = Resolution(["k8s.x/gpu=a"], edits).mount_plan()
    assert plan["mounts"] == [] and "target does not exist" in dropped[0]


# ---- the real namespace ----------------------------------------------------------------------------
def test_container_sees_only_its_device_node_with_env_and_args_unchanged(tmp_path):
    host_can_isolate()
    devdir = fake_gpus(tmp_path)
    log = tmp_path / "c.log"
    env = {"ONLY": "this", "PATH": "/usr/bin:/bin"}
    before = mountinfo()
    proc = start_process(
        [sys.executable, "-I", "-c", LIST_DEV, "a b", "$(X)"], env, tmp_path, log, plan_for(devdir, 0)
    )
    assert proc.popen.wait(timeout=30) == 0, log.read_text()
    listing, content, args = log.read_text().splitlines()[-3:]
    seen = ast.literal_eval(listing)
    assert "nvidia0" in seen and "nvidia1" not in seen
    assert set(seen) <= {
        "nvidia0",
        "null",
        "zero",
        "full",
        "random",
        "urandom",
        "tty",
        "fd",
        "stdin",
        "stdout",
        "stderr",
        "ptmx",
        "pts",
        "shm",
    }, seen
    assert content == "GPU-0" and args == "['a b', '$(X)']"
    assert mountinfo() == before, "a container mount leaked into the host's namespace"

    env_log = tmp_path / "env.log"
    proc = start_process(["/usr/bin/env"], env, tmp_path, env_log, plan_for(devdir, 1))
    assert proc.popen.wait(timeout=30) == 0
    assert env_log.read_text().splitlines() == ["ONLY=this", "PATH=/usr/bin:/bin"]


def test_the_namespace_and_its_mounts_go_with_the_container(tmp_path):
    host_can_isolate()
    devdir = fake_gpus(tmp_path)
    before = mountinfo()
    proc = start_process(["/bin/sleep", "30"], {}, tmp_path, tmp_path / "s.log", plan_for(devdir, 0))
    try:
        assert os.readlink(f"/proc/{proc.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
        inside = Path(f"/proc/{proc.pid}/mountinfo").read_text()
        assert " /dev " in inside and "nvidia0" in inside
        assert mountinfo() == before
    finally:
        proc.terminate(0)
    assert mountinfo() == before
    # Its only process is gone, so nothing holds the namespace or its tmpfs mounts.
    assert not Path(f"/proc/{proc.pid}").exists()


def test_a_failed_setup_is_a_start_error(tmp_path):
    host_can_isolate()
    plan = {"deviceNodes": [{"path": "/dev/nvidia0", "hostPath": str(tmp_path / "gone")}], "mounts": []}
    with pytest.raises(StartError, match=r"private mount namespace failed: .*No such file"):
        start_process(["/bin/true"], {}, tmp_path, tmp_path / "f.log", plan)
