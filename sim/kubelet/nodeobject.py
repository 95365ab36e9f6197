"""The Node object a simulated kubelet registers: one place for the sim's in-process nodes and for the
nodes-only kubelets that register with another API server (sim/kubelet/remote.py)."""

from __future__ import annotations

from typing import Any

from drakit.timeutil import now_rfc3339


def node_object(name: str, kubelet_version: str, kubelet_port: int | None = None) -> dict[str, Any]:
    """A Ready Node as a kubelet registers it (status as of now); ``kubelet_port`` is where its kubelet
    API serves (status.daemonEndpoints), for an API server that proxies logs to it."""
    now = now_rfc3339()
    node: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            },
        },
        "spec": {},
        "status": {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "simulated node is ready",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": name},
            ],
            "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
            "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": "",
                "containerRuntimeVersion": "sim://1.0",
                "kernelVersion": "",
                "kubeProxyVersion": "",
                "kubeletVersion": kubelet_version,
                "machineID": "",
                "operatingSystem": "linux",
                "osImage": "sim",
                "systemUUID": "",
            },
        },
    }
    if kubelet_port is not None:
        node["status"]["daemonEndpoints"] = {"kubeletEndpoint": {"Port": kubelet_port}}
    return node
