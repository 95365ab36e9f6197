"""End to end with the real reference driver (`python -m driver`, mock GPU profile) through the HTTP API:
template -> claim -> scheduled -> prepared by the driver -> a running process with the driver's CDI env.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest
from kubernetes import client, watch

from sim.kubelet.fleet import add_kubelets
from sim.scheduler import add_control_plane
from sim.testing import running_sim
from tests.support.pod_watch import PodWatch

NS = "default"
DRIVER = "gpu.sharing.example.dev"
PY = sys.executable
REPO = Path(__file__).resolve().parents[2]
SHOW = (
    "import os,time; [print(k+'='+v, flush=True) for k,v in sorted(os.environ.items()) "
    "if k.startswith('GPU_')]"
)
HOLD = SHOW + "; time.sleep(600)"


class Sim(PodWatch):
    default_timeout = 30

    def __init__(self, handle):
        self.handle = handle
        self.kubelet = handle.cluster.kubelets["node-1"]
        self.api = handle.client()
        self.core = client.CoreV1Api(self.api)
        self.res = client.ResourceV1Api(self.api)
        self.kubelet.wait_driver_registered(60)

    def setup_class_and_template(self, name: str, memory: str, gpu_index: int | None = None) -> None:
        if not self.res.list_device_class(field_selector="metadata.name=gpu").items:
            self.res.create_device_class(
                {
                    "apiVersion": "resource.k8s.io/v1",
                    "kind": "DeviceClass",
                    "metadata": {"name": "gpu"},
                    "spec": {"selectors": [{"cel": {"expression": f"device.driver == '{DRIVER}'"}}]},
                }
            )
        request: dict = {"deviceClassName": "gpu", "capacity": {"requests": {"memory": memory}}}
        if gpu_index is not None:
            expression = f"device.attributes['{DRIVER}'].index == {gpu_index}"
            request["selectors"] = [{"cel": {"expression": expression}}]
        self.res.create_namespaced_resource_claim_template(
            NS,
            {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "ResourceClaimTemplate",
                "metadata": {"name": name},
                "spec": {"spec": {"devices": {"requests": [{"name": "gpu", "exactly": request}]}}},
            },
        )

    def pod(self, name: str, template: str, script: str = HOLD) -> None:
        self.core.create_namespaced_pod(
            NS,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": template}],
                    "containers": [
                        {
                            "name": "c",
                            "image": "cuda",
                            "command": [PY, "-u", "-c", script],
                            "resources": {"claims": [{"name": "gpu"}]},
                        }
                    ],
                },
            },
        )

    def diagnostics(self, name: str) -> str:
        return (
            f"\nevents: {[e['message'] for e in self.events(name)]}\ndriver log: {self.driver_log()[-3000:]}"
        )

    def wait_running(self, name: str, timeout: float = 30) -> dict:
        return self.wait_pod(
            name, lambda p: p.get("status", {}).get("phase") == "Running", timeout, "Running"
        )

    def claim_of(self, pod: dict) -> dict:
        claim_name = pod["status"]["resourceClaimStatuses"][0]["resourceClaimName"]
        return self.plain(self.res.read_namespaced_resource_claim(claim_name, NS))

    def log_lines(self, name: str, count: int, timeout: float = 10) -> list[str]:
        """The first ``count`` lines the process printed (it prints them at start, flushed)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.core.read_namespaced_pod_log(name, NS).splitlines()
            if len(lines) >= count:
                return lines
            assert time.monotonic() < deadline, f"pod {name} printed {lines} only"
            threading.Event().wait(0.05)  # bounded wait for the process to write its output

    def driver_log(self) -> str:
        p = self.kubelet.dirs.root / "driver.log"
        return p.read_text() if p.exists() else ""

    def slices(self) -> list[dict]:
        return [self.plain(s) for s in self.res.list_resource_slice().items]


def sim_with(gpus: str = "rtx3090x2", **kw):
    def configure(cluster) -> None:
        add_control_plane(cluster, initial_backoff=0.2, max_backoff=1.0)
        add_kubelets(cluster, gpus, **kw)

    return running_sim(nodes=["node-1"], configure=configure)


@pytest.fixture
def sim():
    with sim_with(slice_wipe_delay=30) as handle:
        s = Sim(handle)
        try:
            yield s
        finally:
            s.api.close()


def test_template_to_running_process_whose_env_names_the_allocated_gpu_and_memory(sim):
    sim.setup_class_and_template("six", "6Gi")
    sim.pod("p", "six")
    pod = sim.wait_running("p")
    claim = sim.claim_of(pod)
    (result,) = claim["status"]["allocation"]["devices"]["results"]
    assert result["driver"] == DRIVER and result["pool"] == "node-1"
    device = next(d for s in sim.slices() for d in s["spec"]["devices"] if d["name"] == result["device"])
    uuid = device["attributes"]["uuid"]["string"]
    index = device["attributes"]["index"]["int"]
    env = dict(line.split("=", 1) for line in sim.log_lines("p", 3))
    assert env[f"GPU_DEVICE_{index}"] == uuid
    assert env[f"GPU_DEVICE_{index}_MEMORY"] == str(6 * 1024**3)
    assert result["consumedCapacity"]["memory"] == "6Gi"
    assert env[f"GPU_DEVICE_{index}_SHARE_ID"] == result["shareID"]
    cdi = sim.kubelet.cdi_devices(NS, "p", "c")
    assert cdi == [f"k8s.{DRIVER}/gpu={claim['metadata']['uid']}-gpu-{index}-{result['shareID']}"]


def test_two_sharers_of_one_gpu_both_run_with_distinct_cdi_devices(sim):
    sim.setup_class_and_template("half", "12Gi", gpu_index=0)
    sim.pod("a", "half")
    sim.pod("b", "half")
    pods = [sim.wait_running("a"), sim.wait_running("b")]
    results = [sim.claim_of(p)["status"]["allocation"]["devices"]["results"][0] for p in pods]
    assert results[0]["device"] == results[1]["device"] == "gpu-0"
    assert results[0]["shareID"] != results[1]["shareID"]
    cdi_a, cdi_b = sim.kubelet.cdi_devices(NS, "a", "c"), sim.kubelet.cdi_devices(NS, "b", "c")
    assert len(cdi_a) == len(cdi_b) == 1 and cdi_a != cdi_b
    env_a = dict(line.split("=", 1) for line in sim.log_lines("a", 3))
    env_b = dict(line.split("=", 1) for line in sim.log_lines("b", 3))
    assert env_a["GPU_DEVICE_0"] == env_b["GPU_DEVICE_0"]
    assert env_a["GPU_DEVICE_0_SHARE_ID"] != env_b["GPU_DEVICE_0_SHARE_ID"]


def test_delete_unprepares_and_frees_the_capacity_for_a_waiting_pod(sim):
    sim.setup_class_and_template("half", "12Gi", gpu_index=0)
    sim.pod("a", "half")
    sim.pod("b", "half")
    a = sim.wait_running("a")
    sim.wait_running("b")
    sim.pod("c", "half")
    sim.wait_pod(
        "c",
        lambda p: any(
            c.get("reason") == "Unschedulable" for c in p.get("status", {}).get("conditions") or []
        ),
        what="Unschedulable",
    )
    claim_uid = sim.claim_of(a)["metadata"]["uid"]
    spec_file = sim.kubelet.dirs.cdi / f"k8s.{DRIVER}-gpu_{claim_uid}.json"
    assert spec_file.exists()
    sim.core.delete_namespaced_pod("a", NS)
    sim.wait_gone("a")
    assert not spec_file.exists(), "NodeUnprepareResources must have removed the claim's CDI spec"
    sim.wait_running("c")


def test_driver_killed_while_pods_run_keeps_them_running_and_new_pods_start(sim):
    sim.setup_class_and_template("six", "6Gi")
    sim.pod("before", "six")
    sim.wait_running("before")
    first_client = sim.kubelet.plugins.client(DRIVER)
    worker = sim.kubelet._by_key[(NS, "before")]
    proc = next(iter(worker._procs.values()))
    old_pid = sim.kubelet.kill_driver(signal.SIGKILL)
    sim.kubelet.wait_driver_registered(60, newer_than=first_client)
    assert sim.kubelet.driver_pid not in (None, old_pid)
    assert proc.popen.poll() is None, "the pod's process must survive a driver crash"
    assert sim.plain(sim.core.read_namespaced_pod("before", NS))["status"]["phase"] == "Running"
    sim.pod("after", "six")
    sim.wait_running("after")


def test_driver_crash_during_prepare_is_reported_and_retried_after_the_restart(tmp_path):
    marker = tmp_path / "crashed-once"
    wrapper = tmp_path / "crash_once.py"
    wrapper.write_text(
        textwrap.dedent(f"""
        import os, sys
        from driver.__main__ import main
        from driver.state import DeviceState

        original = DeviceState.prepare

        def prepare(self, refs):
            if not os.path.exists({str(marker)!r}):
                open({str(marker)!r}, "w").close()
                os._exit(17)  # the driver dies in the middle of NodePrepareResources
            return original(self, refs)

        DeviceState.prepare = prepare
        sys.exit(main())
    """)
    )
    with sim_with(driver_command=f"{PY} {wrapper}") as handle:
        sim = Sim(handle)
        sim.setup_class_and_template("six", "6Gi")
        sim.pod("p", "six")
        event = sim.wait_event("p", "FailedPrepareDynamicResources")
        assert event["message"].startswith("Failed to prepare dynamic resources: ")
        sim.wait_running("p")
        assert marker.exists() and sim.kubelet.driver.starts >= 2
        assert 17 in sim.kubelet.driver.exit_codes
        sim.api.close()


def test_slices_are_wiped_when_the_driver_stays_away_and_republished_when_it_returns():
    with sim_with(slice_wipe_delay=0.5) as handle:
        sim = Sim(handle)
        assert [s["spec"]["nodeName"] for s in sim.slices()] == ["node-1"]
        first = sim.kubelet.plugins.client(DRIVER)
        # Watch from before the stop: under load the wipe can land before a watch opened afterwards.
        since = sim.res.list_resource_slice().metadata.resource_version
        w = watch.Watch()
        # Watch from before the stop: under load the wipe can come while stop_driver() still waits.
        since = sim.res.list_resource_slice().metadata.resource_version
        sim.kubelet.stop_driver()
        for ev in w.stream(sim.res.list_resource_slice, resource_version=since, timeout_seconds=20):
            if ev["type"] == "DELETED":
                w.stop()
                break
        else:
            raise AssertionError("the away driver's slices were not wiped")
        assert sim.slices() == []
        sim.kubelet.start_driver()
        sim.kubelet.wait_driver_registered(60, newer_than=first)
        slices = sim.slices()
        assert [s["spec"]["driver"] for s in slices] == [DRIVER]
        assert [d["name"] for d in slices[0]["spec"]["devices"]] == ["gpu-0", "gpu-1"]
        sim.api.close()


def test_driver_that_refuses_prepare_leaves_the_pod_not_running_with_the_event():
    with sim_with(driver_command=f"{PY} -m tests.support.mutants.refuse_second_claim") as handle:
        sim = Sim(handle)
        sim.setup_class_and_template("half", "12Gi", gpu_index=0)
        sim.pod("first", "half")
        sim.wait_running("first")
        sim.pod("second", "half")
        event = sim.wait_event("second", "FailedPrepareDynamicResources")
        assert event["type"] == "Warning"
        assert "NodePrepareResources failed for ResourceClaim second-gpu-" in event["message"]
        assert "already allocated to different claim" in event["message"]
        pod = sim.plain(sim.core.read_namespaced_pod("second", NS))
        assert pod["status"]["phase"] == "Pending"
        assert pod["status"]["containerStatuses"][0]["state"] == {"waiting": {"reason": "ContainerCreating"}}
        # A pod that never got its resources still goes away on deletion.
        sim.core.delete_namespaced_pod("second", NS)
        sim.wait_gone("second")
        sim.api.close()


def test_sim_command_line_runs_a_driver_per_node_and_leaves_no_process_behind():
    state = Path(tempfile.mkdtemp(prefix="klcli", dir="/tmp"))
    kubeconfig = state / "kubeconfig.out"
    proc = subprocess.Popen(
        [
            PY,
            "-m",
            "sim",
            "--kubeconfig",
            str(kubeconfig),
            "--nodes",
            "node-1,node-2",
            "--gpus",
            "node-1=rtx3090x2,node-2=mixed",
            "--state-dir",
            str(state / "s"),
            "--slice-wipe-delay",
            "5",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("sim: serving "), line
        from kubernetes import config

        cfg = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
        api = client.ApiClient(cfg)
        res, core = client.ResourceV1Api(api), client.CoreV1Api(api)
        w = watch.Watch()
        nodes: set[str] = set()
        for ev in w.stream(res.list_resource_slice, timeout_seconds=60):
            nodes.add(ev["object"].spec.node_name)
            if nodes == {"node-1", "node-2"}:
                w.stop()
        assert nodes == {"node-1", "node-2"}, "both drivers publish"
        driver_pids = [int((state / "s" / n / "driver.pid").read_text()) for n in ("node-1", "node-2")]
        core.create_namespaced_pod(
            NS,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "bound"},
                "spec": {
                    "nodeName": "node-2",
                    "containers": [
                        {
                            "name": "c",
                            "image": "x",
                            "command": [
                                PY,
                                "-u",
                                "-c",
                                "import os,time; print(os.getpid()); time.sleep(600)",
                            ],
                        }
                    ],
                },
            },
        )
        for ev in w.stream(core.list_namespaced_pod, NS, timeout_seconds=30):
            if ev["object"].status.phase == "Running":
                w.stop()
        deadline = time.monotonic() + 10
        while not core.read_namespaced_pod_log("bound", NS).strip():
            assert time.monotonic() < deadline
            threading.Event().wait(0.05)
        pod_pid = int(core.read_namespaced_pod_log("bound", NS).split()[0])
        api.close()
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, rest
        for pid in [*driver_pids, pod_pid]:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        import shutil

        shutil.rmtree(state, ignore_errors=True)
