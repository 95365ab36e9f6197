"""The Helm chart renders, validates against the official schemas of Kubernetes 1.34-1.37, starts the real
driver's command line correctly, grants exactly the API access the driver's code uses, and rejects bad
values naming the field.

Rendering is offline through helm-python-sdk (Helm's own Go engine); validation is kubernetes-validate in
strict mode (unknown fields are errors).
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes_validate
import pytest
import yaml

from driver.config import parse_config

hp = pytest.importorskip(
    "helm_python", reason="helm-python-sdk (Helm's engine) has wheels only for linux x86_64 and macOS arm64"
)

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deployments" / "helm" / "gpu-sharing-dra-driver"
DRIVER = REPO / "driver"
KUBE_VERSIONS = ("1.34", "1.35", "1.36", "1.37")
RELEASE = NAMESPACE = "gpu-sharing-dra-driver"

# The value sets `make test` checks; the seed's own --set line is one of them.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "seed-set-flags": hp.parse_set_string(
        "image.repository=ghcr.io/k3k8/k8s-dra-driver-gpu,image.tag=gpu-sharing-v1,resources.gpus.enabled=true"
    ),
    "mock-gpus": {
        "gpus": {"source": "mock", "mockProfile": "mixed"},
        "image": {"pullPolicy": "Never"},
        "memoryPolicy": {"min": "256Mi", "step": "256Mi"},
        "metricsPort": 9400,
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
    "nvml": {
        "gpus": {"source": "nvml"},
        "nvml": {"runtimeClassName": "nvidia"},
        "removeSlicesOnExit": True,
        "logLevel": "DEBUG",
        "extraArgs": ["--metrics-address=127.0.0.1"],
    },
    "sharing-off": {"sharing": False},
    "gpus-disabled": {"resources": {"gpus": {"enabled": False}}},
}


def render(values: dict[str, Any], *, upgrade: bool = False) -> list[dict[str, Any]]:
    with hp.Chart.load(CHART) as chart:
        out = chart.render(
            values, name=RELEASE, namespace=NAMESPACE, is_install=not upgrade, is_upgrade=upgrade
        )
    return [
        doc
        for path, text in sorted(out.items())
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(values) for name, values in VALUE_SETS.items()}


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def daemonset(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (ds,) = by_kind(docs, "DaemonSet")
    return ds


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_every_rendered_object_is_valid_for_kubernetes(
    rendered: dict[str, list[dict[str, Any]]], version: str
) -> None:
    checked = 0
    for name, docs in rendered.items():
        for doc in docs:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                pytest.fail(
                    f"value set {name!r}: {doc['kind']} {doc['metadata']['name']} is invalid for "
                    f"Kubernetes {version} at {'.'.join(map(str, err.path))}: {err.message}"
                )
            checked += 1
    assert checked >= 30


def test_strict_validation_catches_a_misspelt_field() -> None:
    ds = daemonset(render({}))
    ds["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Never"
    with pytest.raises(kubernetes_validate.ValidationError, match="imagePullPolice"):
        kubernetes_validate.validate(ds, "1.34", strict=True)


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_helm_lint_is_clean(version: str) -> None:
    for name, values in VALUE_SETS.items():
        report = hp.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version=f"v{version}.0")
        assert report["errors"] == [] and report["messages"] == [], f"value set {name!r}: {report}"


def test_seed_set_flags_pick_the_image(rendered: dict[str, list[dict[str, Any]]]) -> None:
    container = daemonset(rendered["seed-set-flags"])["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/k3k8/k8s-dra-driver-gpu:gpu-sharing-v1"
    upgraded = daemonset(render(VALUE_SETS["seed-set-flags"], upgrade=True))
    assert upgraded["spec"]["template"]["spec"]["containers"][0]["image"] == container["image"]


def test_default_image_tag_is_the_chart_app_version(rendered: dict[str, list[dict[str, Any]]]) -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    image = daemonset(rendered["default"])["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.endswith(f":{app_version}")


def driver_config_of(docs: list[dict[str, Any]]) -> Any:
    """Run the rendered container args through the real driver's command-line parser."""
    container = daemonset(docs)["spec"]["template"]["spec"]["containers"][0]
    env_names = {e["name"] for e in container["env"]}
    args = [a.replace("$(NODE_NAME)", "node-a") for a in container["args"]]
    assert all("$(" not in a for a in args) and "NODE_NAME" in env_names
    return parse_config(args, environ={})


@pytest.mark.parametrize(
    "name, gpus, sharing, policy, step",
    [
        ("default", "nvml", True, "range", 1 << 20),
        ("mock-gpus", "mixed", True, "range", 256 << 20),
        ("nvml", "nvml", True, "range", 1 << 20),
        ("sharing-off", "nvml", False, "none", 1 << 20),
    ],
)
def test_the_driver_accepts_the_rendered_command_line(
    rendered: dict[str, list[dict[str, Any]]], name: str, gpus: str, sharing: bool, policy: str, step: int
) -> None:
    config = driver_config_of(rendered[name])
    assert (config.node_name, config.gpus, config.sharing, config.memory_policy, config.memory_step) == (
        "node-a",
        gpus,
        sharing,
        policy,
        step,
    )
    assert config.driver_name == "gpu.sharing.example.dev"
    assert config.log_level == ("DEBUG" if name == "nvml" else "INFO")


def test_sockets_cdi_and_checkpoint_live_on_host_paths_at_the_same_path(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["default"]
    config = driver_config_of(docs)
    pod = daemonset(docs)["spec"]["template"]["spec"]
    host = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    # The kubelet opens the registration endpoint by the path the driver reports: it must be the host's.
    assert all(mounts[name] == path for name, path in host.items())
    assert set(host.values()) == {
        "/var/lib/kubelet/plugins_registry",
        "/var/lib/kubelet/plugins/gpu.sharing.example.dev",
        "/var/run/cdi",
        "/var/lib/gpu.sharing.example.dev",
    }
    probe = pod["containers"][0]["readinessProbe"]["exec"]["command"]
    assert probe == ["test", "-S", str(config.registration_socket)]
    for needed in (
        config.registration_socket.parent,
        config.dra_socket.parent,
        config.cdi_dir,
        config.state_dir,
    ):
        assert str(needed) in host.values(), f"{needed} is not on a host path"


def test_nvml_gets_the_nvidia_runtime_and_mock_gpus_keep_it_out(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    nvml = daemonset(rendered["nvml"])["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in nvml["containers"][0]["env"]}
    assert nvml["runtimeClassName"] == "nvidia" and env["NVIDIA_VISIBLE_DEVICES"] == "all"
    mock = daemonset(rendered["mock-gpus"])["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in mock["containers"][0]["env"]}
    assert "runtimeClassName" not in mock and env["NVIDIA_VISIBLE_DEVICES"] == "void"


def test_driver_runs_without_capabilities_or_privilege(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for name in ("default", "mock-gpus", "nvml"):
        sc = daemonset(rendered[name])["spec"]["template"]["spec"]["containers"][0]["securityContext"]
        assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]} and sc["readOnlyRootFilesystem"] is True


def test_container_resources_leave_out_the_gpus_switch(rendered: dict[str, list[dict[str, Any]]]) -> None:
    resources = daemonset(rendered["default"])["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert set(resources) == {"requests", "limits"}


def test_deviceclass_selects_the_driver_gpus(rendered: dict[str, list[dict[str, Any]]]) -> None:
    (dc,) = by_kind(rendered["default"], "DeviceClass")
    assert dc["metadata"]["name"] == "gpu.sharing.example.dev"
    expression = " ".join(dc["spec"]["selectors"][0]["cel"]["expression"].split())
    assert expression == (
        'device.driver == "gpu.sharing.example.dev" && '
        'device.attributes["gpu.sharing.example.dev"].type == "gpu"'
    )


def test_gpus_disabled_installs_no_daemonset_and_no_deviceclass(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    kinds = {d["kind"] for d in rendered["gpus-disabled"]}
    assert "DaemonSet" not in kinds and "DeviceClass" not in kinds and "ClusterRole" in kinds


# ----- RBAC: exactly what driver/ calls -----

_API_GROUPS = {
    "CoreV1Api": "",
    "ResourceV1Api": "resource.k8s.io",
    "EventsV1Api": "events.k8s.io",
    "AppsV1Api": "apps",
    "CoordinationV1Api": "coordination.k8s.io",
}
_VERBS = {
    "create": "create",
    "read": "get",
    "list": "list",
    "replace": "update",
    "patch": "patch",
    "delete": "delete",
    "delete_collection": "deletecollection",
}
_METHOD = re.compile(
    r"^(create|read|list|replace|patch|delete_collection|delete)_(namespaced_)?([a-z_]+?)"
    r"(_for_all_namespaces)?(_status)?$"
)


def _plural(kind: str) -> str:
    word = kind.replace("_", "")
    if word.endswith("class"):
        return word + "es"
    if word.endswith("y"):
        return word[:-1] + "ies"
    return word + "s"


def _api_method_owner() -> dict[str, str]:
    owner: dict[str, str] = {}
    for cls_name, group in _API_GROUPS.items():
        cls = getattr(kubernetes.client, cls_name)
        for name, _ in inspect.getmembers(cls, inspect.isfunction):
            if _METHOD.match(name) and not name.endswith("_with_http_info"):
                owner[name] = group
    return owner


def driver_api_access() -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) for every Kubernetes API call in driver/, found in its syntax tree."""
    owner = _api_method_owner()
    used: set[tuple[str, str, str]] = set()
    for path in DRIVER.rglob("*.py"):
        if path.name.startswith("testing") or "/api/" in path.as_posix():
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute) or node.attr not in owner:
                continue
            verb, kind, status = _METHOD.match(node.attr).group(1, 3, 5)  # type: ignore[union-attr]
            used.add((owner[node.attr], _plural(kind) + ("/status" if status else ""), _VERBS[verb]))
        # A list method handed to watch.Watch().stream() is a watch as well.
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "stream"
                and node.args
                and isinstance(node.args[0], ast.Attribute)
                and node.args[0].attr in owner
            ):
                kind = _METHOD.match(node.args[0].attr).group(3)  # type: ignore[union-attr]
                used.add((owner[node.args[0].attr], _plural(kind), "watch"))
    return used


def test_cluster_role_grants_exactly_what_the_driver_calls(rendered: dict[str, list[dict[str, Any]]]) -> None:
    (role,) = by_kind(rendered["default"], "ClusterRole")
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    used = driver_api_access()
    assert ("resource.k8s.io", "resourceslices", "create") in used  # the scan sees the driver's calls
    missing, unused = sorted(used - granted), sorted(granted - used)
    assert not missing and not unused, (
        f"deployments/helm/gpu-sharing-dra-driver/templates/clusterrole.yaml must grant exactly what driver/ "
        f"calls; add {missing} and remove {unused}"
    )


def test_role_binding_names_the_driver_service_account(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["default"]
    (binding,) = by_kind(docs, "ClusterRoleBinding")
    (account,) = by_kind(docs, "ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
    ]
    assert daemonset(docs)["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]


# ----- values.schema.json -----


@pytest.mark.parametrize(
    "values, field",
    [
        ({"sharing": "yes"}, "at '/sharing': got string, want boolean"),
        ({"image": {"repository": "x", "tag": 2}}, "at '/image/tag': got number, want string"),
        (
            {"resources": {"gpus": {"enabled": "true"}}},
            "at '/resources/gpus/enabled': got string, want boolean",
        ),
        ({"gpus": {"source": "cuda"}}, "at '/gpus/source'"),
        ({"metricsPort": "9400"}, "at '/metricsPort': got string, want integer"),
        ({"memoryPolicy": {"step": "one meg"}}, "at '/memoryPolicy/step'"),
        ({"driverName": "GPU_driver"}, "at '/driverName'"),
        ({"imag": {"repository": "x"}}, "additional properties 'imag' not allowed"),
    ],
)
def test_wrong_values_are_rejected_naming_the_field(values: dict[str, Any], field: str) -> None:
    with pytest.raises(hp.HelmValuesError) as err:
        render(values)
    assert field in str(err.value)


def test_memory_policy_without_sharing_is_refused_with_the_fix() -> None:
    with pytest.raises(hp.HelmRenderError, match=r"memoryPolicy\.min/memoryPolicy\.step need sharing=true"):
        render({"sharing": False, "memoryPolicy": {"step": "1Gi"}})


def test_every_value_in_values_yaml_is_described_by_the_schema() -> None:
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"])
