"""The kind configs use only fields kind's v1alpha4 API knows, turn on what DRA consumable capacity needs
(the gate on 1.34/1.35 nodes, CDI in containerd) and, for real GPUs, hand GPUs over nvkind-style."""

from __future__ import annotations

import re
import subprocess
import tomllib
from typing import Any

import jsonschema_rs
import pytest
import yaml

from conformance.providers.kind import GPU_NODE_SETUP, MOCK_GPUS_CONFIG, REAL_GPUS_CONFIG, nvkind_config

# kind.x-k8s.io/v1alpha4 as documented in sigs.k8s.io/kind pkg/apis/config/v1alpha4/types.go
# (Cluster, Node, Networking, Mount, PortMapping, PatchJSON6902). kind rejects unknown fields; so does this.
_STRINGS = {"type": "array", "items": {"type": "string"}}
_PATCH_6902 = {
    "type": "object",
    "additionalProperties": False,
    "required": ["group", "version", "kind", "patch"],
    "properties": {k: {"type": "string"} for k in ("group", "version", "kind", "patch")},
}
KIND_V1ALPHA4 = {
    "type": "object",
    "additionalProperties": False,
    "required": ["kind", "apiVersion"],
    "properties": {
        "kind": {"const": "Cluster"},
        "apiVersion": {"const": "kind.x-k8s.io/v1alpha4"},
        "name": {"type": "string"},
        "nodes": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "role": {"enum": ["control-plane", "worker"]},
                    "image": {"type": "string"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "extraMounts": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "containerPath": {"type": "string"},
                                "hostPath": {"type": "string"},
                                "readOnly": {"type": "boolean"},
                                "selinuxRelabel": {"type": "boolean"},
                                "propagation": {"enum": ["None", "HostToContainer", "Bidirectional"]},
                            },
                        },
                    },
                    "extraPortMappings": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "containerPort": {"type": "integer"},
                                "hostPort": {"type": "integer"},
                                "listenAddress": {"type": "string"},
                                "protocol": {"enum": ["TCP", "UDP", "SCTP"]},
                            },
                        },
                    },
                    "gpus": {"type": "string"},
                    "kubeadmConfigPatches": _STRINGS,
                    "kubeadmConfigPatchesJSON6902": {"type": "array", "items": _PATCH_6902},
                },
            },
        },
        "networking": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "ipFamily": {"enum": ["ipv4", "ipv6", "dual"]},
                "apiServerPort": {"type": "integer"},
                "apiServerAddress": {"type": "string"},
                "podSubnet": {"type": "string"},
                "serviceSubnet": {"type": "string"},
                "disableDefaultCNI": {"type": "boolean"},
                "kubeProxyMode": {"enum": ["iptables", "ipvs", "nftables", "none"]},
                "dnsSearch": _STRINGS,
            },
        },
        "featureGates": {"type": "object", "additionalProperties": {"type": "boolean"}},
        "runtimeConfig": {"type": "object", "additionalProperties": {"type": "string"}},
        "kubeadmConfigPatches": _STRINGS,
        "kubeadmConfigPatchesJSON6902": {"type": "array", "items": _PATCH_6902},
        "containerdConfigPatches": _STRINGS,
        "containerdConfigPatchesJSON6902": _STRINGS,
    },
}
VALIDATOR = jsonschema_rs.validator_for(KIND_V1ALPHA4)
CONFIGS = {"mock-gpus": MOCK_GPUS_CONFIG, "real-gpus": REAL_GPUS_CONFIG}
_NODE_IMAGE = re.compile(r"^kindest/node:v1\.(\d+)\.(\d+)(@sha256:[0-9a-f]{64})?$")


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load(CONFIGS[name].read_text())


def schema_errors(config: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.instance_path))}: {e.message}" for e in VALIDATOR.iter_errors(config)]


@pytest.mark.parametrize("name", CONFIGS)
def test_config_uses_only_kind_v1alpha4_fields(name: str) -> None:
    assert schema_errors(load(name)) == []


def test_schema_rejects_a_misspelt_field() -> None:
    config = load("mock-gpus")
    config["nodes"][1]["extraMount"] = []
    assert any("'extraMount' was unexpected" in e for e in schema_errors(config))


def test_the_nvkind_config_the_provider_writes_is_valid_too() -> None:
    assert schema_errors(nvkind_config(load("real-gpus"), 4)) == []


@pytest.mark.parametrize("name", CONFIGS)
def test_node_images_are_pinned_and_have_consumable_capacity_on(name: str) -> None:
    config = load(name)
    images = {node.get("image", "") for node in config["nodes"]}
    assert len(images) == 1, f"{name}: every node must run the same pinned image, got {images}"
    match = _NODE_IMAGE.match(images.pop())
    assert match, f"{name}: node image must be a pinned kindest/node:v1.MINOR.PATCH"
    minor = int(match.group(1))
    assert minor >= 34, "resource.k8s.io/v1 and consumable capacity need Kubernetes 1.34+"
    if minor in (34, 35):  # alpha and off by default there; beta and on from 1.36
        assert config.get("featureGates", {}).get("DRAConsumableCapacity") is True


@pytest.mark.parametrize("name", CONFIGS)
def test_containerd_has_cdi_enabled(name: str) -> None:
    patches = [tomllib.loads(p) for p in load(name)["containerdConfigPatches"]]
    assert any(
        p.get("plugins", {}).get("io.containerd.grpc.v1.cri", {}).get("enable_cdi") is True for p in patches
    )


def test_mock_cluster_is_one_control_plane_and_two_workers() -> None:
    assert [n["role"] for n in load("mock-gpus")["nodes"]] == ["control-plane", "worker", "worker"]


def test_real_gpu_worker_gets_gpus_through_dev_null_mounts() -> None:
    (worker,) = [n for n in load("real-gpus")["nodes"] if n["role"] == "worker"]
    mounts = worker["extraMounts"]
    assert mounts and all(
        m["hostPath"] == "/dev/null"
        and re.fullmatch(r"/var/run/nvidia-container-devices/\d+", m["containerPath"])
        for m in mounts
    )


def test_gpu_node_setup_script_is_valid_bash_that_installs_the_nvidia_runtime() -> None:
    subprocess.run(["bash", "-n", str(GPU_NODE_SETUP)], check=True)
    script = GPU_NODE_SETUP.read_text()
    assert "nvidia-ctk runtime configure --runtime=containerd" in script and "--set-as-default" in script
    assert "systemctl restart containerd" in script
    assert GPU_NODE_SETUP.stat().st_mode & 0o111


def test_both_clusters_pin_the_same_node_image() -> None:
    images = {n["image"] for name in CONFIGS for n in load(name)["nodes"]}
    assert len(images) == 1
