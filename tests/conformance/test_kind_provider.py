"""The kind provider drives docker, kind, helm and kubectl in the right order and cleans up after itself.

The tools are recording stand-ins (tests/support/standins/): real processes on PATH that log their argv and
emulate just enough output. `make` is the real one, so the image build goes through
deployments/container/Makefile exactly as `make conformance` runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from conformance.profiles import load_profile, parse_profile
from conformance.providers.base import ProviderConfig, ProviderError
from conformance.providers.kind import (
    CONTAINER_DIR,
    MOCK_GPUS_CONFIG,
    REFERENCE_CHART,
    REPO_ROOT,
    KindProvider,
    nvkind_config,
)

STANDINS = Path(__file__).resolve().parent.parent / "support" / "standins"
CLUSTER = "gpu-share-conformance"
IMAGE = "localhost/gpu-sharing-dra-driver:conformance"

REFERENCE_PROFILE = {
    "name": "reference",
    "driver": "gpu.sharing.example.dev",
    "deviceClass": "gpu.sharing.example.dev",
    "install": {
        "method": "chart",
        "chart": "deployments/helm/gpu-sharing-dra-driver",
        "release": "gpu-sharing-dra-driver",
        "namespace": "gpu-sharing-dra-driver",
    },
    "claims": {
        "sharing": True,
        "requestPolicy": "range",
        "visibility": {"method": "env", "env": {"GPU_DEVICE_{index}": "{uuid}"}},
    },
}


class Tools:
    """The stand-ins' shared state: the command log, kind's cluster list, failure injection."""

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tmp = tmp
        self.log = tmp / "commands.jsonl"
        self.state = tmp / "state"
        self.state.mkdir()
        self.bin = tmp / "bin"
        self.bin.mkdir()
        for tool in ("kind", "docker", "helm", "kubectl", "nvidia-smi"):
            (self.bin / tool).symlink_to(STANDINS / tool)
        self.monkeypatch = monkeypatch
        make = shutil.which("make")
        assert make, "these tests need GNU make"
        # Only the stand-ins, make and the shell's basics: a real docker or kind here is never reached.
        monkeypatch.setenv("PATH", os.pathsep.join([str(self.bin), str(Path(make).parent), "/bin"]))
        monkeypatch.setenv("STANDIN_PYTHON", sys.executable)
        monkeypatch.setenv("STANDIN_LOG", str(self.log))
        monkeypatch.setenv("STANDIN_STATE", str(self.state))
        for name in (
            "STANDIN_FAIL",
            "STANDIN_DOCKER_DOWN",
            "STANDIN_GPUS",
            "KIND_CLUSTER_NAME",
            "KIND_NODE_IMAGE",
            "KIND_EXPORT_LOGS",
            "IMAGE_NAME",
            "IMAGE_TAG",
            "STANDIN_LOCAL_IMAGES",
            "STANDIN_KIND_VERSION",
        ):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.chdir(tmp)  # pytest-kind-ng makes .pytest-kind/ in the working directory

    def remove(self, tool: str) -> None:
        (self.bin / tool).unlink()

    def fail(self, *prefixes: str) -> None:
        self.monkeypatch.setenv("STANDIN_FAIL", ",".join(prefixes))

    def commands(self) -> list[str]:
        """Each recorded command as one string, with this test's temporary paths shown as <tmp>."""
        if not self.log.exists():
            return []
        out = []
        for line in self.log.read_text().splitlines():
            entry = json.loads(line)
            text = " ".join([entry["tool"], *entry["argv"]])
            out.append(text.replace(str(self.tmp), "<tmp>").replace(str(REPO_ROOT), "<repo>"))
        return out

    def clusters(self) -> list[str]:
        path = self.state / "clusters"
        return path.read_text().split() if path.exists() else []


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Tools:
    return Tools(tmp_path, monkeypatch)


def make_config(tmp: Path, profile: dict | None = None, **kw: object) -> ProviderConfig:
    return ProviderConfig(
        profile=parse_profile(profile or REFERENCE_PROFILE, "reference.yaml"), work_dir=tmp / "work", **kw
    )  # type: ignore[arg-type]


K = "--kubeconfig <tmp>/work/kubeconfig"
PREFLIGHT = ["docker info --format {{.ServerVersion}}", "kind version", "kind get clusters"]
BUILD = [
    "docker build --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm --build-arg VERSION=v0.1.0 "
    f"-t {IMAGE} -f <repo>/deployments/container/Dockerfile <repo>"
]
CREATE = [
    "kind get clusters",
    f"kind create cluster --name={CLUSTER} --kubeconfig=<tmp>/work/kubeconfig "
    "--config <repo>/conformance/data/kind-config/mock-gpus.yaml",
    f"kind get nodes --name {CLUSTER}",
    f"kubectl {K} wait --for=condition=Ready node --all --timeout=300s",
    f"kubectl {K} version -o json",
]
DEPLOY = [
    f"kind load docker-image --name {CLUSTER} {IMAGE}",
    "helm install gpu-sharing-dra-driver <repo>/deployments/helm/gpu-sharing-dra-driver "
    f"--namespace gpu-sharing-dra-driver --create-namespace {K} "
    "--values <tmp>/work/driver-values.yaml --wait --timeout 5m0s",
]
UNINSTALL = [
    f"helm uninstall gpu-sharing-dra-driver --namespace gpu-sharing-dra-driver {K} --wait --timeout 5m0s"
]
DELETE = [f"kind delete cluster --name={CLUSTER} --kubeconfig=<tmp>/work/kubeconfig"]


def test_full_run_builds_creates_loads_installs_then_uninstalls_and_deletes(tools: Tools) -> None:
    provider = KindProvider(make_config(tools.tmp))
    handle = provider.start()
    assert handle.provider == "kind" and not handle.simulated
    assert handle.kubernetes_version == "v1.35.1"
    assert handle.nodes == (f"{CLUSTER}-worker", f"{CLUSTER}-worker2")
    assert handle.details["nodeImage"] == "kindest/node:v1.35.1"
    assert tools.clusters() == [CLUSTER]
    deployment = provider.deploy_driver()
    assert deployment.installed_by_suite and deployment.image == IMAGE
    provider.teardown_driver()
    provider.stop()
    provider.stop()  # twice is harmless
    assert tools.commands() == PREFLIGHT + BUILD + CREATE + DEPLOY + UNINSTALL + DELETE
    assert tools.clusters() == []


def test_chart_values_point_at_the_loaded_image_and_the_mock_gpu_profile(tools: Tools) -> None:
    profile = {**REFERENCE_PROFILE, "install": {**REFERENCE_PROFILE["install"], "values": {"sharing": True}}}
    with KindProvider(make_config(tools.tmp, profile, gpus="mixed")) as provider:
        provider.start()
        provider.deploy_driver()
        values = yaml.safe_load((tools.tmp / "work" / "driver-values.yaml").read_text())
    assert values == {
        "sharing": True,
        "driverName": "gpu.sharing.example.dev",
        "image": {
            "repository": "localhost/gpu-sharing-dra-driver",
            "tag": "conformance",
            "pullPolicy": "Never",
        },
        "gpus": {"source": "mock", "mockProfile": "mixed"},
    }


@pytest.mark.parametrize(
    "tool, hint",
    [
        ("docker", "install Docker"),
        ("kind", "install kind v0.31.0"),
        ("helm", "install Helm 3"),
    ],
)
def test_missing_tool_stops_with_the_fix_before_anything_runs(tools: Tools, tool: str, hint: str) -> None:
    tools.remove(tool)
    provider = KindProvider(make_config(tools.tmp))
    with pytest.raises(ProviderError, match=rf"^{tool} was not found on PATH.*; {hint}") as err:
        provider.start()
    assert err.value.args[0].count(";") == 1
    provider.stop()
    assert not any(c.startswith(("kind create", "docker build")) for c in tools.commands())


def test_stopped_docker_daemon_is_reported_with_the_fix(
    tools: Tools, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STANDIN_DOCKER_DOWN", "1")
    provider = KindProvider(make_config(tools.tmp))
    with pytest.raises(ProviderError, match=r"Is the docker daemon running\?\); start Docker"):
        provider.start()
    assert tools.commands() == ["docker info --format {{.ServerVersion}}"]


def test_too_old_kind_is_rejected(tools: Tools, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STANDIN_KIND_VERSION", "kind v0.17.0 go1.19.2 linux/amd64")
    with pytest.raises(ProviderError, match=r"need kind v0\.30\.0 or newer; install kind v0\.31\.0"):
        KindProvider(make_config(tools.tmp)).start()


def test_existing_cluster_of_the_same_name_is_neither_reused_nor_deleted(tools: Tools) -> None:
    (tools.state / "clusters").write_text(f"{CLUSTER}\n")
    provider = KindProvider(make_config(tools.tmp))
    with pytest.raises(
        ProviderError,
        match=rf"a kind cluster named '{CLUSTER}' already exists.*"
        rf"kind delete cluster --name {CLUSTER}",
    ):
        provider.start()
    provider.stop()
    assert tools.commands() == PREFLIGHT
    assert tools.clusters() == [CLUSTER]


def test_image_build_failure_stops_before_any_cluster_exists(tools: Tools) -> None:
    tools.fail("docker build")
    provider = KindProvider(make_config(tools.tmp))
    with pytest.raises(
        ProviderError, match=r"building the driver image .* failed \(exit 2: .*no cluster was created"
    ):
        provider.start()
    provider.stop()
    assert tools.commands() == PREFLIGHT + BUILD
    assert tools.clusters() == []


def test_failure_after_cluster_creation_deletes_the_cluster(tools: Tools) -> None:
    tools.fail("kubectl wait")
    provider = KindProvider(make_config(tools.tmp))
    with pytest.raises(ProviderError, match=r"waiting up to 300 s for every kind node to be Ready failed"):
        provider.start()
    assert tools.commands() == PREFLIGHT + BUILD + CREATE[:4] + DELETE
    assert tools.clusters() == []
    provider.stop()
    assert tools.commands()[-1] == DELETE[0]  # no second delete


def test_keep_cluster_leaves_the_cluster_after_a_failure(tools: Tools) -> None:
    tools.fail("kubectl wait")
    provider = KindProvider(make_config(tools.tmp, keep_cluster=True))
    with pytest.raises(ProviderError):
        provider.start()
    provider.stop()
    assert not any(c.startswith("kind delete") for c in tools.commands())
    assert tools.clusters() == [CLUSTER]


def test_chart_value_of_the_wrong_type_stops_naming_the_field_and_the_cluster_goes(tools: Tools) -> None:
    pytest.importorskip(
        "helm_python",
        reason="the helm stand-in renders with helm-python-sdk (linux x86_64, macOS arm64 only)",
    )
    profile = {**REFERENCE_PROFILE, "install": {**REFERENCE_PROFILE["install"], "values": {"sharing": "yes"}}}
    provider = KindProvider(make_config(tools.tmp, profile))
    provider.start()
    with pytest.raises(
        ProviderError,
        match=r"helm install of .* failed \(exit 1: .*at '/sharing': got string, "
        r"want boolean\); fix the chart value",
    ):
        provider.deploy_driver()
    provider.teardown_driver()
    provider.stop()
    assert tools.commands() == PREFLIGHT + BUILD + CREATE + DEPLOY + UNINSTALL + DELETE
    assert tools.clusters() == []


def test_export_logs_before_delete_when_asked(tools: Tools, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIND_EXPORT_LOGS", str(tools.tmp / "reports" / "kind-logs"))
    with KindProvider(make_config(tools.tmp)) as provider:
        provider.start()
    assert tools.commands()[-2:] == [f"kind export logs <tmp>/reports/kind-logs --name {CLUSTER}", DELETE[0]]


def test_real_gpus_get_one_dev_null_mount_each_and_the_nvidia_runtime(
    tools: Tools, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STANDIN_GPUS", "2")
    with KindProvider(make_config(tools.tmp, gpus="nvml")) as provider:
        handle = provider.start()
        provider.deploy_driver()
        values = yaml.safe_load((tools.tmp / "work" / "driver-values.yaml").read_text())
    commands = tools.commands()
    assert commands[commands.index("nvidia-smi -L") + 1 :][:4] == [
        "kind get clusters",
        f"kind create cluster --name={CLUSTER} --kubeconfig=<tmp>/work/kubeconfig "
        "--config <tmp>/work/kind-real-gpus.yaml",
        f"kind get nodes --name {CLUSTER}",
        f"docker exec -i {CLUSTER}-worker bash -s",
    ]
    config = yaml.safe_load((tools.tmp / "work" / "kind-real-gpus.yaml").read_text())
    worker = next(n for n in config["nodes"] if n["role"] == "worker")
    assert worker["extraMounts"] == [
        {"hostPath": "/dev/null", "containerPath": "/var/run/nvidia-container-devices/0"},
        {"hostPath": "/dev/null", "containerPath": "/var/run/nvidia-container-devices/1"},
    ]
    assert values["gpus"] == {"source": "nvml"}
    assert handle.details["gpus"] == "nvml"


def test_real_gpus_without_a_gpu_stop_before_the_cluster(tools: Tools) -> None:
    with pytest.raises(ProviderError, match=r"nvidia-smi -L \(listing this machine's GPUs\) failed"):
        KindProvider(make_config(tools.tmp, gpus="nvml")).start()
    assert tools.clusters() == []


def test_nvkind_config_replaces_only_the_gpu_mounts() -> None:
    base = {
        "nodes": [
            {"role": "control-plane"},
            {
                "role": "worker",
                "extraMounts": [
                    {"hostPath": "/data", "containerPath": "/data"},
                    {"hostPath": "/dev/null", "containerPath": "/var/run/nvidia-container-devices/0"},
                ],
            },
        ]
    }
    out = nvkind_config(base, 3)
    assert [m["containerPath"] for m in out["nodes"][1]["extraMounts"]] == [
        "/data",
        *(f"/var/run/nvidia-container-devices/{i}" for i in range(3)),
    ]
    assert len(base["nodes"][1]["extraMounts"]) == 2  # the input is not modified
    with pytest.raises(ProviderError, match="listed no GPU"):
        nvkind_config(base, 0)


def test_restart_deletes_the_driver_pod_on_that_node_and_logs_are_per_node(
    tools: Tools, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STANDIN_DRIVER_NODES", f"{CLUSTER}-worker,{CLUSTER}-worker2")
    with KindProvider(make_config(tools.tmp)) as provider:
        provider.start()
        provider.deploy_driver()
        provider.restart_driver(f"{CLUSTER}-worker2")
        logs = provider.driver_logs(f"{CLUSTER}-worker")
        all_logs = provider.driver_logs()
    selector = (
        "app.kubernetes.io/name=gpu-sharing-dra-driver,app.kubernetes.io/instance=gpu-sharing-dra-driver"
    )
    assert (
        f"kubectl {K} delete pod --namespace gpu-sharing-dra-driver -l {selector} "
        f"--field-selector spec.nodeName={CLUSTER}-worker2 --wait=true --timeout=120s"
    ) in tools.commands()
    assert logs == {f"{CLUSTER}-worker": f"log of driver-{CLUSTER}-worker\n"}
    assert set(all_logs) == {f"{CLUSTER}-worker", f"{CLUSTER}-worker2"}


def test_vendor_chart_with_a_published_image_is_not_built_or_loaded(tools: Tools) -> None:
    vendor = {
        **REFERENCE_PROFILE,
        "install": {
            "method": "vendor-chart",
            "chart": "nvidia/nvidia-dra-driver-gpu",
            "release": "nvidia-dra-driver-gpu",
            "namespace": "nvidia-dra-driver-gpu",
            "podSelector": "app.kubernetes.io/name=nvidia-dra-driver-gpu",
            "image": {"repository": "ghcr.io/k3k8/k8s-dra-driver-gpu", "tag": "gpu-sharing-v1"},
            "values": {"resources": {"gpus": {"enabled": True}}, "gpuResourcesEnabledOverride": True},
        },
    }
    with KindProvider(make_config(tools.tmp, vendor)) as provider:
        provider.start()
        provider.deploy_driver()
        values = yaml.safe_load((tools.tmp / "work" / "driver-values.yaml").read_text())
    commands = tools.commands()
    assert not any(c.startswith(("docker build", "kind load")) for c in commands)
    assert "docker image inspect ghcr.io/k3k8/k8s-dra-driver-gpu:gpu-sharing-v1" in commands
    assert any(
        c.startswith("helm install nvidia-dra-driver-gpu nvidia/nvidia-dra-driver-gpu ") for c in commands
    )
    assert values == {
        "resources": {"gpus": {"enabled": True}},
        "gpuResourcesEnabledOverride": True,
        "image": {"repository": "ghcr.io/k3k8/k8s-dra-driver-gpu", "tag": "gpu-sharing-v1"},
    }


def test_preinstalled_profile_is_refused_because_kind_makes_a_new_cluster(tmp_path: Path) -> None:
    profile = {**REFERENCE_PROFILE, "install": {"method": "preinstalled"}}
    with pytest.raises(ProviderError, match=r"use CLUSTER=existing"):
        KindProvider(make_config(tmp_path, profile))


def test_paths_the_provider_uses_exist() -> None:
    assert MOCK_GPUS_CONFIG.is_file()
    assert (REFERENCE_CHART / "Chart.yaml").is_file()
    assert (CONTAINER_DIR / "Makefile").is_file()


def test_reference_profile_builds_and_loads_the_image_it_names(tools: Tools) -> None:
    profile = load_profile("reference")
    config = ProviderConfig(profile=profile, work_dir=tools.tmp / "work")
    image = f"{profile.install.image_repository}:{profile.install.image_tag}"
    with KindProvider(config) as provider:
        provider.start()
        deployment = provider.deploy_driver()
    assert deployment.image == image
    commands = tools.commands()
    assert any(c.startswith("docker build ") and f" -t {image} " in c for c in commands)
    assert f"kind load docker-image --name {CLUSTER} {image}" in commands
    assert commands[-1] == DELETE[0]


def test_image_name_from_the_environment_wins(tools: Tools, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGE_NAME", "ghcr.io/me/driver")
    monkeypatch.setenv("IMAGE_TAG", "pr-7")
    with KindProvider(make_config(tools.tmp)) as provider:
        provider.start()
        assert provider.deploy_driver().image == "ghcr.io/me/driver:pr-7"
