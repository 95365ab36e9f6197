"""A DRA driver's rendered Helm chart can be applied to the sim (plain storage for the kinds it renders)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, dynamic

from sim.testing import SimHandle

CHART = Path(__file__).resolve().parents[2] / "deployments" / "helm" / "gpu-sharing-dra-driver"


def test_rendered_reference_chart_applies_and_reads_back(sim: SimHandle, api_client: Any) -> None:
    import helm_python as hp

    with hp.Chart.load(str(CHART)) as chart:
        rendered = chart.render({}, name="dra", namespace="dra-system")
    docs = [
        d
        for path, text in sorted(rendered.items())
        if path.endswith(".yaml")  # NOTES.txt is not YAML
        for d in yaml.safe_load_all(text)
        if d
    ]
    assert {d["kind"] for d in docs} >= {"DaemonSet", "DeviceClass", "ClusterRole", "ServiceAccount"}
    client.CoreV1Api(api_client).create_namespace({"metadata": {"name": "dra-system"}})
    dyn = dynamic.DynamicClient(api_client)
    for doc in docs:
        res = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        ns = doc["metadata"].get("namespace", "dra-system") if res.namespaced else None
        dyn.server_side_apply(res, body=doc, namespace=ns, field_manager="helm")
    for doc in docs:
        res = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        ns = doc["metadata"].get("namespace", "dra-system") if res.namespaced else None
        stored = res.get(name=doc["metadata"]["name"], namespace=ns)
        assert stored.metadata.uid, doc["kind"]
