"""Pods on a simulated node, through the HTTP API with the official client, against a small test DRA plugin
(real gRPC over unix sockets): prepare, CDI env per container, statuses, restarts, bad input, stop order.

The end-to-end tests with the real reference driver are in test_kubelet_e2e.py.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest
from kubernetes import client, watch

from sim.apiserver.server import ApiServer
from sim.apiserver.store import Store
from sim.kubelet.kubelet import Kubelet
from tests.support.fake_plugin import FakePlugin
from tests.support.pod_watch import PodWatch

NS = "default"
DRIVER = "gpu.test.example.dev"
KIND = f"k8s.{DRIVER}/gpu"
PY = sys.executable
SHOW_ENV = (
    "import os,sys; [print(k + '=' + v) for k, v in sorted(os.environ.items()) if k.startswith('GPU_')]"
)


class Node(PodWatch):
    def __init__(self, root: Path):
        self.store = Store()
        self.server = ApiServer(self.store)
        self.server.start()
        self.store.create("nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}})
        self.kubelet = Kubelet(
            self.store, "node-1", root, slice_wipe_delay=0.5, crash_backoff_s=0.3, shutdown_grace_s=1.0
        ).start()
        self.store.log_provider = self.kubelet.read_log
        dirs = self.kubelet.dirs
        self.plugin = FakePlugin(
            dirs.plugins_registry, dirs.plugin_dir(DRIVER), name=DRIVER, prepare_fn=self.prepare
        ).start()
        self.prepare_error = ""
        self.devices: dict[str, list[dict]] = {}  # claim name -> devices to answer
        self.kubelet.plugins.wait_registered(DRIVER, timeout=10)
        cfg = client.Configuration()
        cfg.host = self.server.url
        cfg.api_key = {"authorization": f"Bearer {self.server.token}"}
        cfg.ca_cert_data = self.server.ca_pem.decode()
        self.api = client.ApiClient(cfg)
        self.core = client.CoreV1Api(self.api)
        self.resource = client.ResourceV1Api(self.api)

    def prepare(self, namespace: str, uid: str, name: str) -> tuple[list[dict], str]:
        if self.prepare_error:
            return [], self.prepare_error
        devices = self.devices.get(name, [])
        spec = {
            "cdiVersion": "1.0.0",
            "kind": KIND,
            "devices": [
                {"name": d["device_name"] + "-" + uid, "containerEdits": {"env": d["env"]}} for d in devices
            ],
        }
        (self.kubelet.dirs.cdi / f"k8s.{DRIVER}-gpu_{uid}.json").write_text(json.dumps(spec))
        return [
            {
                "request_names": d["requests"],
                "pool_name": "node-1",
                "device_name": d["device_name"],
                "cdi_device_ids": [f"{KIND}={d['device_name']}-{uid}"],
            }
            for d in devices
        ], ""

    def close(self) -> None:
        self.kubelet.stop()
        self.plugin.stop()
        self.api.close()
        self.server.stop()

    # -- helpers ----------------------------------------------------------------------------------------
    def claim(self, name: str, requests: list[str], pod: dict, devices: list[dict]) -> None:
        self.devices[name] = devices
        self.resource.create_namespaced_resource_claim(NS, {
            "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim", "metadata": {"name": name},
            "spec": {"devices": {"requests": [{"name": r, "exactly": {"deviceClassName": "gpu"}}
                                              for r in requests]}},
        })  # fmt: skip
        # A device answered with no request names serves every request of the claim.
        results = [
            {"request": r, "driver": DRIVER, "pool": "node-1", "device": d["device_name"]}
            for d in devices
            for r in (d["requests"] or requests)
        ]
        self.resource.patch_namespaced_resource_claim_status(name, NS, {"status": {
            "allocation": {"devices": {"results": results}},
            "reservedFor": [{"resource": "pods", "name": pod["metadata"]["name"],
                             "uid": pod["metadata"]["uid"]}],
        }})  # fmt: skip

    def pod(
        self,
        name: str,
        containers: list[dict],
        claims: list[str] = (),
        bind: bool = True,
        restart: str = "Never",
        grace: int | None = None,
    ) -> dict:
        spec: dict = {"restartPolicy": restart, "containers": containers}
        if claims:
            spec["resourceClaims"] = [{"name": c, "resourceClaimName": c} for c in claims]
        if grace is not None:
            spec["terminationGracePeriodSeconds"] = grace
        obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}
        created = self.api.sanitize_for_serialization(self.core.create_namespaced_pod(NS, obj))
        return created

    def bind(self, name: str) -> None:
        self.core.create_namespaced_pod_binding_with_http_info(
            name,
            NS,
            {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": name},
                "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"},
            },
            _preload_content=False,
        )

    def log(self, name: str, container: str | None = None, **kw) -> str:
        return self.core.read_namespaced_pod_log(name, NS, container=container, **kw)


@pytest.fixture
def node():
    root = Path(tempfile.mkdtemp(prefix="klpod", dir="/tmp"))
    n = Node(root)
    try:
        yield n
    finally:
        n.close()
        shutil.rmtree(root, ignore_errors=True)


def phase(p: str):
    return lambda pod: pod.get("status", {}).get("phase") == p


def container_state(name: str, key: str, reason: str | None = None):
    def check(pod: dict) -> bool:
        for cs in pod.get("status", {}).get("containerStatuses") or []:
            if cs["name"] == name and key in cs["state"]:
                return reason is None or cs["state"][key].get("reason") == reason
        return False

    return check


def gpu(device: str, requests: list[str], uuid: str, mem: int) -> dict:
    return {
        "device_name": device,
        "requests": requests,
        "env": [f"GPU_DEVICE_0={uuid}", f"GPU_DEVICE_0_MEMORY={mem}"],
    }


def test_claims_prepared_once_per_driver_and_cdi_env_filtered_per_container_request(node):
    def show_env(name: str, uses: list[dict]) -> dict:
        return {"name": name, "image": "x", "command": [PY, "-c", SHOW_ENV], "resources": {"claims": uses}}

    p = node.pod(
        "two",
        [
            show_env("a", [{"name": "c1", "request": "r1"}]),
            show_env("b", [{"name": "c1", "request": "r2"}]),
            show_env("both", [{"name": "c1"}, {"name": "c2"}]),
            show_env("none", []),
        ],
        claims=["c1", "c2"],
    )
    node.claim(
        "c1", ["r1", "r2"], p, [gpu("gpu-0", ["r1"], "GPU-aaa", 100), gpu("gpu-1", ["r2"], "GPU-bbb", 200)]
    )
    node.claim("c2", ["r"], p, [{"device_name": "gpu-2", "requests": [], "env": ["GPU_EXTRA=yes"]}])
    node.bind("two")
    done = node.wait_pod("two", phase("Succeeded"), what="Succeeded")
    assert node.log("two", "a") == "GPU_DEVICE_0=GPU-aaa\nGPU_DEVICE_0_MEMORY=100\n"
    assert node.log("two", "b") == "GPU_DEVICE_0=GPU-bbb\nGPU_DEVICE_0_MEMORY=200\n"
    # Later devices' env wins for the same key, as CDI injection in request order does.
    assert node.log("two", "both") == "GPU_DEVICE_0=GPU-bbb\nGPU_DEVICE_0_MEMORY=200\nGPU_EXTRA=yes\n"
    assert node.log("two", "none") == ""
    # One NodePrepareResources call for the driver carrying both claims.
    assert len(node.plugin.prepare_calls) == 1 and len(node.plugin.prepare_calls[0][1]) == 2
    statuses = {c["name"]: c for c in done["status"]["containerStatuses"]}
    assert statuses["a"]["state"]["terminated"]["reason"] == "Completed"
    assert statuses["a"]["state"]["terminated"]["exitCode"] == 0
    # The pod finished: its claims are unprepared without waiting for the deletion.
    node.kubelet.plugins.wait_for(lambda: bool(node.plugin.unprepare_calls), 10, "unprepare")


def test_running_pod_reports_running_ready_and_serves_logs(node):
    node.pod(
        "run",
        [
            {
                "name": "c",
                "image": "x",
                "command": [PY, "-u", "-c", "import time; print('up'); time.sleep(600)"],
            }
        ],
    )
    node.bind("run")
    pod = node.wait_pod("run", phase("Running"), what="Running")
    cs = pod["status"]["containerStatuses"][0]
    assert cs["ready"] and cs["started"] and "running" in cs["state"]
    conds = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert conds == {
        "PodReadyToStartContainers": "True",
        "Initialized": "True",
        "Ready": "True",
        "ContainersReady": "True",
        "PodScheduled": "True",
    }
    deadline = time.monotonic() + 10
    while node.log("run") != "up\n":  # the log file fills as the process writes; bounded
        assert time.monotonic() < deadline, "log never showed the process output"
        threading.Event().wait(0.05)
    assert node.wait_event("run", "Started")["message"] == "Started container c"


def test_driver_error_gives_event_and_container_creating_then_retry_succeeds(node):
    node.prepare_error = "GPU gpu-0 is already in use by another claim"
    p = node.pod(
        "refused",
        [
            {
                "name": "c",
                "image": "x",
                "command": [PY, "-c", SHOW_ENV],
                "resources": {"claims": [{"name": "c1"}]},
            }
        ],
        claims=["c1"],
    )
    node.claim("c1", ["gpu"], p, [gpu("gpu-0", ["gpu"], "GPU-aaa", 1)])
    node.bind("refused")
    event = node.wait_event("refused", "FailedPrepareDynamicResources")
    pod = node.api.sanitize_for_serialization(node.core.read_namespaced_pod("refused", NS))
    assert pod["status"]["phase"] == "Pending"
    assert pod["status"]["containerStatuses"][0]["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert event["type"] == "Warning"
    assert event["message"] == (
        "Failed to prepare dynamic resources: prepare dynamic resources: NodePrepareResources failed for "
        "ResourceClaim c1: GPU gpu-0 is already in use by another claim"
    )
    node.prepare_error = ""
    node.wait_pod("refused", phase("Succeeded"), what="Succeeded after the driver accepts")
    assert node.log("refused") == "GPU_DEVICE_0=GPU-aaa\nGPU_DEVICE_0_MEMORY=1\n"


def test_unregistered_driver_is_named_in_the_event(node):
    node.plugin.stop()
    node.kubelet.plugins.wait_for(lambda: node.kubelet.plugins.client(DRIVER) is None, 10, "deregistration")
    p = node.pod("orphan", [{"name": "c", "image": "x", "command": [PY, "-c", "pass"]}], claims=["c1"])
    node.claim("c1", ["gpu"], p, [gpu("gpu-0", ["gpu"], "GPU-aaa", 1)])
    node.bind("orphan")
    event = node.wait_event("orphan", "FailedPrepareDynamicResources")
    assert event["message"] == (
        "Failed to prepare dynamic resources: prepare dynamic resources: "
        f"DRA driver {DRIVER} is not registered"
    )


def test_missing_command_is_a_start_error_and_the_node_keeps_serving(node):
    node.pod("nosuch", [{"name": "c", "image": "x", "command": ["no-such-binary-sim", "--flag"]}])
    node.bind("nosuch")
    pod = node.wait_pod("nosuch", phase("Failed"), what="Failed")
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["reason"] == "StartError" and term["exitCode"] == 128
    assert 'exec: "no-such-binary-sim": executable file not found in $PATH' in term["message"]
    assert "executable file not found" in node.wait_event("nosuch", "Failed")["message"]
    node.pod("fine", [{"name": "c", "image": "x", "command": [PY, "-c", "print('ok')"]}])
    node.bind("fine")
    node.wait_pod("fine", phase("Succeeded"))
    assert node.log("fine") == "ok\n"


def test_container_naming_a_request_the_claim_lacks_gets_create_container_config_error(node):
    p = node.pod(
        "badreq",
        [
            {
                "name": "c",
                "image": "x",
                "command": [PY, "-c", "pass"],
                "resources": {"claims": [{"name": "c1", "request": "nope"}]},
            }
        ],
        claims=["c1"],
    )
    node.claim("c1", ["gpu"], p, [gpu("gpu-0", ["gpu"], "GPU-aaa", 1)])
    node.bind("badreq")
    pod = node.wait_pod("badreq", container_state("c", "waiting", "CreateContainerConfigError"))
    msg = pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
    assert "ResourceClaim c1 has no request 'nope'" in msg and "resources.claims[0].request" in msg
    assert "has no request 'nope'" in node.wait_event("badreq", "Failed")["message"]


def test_malformed_cdi_spec_fails_the_start_naming_the_file(node):
    p = node.pod(
        "badcdi",
        [
            {
                "name": "c",
                "image": "x",
                "command": [PY, "-c", "pass"],
                "resources": {"claims": [{"name": "c1"}]},
            }
        ],
        claims=["c1"],
    )
    node.claim("c1", ["gpu"], p, [gpu("gpu-0", ["gpu"], "GPU-aaa", 1)])
    original = node.prepare

    def corrupting(namespace, uid, name):
        devices, err = original(namespace, uid, name)
        spec_file = node.kubelet.dirs.cdi / f"k8s.{DRIVER}-gpu_{uid}.json"
        spec_file.write_text('{"cdiVersion": "1.0.0", "kind": ')
        return devices, err

    node.plugin.prepare_fn = corrupting
    node.bind("badcdi")
    pod = node.wait_pod("badcdi", container_state("c", "waiting", "CreateContainerError"))
    msg = pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
    assert "CDI device injection failed: unresolvable CDI devices" in msg and "malformed spec" in msg
    assert f"k8s.{DRIVER}-gpu_" in msg


def test_restart_policies_count_restarts_and_keep_previous_logs(node, tmp_path):
    marker = tmp_path / "ran-once"
    script = (
        f"import os,sys; p={str(marker)!r}; first=not os.path.exists(p); open(p,'a').close(); "
        "print('first' if first else 'second'); sys.exit(3 if first else 0)"
    )
    node.pod("onfail", [{"name": "c", "image": "x", "command": [PY, "-c", script]}], restart="OnFailure")
    node.bind("onfail")
    pod = node.wait_pod("onfail", phase("Succeeded"))
    cs = pod["status"]["containerStatuses"][0]
    assert cs["restartCount"] == 1
    last = cs["lastState"]["terminated"]
    assert last["exitCode"] == 3 and last["reason"] == "Error"
    assert node.log("onfail") == "second\n"
    assert node.log("onfail", previous=True) == "first\n"

    node.pod(
        "always", [{"name": "c", "image": "x", "command": [PY, "-c", "print('tick')"]}], restart="Always"
    )
    node.bind("always")
    pod = node.wait_pod(
        "always",
        lambda o: (o["status"].get("containerStatuses") or [{}])[0].get("restartCount", 0) >= 2,
        what="two restarts",
    )
    assert pod["status"]["phase"] == "Running"  # a crash-looping container keeps the pod Running
    assert node.wait_event("always", "BackOff")["type"] == "Warning"


def test_delete_sends_sigterm_then_sigkill_after_grace_then_unprepares_then_removes(node):
    unprepare_seen: list[bool] = []
    pids: list[int] = []
    original_unprepare = node.plugin.unprepare_calls

    p = node.pod("stubborn", [{"name": "c", "image": "x", "command": [PY, "-u", "-c", textwrap.dedent("""
        import os, signal, time
        signal.signal(signal.SIGTERM, lambda *a: print('got SIGTERM', flush=True))
        print(os.getpid(), flush=True)
        while True: time.sleep(1)
    """)], "resources": {"claims": [{"name": "c1"}]}}], claims=["c1"], grace=1)  # fmt: skip
    node.claim("c1", ["gpu"], p, [gpu("gpu-0", ["gpu"], "GPU-aaa", 1)])
    node.bind("stubborn")
    node.wait_pod("stubborn", phase("Running"))
    deadline = time.monotonic() + 10
    while not node.log("stubborn").strip():
        assert time.monotonic() < deadline
        threading.Event().wait(0.05)
    pids.append(int(node.log("stubborn").split()[0]))

    class Recorder(list):
        def append(self, item):
            try:
                os.kill(pids[0], 0)
                unprepare_seen.append(True)  # still alive at unprepare: wrong order
            except ProcessLookupError:
                unprepare_seen.append(False)
            super().append(item)

    node.plugin.unprepare_calls = Recorder(original_unprepare)
    started = time.monotonic()
    node.core.delete_namespaced_pod("stubborn", NS)
    node.wait_gone("stubborn")
    elapsed = time.monotonic() - started
    assert unprepare_seen == [False], "NodeUnprepareResources must come after the process is gone"
    assert elapsed >= 1.0, "the process ignored SIGTERM: it may be killed only after the grace period"
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)


def test_no_process_outlives_the_kubelet(node):
    child = (
        "import subprocess,sys,time; subprocess.Popen([sys.executable,'-c','import signal,time; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); "
        "time.sleep(600)']); time.sleep(600)"
    )
    node.pod("family", [{"name": "c", "image": "x", "command": [PY, "-c", child]}], grace=30)
    node.bind("family")
    node.wait_pod("family", phase("Running"))
    deadline = time.monotonic() + 10
    while not node.log("family").strip():  # the grandchild is up
        assert time.monotonic() < deadline
        threading.Event().wait(0.05)
    worker = node.kubelet._by_key[(NS, "family")]
    pgid = next(iter(worker._procs.values())).pid
    assert len(live_group_members(pgid)) == 2
    node.kubelet.stop()
    assert live_group_members(pgid) == []


def live_group_members(pgid: int) -> list[int]:
    """Processes of a process group that are not zombies (an unreaped zombie has already exited)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(entry))
    return out


def test_slices_of_an_unreachable_driver_are_wiped_after_the_delay(node):
    def slice_obj(name: str, driver: str) -> dict:
        return {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceSlice",
            "metadata": {"name": name},
            "spec": {
                "driver": driver,
                "nodeName": "node-1",
                "pool": {"name": "node-1", "generation": 1, "resourceSliceCount": 1},
                "devices": [{"name": "gpu-0"}],
            },
        }

    node.resource.create_resource_slice(slice_obj("mine", DRIVER))
    node.resource.create_resource_slice(slice_obj("other", "other.example.dev"))
    # A driver that comes back within the delay keeps its slices (a generous delay, so that the
    # re-registration wins even on a loaded machine; the wipe thread then ends as cancelled).
    node.kubelet.slice_wipe_delay = 5.0
    old = node.kubelet.plugins.client(DRIVER)
    node.plugin.stop()
    node.plugin.start()
    node.kubelet.plugins.wait_registered(DRIVER, 10, newer_than=old)
    node.kubelet.join_wipes(timeout=10)
    names = sorted(s.metadata.name for s in node.resource.list_resource_slice().items)
    assert names == ["mine", "other"]
    node.kubelet.slice_wipe_delay = 0.5
    node.plugin.stop()
    w = watch.Watch()
    for ev in w.stream(node.resource.list_resource_slice, timeout_seconds=10):
        if ev["type"] == "DELETED" and ev["object"].metadata.name == "mine":
            w.stop()
            break
    else:
        raise AssertionError("the unreachable driver's slice was not wiped")
    names = sorted(s.metadata.name for s in node.resource.list_resource_slice().items)
    assert names == ["other"]


def test_kubelet_start_wipes_the_nodes_slices(tmp_path):
    store = Store()
    store.create("nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}})
    store.create("resourceslices.resource.k8s.io", {
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice", "metadata": {"name": "stale"},
        "spec": {"driver": DRIVER, "nodeName": "node-1", "pool": {"name": "node-1", "generation": 1,
                 "resourceSliceCount": 1}, "devices": [{"name": "gpu-0"}]}})  # fmt: skip
    root = Path(tempfile.mkdtemp(prefix="klw", dir="/tmp"))
    k = Kubelet(store, "node-1", root).start()
    try:
        assert store.list("resourceslices.resource.k8s.io")[0] == []
    finally:
        k.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_init_containers_run_in_order_before_the_containers(node, tmp_path):
    trace = tmp_path / "trace"
    step = "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + chr(10))"

    def writer(name: str) -> dict:
        return {"name": name, "image": "x", "command": [PY, "-c", step, str(trace), name]}

    node.core.create_namespaced_pod(
        NS,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "init"},
            "spec": {
                "restartPolicy": "Never",
                "initContainers": [writer("i1"), writer("i2")],
                "containers": [writer("main")],
            },
        },
    )
    node.bind("init")
    pod = node.wait_pod("init", phase("Succeeded"))
    assert trace.read_text().split() == ["i1", "i2", "main"]
    inits = pod["status"]["initContainerStatuses"]
    assert [(s["name"], s["state"]["terminated"]["reason"], s["ready"]) for s in inits] == [
        ("i1", "Completed", True),
        ("i2", "Completed", True),
    ]
    conds = {c["type"]: c for c in pod["status"]["conditions"]}
    assert conds["Initialized"]["status"] == "True"


def test_failing_init_container_fails_the_pod_and_main_never_starts(node):
    node.core.create_namespaced_pod(
        NS,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "badinit"},
            "spec": {
                "restartPolicy": "Never",
                "initContainers": [
                    {"name": "setup", "image": "x", "command": [PY, "-c", "raise SystemExit(4)"]}
                ],
                "containers": [{"name": "c", "image": "x", "command": [PY, "-c", "pass"]}],
            },
        },
    )
    node.bind("badinit")
    pod = node.wait_pod("badinit", phase("Failed"))
    init = pod["status"]["initContainerStatuses"][0]["state"]["terminated"]
    assert (init["exitCode"], init["reason"]) == (4, "Error")
    assert pod["status"]["containerStatuses"][0]["state"] == {"waiting": {"reason": "PodInitializing"}}
    conds = {c["type"]: c for c in pod["status"]["conditions"]}
    assert conds["Initialized"]["status"] == "False"
    assert conds["Initialized"]["reason"] == "ContainersNotInitialized"
    assert conds["Initialized"]["message"] == "containers with incomplete status: [setup]"
