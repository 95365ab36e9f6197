"""Real nodes (``localkube.nodes``), the parts that need no root: the plan of a run's nodes, the
containerd and kubelet configuration each node gets, and what the host check says is missing. The nodes
themselves run in ``make test-local`` (tests/local/test_local_real_nodes.py)."""

from __future__ import annotations

import ipaddress
import json
import tomllib
from pathlib import Path

import pytest

from localkube import nodes
from localkube.nodes import NodeConfig, NodePlan, RealNode, plan_nodes


def _node(tmp_path: Path, gates: dict[str, bool] | None = None) -> RealNode:
    plan = plan_nodes(["node-1"], tmp_path)[0]
    config = NodeConfig(
        release="1.34.4",
        ca_cert="/ca.crt",
        feature_gates=gates or {},
        sandbox_image="localhost/gpu-share-conformance/pause:abc",
    )
    return RealNode(plan, config, lambda _line: None)


def test_each_node_gets_its_own_subnet_bridge_and_cgroup_root(tmp_path: Path) -> None:
    plans = plan_nodes(["node-1", "node-2", "worker-three"], tmp_path)
    subnets = [ipaddress.IPv4Network(p.subnet) for p in plans]
    assert all(not a.overlaps(b) for i, a in enumerate(subnets) for b in subnets[i + 1 :])
    assert all(
        ipaddress.IPv4Address(p.ip) == ipaddress.IPv4Network(p.subnet).network_address + 1 for p in plans
    )
    assert len({p.bridge for p in plans}) == 3 and all(len(p.bridge) <= 15 for p in plans)  # IFNAMSIZ
    assert len({p.cgroup_root for p in plans}) == 3
    assert [p.dir for p in plans] == [str(tmp_path / n) for n in ("node-1", "node-2", "worker-three")]


def test_a_run_picks_a_pod_network_the_host_does_not_use(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    taken = [ipaddress.IPv4Network(f"10.{x}.0.0/16") for x in range(200, 205)]
    monkeypatch.setattr(nodes, "_used_networks", lambda: taken)
    plan = plan_nodes(["node-1"], tmp_path)[0]
    assert plan.subnet == "10.205.1.0/24"
    monkeypatch.setattr(nodes, "_used_networks", lambda: [ipaddress.IPv4Network("10.0.0.0/8")])
    with pytest.raises(nodes.NodeError, match="no free"):
        plan_nodes(["node-1"], tmp_path)


def test_paths_the_node_sees_map_to_its_own_tree(tmp_path: Path) -> None:
    plan = plan_nodes(["node-1"], tmp_path)[0]
    root = tmp_path / "node-1"
    assert plan.host_path("/var/lib/kubelet/plugins_registry") == root / "kubelet" / "plugins_registry"
    assert plan.host_path("/var/run/cdi") == root / "cdi"
    assert plan.host_path("/etc/hosts") == Path("/etc/hosts")


def test_containerd_runs_cdi_with_runc_on_cgroupfs_and_keeps_its_state_in_the_node(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(nodes, "cni_bin_dir", lambda: Path("/usr/lib/cni"))
    node = _node(tmp_path)
    config = tomllib.loads(node._containerd_config().read_text())
    runtime = config["plugins"]["io.containerd.cri.v1.runtime"]
    assert config["version"] == 3
    assert runtime["enable_cdi"] is True and runtime["cdi_spec_dirs"] == [nodes.CDI_DIR]
    # The VM withholds CAP_SYS_RESOURCE: an unrestricted sandbox OOM score (-998) is refused by the kernel.
    assert runtime["restrict_oom_score_adj"] is True
    assert runtime["netns_mounts_under_state_dir"] is True
    runc = runtime["containerd"]["runtimes"]["runc"]
    assert runc["runtime_type"] == "io.containerd.runc.v2" and runc["options"]["SystemdCgroup"] is False
    assert runtime["cni"]["conf_dir"] == str(node.root / "cni")
    images = config["plugins"]["io.containerd.cri.v1.images"]
    assert images["pinned_images"]["sandbox"] == "localhost/gpu-share-conformance/pause:abc"
    assert config["grpc"]["address"] == str(node.socket) and config["root"].startswith(str(node.root))


def test_the_kubelet_runs_on_cgroup_v1_with_the_runs_gates_on_the_node_ip(tmp_path: Path) -> None:
    node = _node(tmp_path, {"DRAConsumableCapacity": True})
    config = json.loads(node._kubelet_config().read_text())
    assert config["kind"] == "KubeletConfiguration"
    assert config["failCgroupV1"] is False and config["cgroupDriver"] == "cgroupfs"
    assert config["cgroupRoot"] == node.plan.cgroup_root
    assert config["address"] == node.plan.ip and config["healthzBindAddress"] == node.plan.ip
    assert config["featureGates"] == {"DRAConsumableCapacity": True}
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["authorization"]["mode"] == "Webhook"
    assert config["containerRuntimeEndpoint"] == f"unix://{node.socket}"


def test_the_cni_bridge_is_the_nodes_own_with_its_ip_as_gateway(tmp_path: Path) -> None:
    node = _node(tmp_path)
    node._cni_config()
    conf = json.loads((node.root / "cni" / "10-bridge.conflist").read_text())
    bridge = conf["plugins"][0]
    assert bridge["type"] == "bridge" and bridge["bridge"] == node.plan.bridge
    assert bridge["ipam"]["ranges"] == [[{"subnet": node.plan.subnet, "gateway": node.plan.ip}]]


def test_the_host_check_names_each_missing_piece_and_its_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nodes.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(nodes.shutil, "which", lambda name: None)
    monkeypatch.setattr(nodes, "cni_bin_dir", lambda: None)
    monkeypatch.setattr(nodes.versions, "missing_node_binaries", lambda release: ["kubelet", "containerd"])
    problems = " | ".join(nodes.host_problems("1.36.3"))
    assert "need root" in problems
    assert "apt-get install runc" in problems
    assert "apt-get install containernetworking-plugins" in problems
    assert "apt-get install iptables" in problems
    assert "make kube-bin KUBE_VERSION=1.36" in problems and "kubelet, containerd" in problems


def test_a_plan_survives_its_json_round_trip(tmp_path: Path) -> None:
    plan = plan_nodes(["node-1"], tmp_path)[0]
    assert NodePlan(**json.loads(json.dumps(plan.__dict__))) == plan
