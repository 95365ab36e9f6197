"""The suite against a cluster it did not make (--cluster existing; here a `python -m sim` started by
the test): Ctrl-C still removes what the suite created, GPUs that hold someone else's allocations stop
the run unless --allow-busy-gpus, and then they are left alone."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config, watch

from conformance.providers.sim import processes_using

REPO = Path(__file__).resolve().parents[2]
DRIVER = "gpu.sharing.example.dev"


@dataclass
class Cluster:
    kubeconfig: Path
    profile: Path
    core: client.CoreV1Api
    resource: client.ResourceV1Api


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("existing")
    kubeconfig = tmp / "kubeconfig"
    # Unix socket paths are short (108 bytes): the node state lives under a short temporary dir.
    state = Path(tempfile.mkdtemp(prefix="gsc-ex-"))
    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sim",
            "--kubeconfig",
            str(kubeconfig),
            "--nodes",
            "node-1",
            "--gpus",
            "rtx3090x2",
            "--state-dir",
            str(state),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    api = None
    try:
        assert sim.stdout is not None
        seen = []
        for line in iter(sim.stdout.readline, b""):  # the sim prints this once it serves
            seen.append(line.decode(errors="replace"))
            if "sim: serving" in seen[-1]:
                break
        assert seen and "sim: serving" in seen[-1], "".join(seen)
        api = config.new_client_from_config(config_file=str(kubeconfig))
        resource = client.ResourceV1Api(api)
        # What the driver's chart installs next to the driver on a real cluster.
        selector = {"cel": {"expression": f'device.driver == "{DRIVER}"'}}
        resource.create_device_class(
            {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "DeviceClass",
                "metadata": {"name": DRIVER},
                "spec": {"selectors": [selector]},
            }
        )
        profile = yaml.safe_load((REPO / "conformance/data/drivers/reference.yaml").read_text())
        profile["install"] = {"method": "preinstalled"}
        (tmp / "preinstalled.yaml").write_text(yaml.safe_dump(profile))
        yield Cluster(kubeconfig, tmp / "preinstalled.yaml", client.CoreV1Api(api), resource)
    finally:
        if api is not None:
            api.close()
        sim.send_signal(signal.SIGTERM)
        try:
            sim.wait(30)
        except subprocess.TimeoutExpired:
            sim.kill()
            sim.wait()
        # A sim that had to be killed left its drivers (own sessions): they point at the state dir.
        for pid in processes_using(state):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(state, ignore_errors=True)


def suite_args(c: Cluster, report: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        "conformance/scenarios",
        "-q",
        "-p",
        "no:cacheprovider",
        "--cluster=existing",
        f"--kubeconfig={c.kubeconfig}",
        f"--driver-profile={c.profile}",
        f"--report-dir={report}",
        "--wait-timeout=20",
        "--settle-seconds=0.5",
        *extra,
    ]


def suite_namespaces(c: Cluster) -> list[str]:
    return [n.metadata.name for n in c.core.list_namespace().items if n.metadata.name.startswith("gsc-")]


def test_interrupted_run_leaves_no_namespace_behind(cluster: Cluster, tmp_path: Path) -> None:
    suite = subprocess.Popen(
        suite_args(cluster, tmp_path, "-m", "sharing"),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # Interrupt as soon as the scenario has created its first pod.
        w = watch.Watch()
        for event in w.stream(cluster.core.list_pod_for_all_namespaces, timeout_seconds=60):
            if event["object"].metadata.namespace.startswith("gsc-"):
                w.stop()
                break
        else:
            raise AssertionError("the suite created no pod within 60 s")
        suite.send_signal(signal.SIGINT)
        out, _ = suite.communicate(timeout=90)
    finally:
        if suite.poll() is None:
            suite.kill()
            suite.wait()
    assert not suite_namespaces(cluster), f"namespaces left after Ctrl-C:\n{out[-2000:]}"
    pods = [p.metadata.name for p in cluster.core.list_pod_for_all_namespaces().items]
    assert not pods, f"pods left after Ctrl-C: {pods}"


def test_busy_gpus_stop_the_run_unless_allowed_and_are_left_alone(cluster: Cluster, tmp_path: Path) -> None:
    core, resource = cluster.core, cluster.resource
    core.create_namespace({"metadata": {"name": "team-a"}})
    try:
        resource.create_namespaced_resource_claim(
            "team-a",
            {
                "metadata": {"name": "training"},
                "spec": {
                    "devices": {
                        "requests": [
                            {
                                "name": "gpu",
                                "exactly": {
                                    "deviceClassName": DRIVER,
                                    "capacity": {"requests": {"memory": "4Gi"}},
                                },
                            }
                        ]
                    }
                },
            },
        )
        core.create_namespaced_pod(
            "team-a",
            {
                "metadata": {"name": "trainer"},
                "spec": {
                    "resourceClaims": [{"name": "gpu", "resourceClaimName": "training"}],
                    "containers": [
                        {
                            "name": "c",
                            "image": "busybox",
                            "command": ["sleep", "3600"],
                            "resources": {"claims": [{"name": "gpu"}]},
                        }
                    ],
                },
            },
        )
        w = watch.Watch()
        for event in w.stream(core.list_namespaced_pod, "team-a", timeout_seconds=60):
            if event["object"].status.phase == "Running":
                w.stop()
                break
        else:
            raise AssertionError("the other team's pod did not start")
        claim = resource.read_namespaced_resource_claim("training", "team-a")
        busy = claim.status.allocation.devices.results[0]

        refused = subprocess.run(
            suite_args(cluster, tmp_path / "refused", "-m", "publish"),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        report = json.loads((tmp_path / "refused" / "report.json").read_text())
        assert refused.returncode == 4, refused.stdout[-2000:]
        assert (
            report["error"].startswith("GPUs under test already hold allocations (")
            and "team-a/training" in report["error"]
            and "--allow-busy-gpus" in report["error"]
        )

        args = suite_args(cluster, tmp_path / "allowed", "--allow-busy-gpus", "-m", "sharing")
        allowed = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120)
        report = json.loads((tmp_path / "allowed" / "report.json").read_text())
        assert report["capabilities"]["sharing"]["verdict"] == "pass", allowed.stdout[-3000:]
        used = {g for c in report["capabilities"]["sharing"]["checks"] for g in c["gpus"]}
        assert used and not any(g.startswith(f"{busy.pool}/{busy.device} ") for g in used), used
        assert core.read_namespaced_pod("trainer", "team-a").status.phase == "Running"
        assert not suite_namespaces(cluster)
    finally:
        core.delete_namespace("team-a")
