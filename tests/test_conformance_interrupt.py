"""Ctrl-C in the middle of a scenario still removes everything the suite created in the cluster."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from kubernetes import client, config, watch

REPO = Path(__file__).resolve().parents[1]


def test_interrupted_run_leaves_no_namespace_behind(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    # Unix socket paths are short (108 bytes): the node state lives under a short temporary dir.
    state = Path(tempfile.mkdtemp(prefix="gsc-int-"))
    sim = subprocess.Popen([sys.executable, "-m", "sim", "--kubeconfig", str(kubeconfig), "--nodes", "node-1",
                            "--gpus", "rtx3090x2", "--state-dir", str(state)],
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    suite: subprocess.Popen[str] | None = None
    try:
        assert sim.stdout is not None
        seen = []
        for line in iter(sim.stdout.readline, b""):      # the sim prints this once it serves
            seen.append(line.decode(errors="replace"))
            if "sim: serving" in seen[-1]:
                break
        assert "sim: serving" in seen[-1], "".join(seen)
        api = config.new_client_from_config(config_file=str(kubeconfig))
        core, resource = client.CoreV1Api(api), client.ResourceV1Api(api)
        resource.create_device_class({"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass",
                                      "metadata": {"name": "gpu.sharing.example.dev"},
                                      "spec": {"selectors": [{"cel": {
                                          "expression": 'device.driver == "gpu.sharing.example.dev"'}}]}})
        profile = yaml.safe_load((REPO / "fixtures/drivers/reference.yaml").read_text())
        profile["install"] = {"method": "preinstalled"}
        (tmp_path / "preinstalled.yaml").write_text(yaml.safe_dump(profile))
        suite = subprocess.Popen(
            [sys.executable, "-m", "pytest", "conformance/scenarios", "-q", "-p", "no:cacheprovider",
             "--cluster=existing", f"--kubeconfig={kubeconfig}",
             f"--driver-profile={tmp_path / 'preinstalled.yaml'}",
             f"--report-dir={tmp_path / 'report'}", "-m", "sharing"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # Interrupt as soon as the scenario has created its first pod.
        w = watch.Watch()
        for event in w.stream(core.list_pod_for_all_namespaces, timeout_seconds=60):
            if event["object"].metadata.namespace.startswith("gsc-"):
                w.stop()
                break
        else:
            raise AssertionError("the suite created no pod within 60 s")
        suite.send_signal(signal.SIGINT)
        out, _ = suite.communicate(timeout=90)
        left = [n.metadata.name for n in core.list_namespace().items if n.metadata.name.startswith("gsc-")]
        assert not left, f"namespaces left after Ctrl-C: {left}\n{out[-2000:]}"
        pods = [p.metadata.name for p in core.list_pod_for_all_namespaces().items]
        assert not pods, f"pods left after Ctrl-C: {pods}"
        api.close()
    finally:
        if suite is not None and suite.poll() is None:
            suite.kill()
            suite.wait()
        sim.send_signal(signal.SIGTERM)
        try:
            sim.wait(30)
        except subprocess.TimeoutExpired:
            sim.kill()
            sim.wait()
        shutil.rmtree(state, ignore_errors=True)
