"""The local provider: a real Kubernetes control plane from local processes, and nodes.

``--cluster local`` starts etcd, kube-apiserver, kube-controller-manager and kube-scheduler of a pinned
release (``localkube``; binaries from ``make kube-bin``) on loopback with real authentication, then the
sim's kubelets as clients of that API server (``python -m sim --apiserver-kubeconfig``), each with its
own node identity, running the profile's driver through the launch contract. The scheduler, the claim
controller, admission and validation are upstream's; only the nodes are simulated, and the report says
so. Everything the run started stops with it: the sim watches the suite's pipe, and each control-plane
process gets SIGKILL when the suite dies (parent-death signal).

With ``--nodes real`` the nodes are real too (``localkube.nodes``): a kubelet and a containerd v2 per node
(CDI on, runc, a CNI bridge), run by ``python -m localkube.noderun``, which also runs the profile's driver
on every node through the same launch contract, inside the node's mount namespace. The suite's pods run
the project's busybox image, imported into every node (no registry is reachable). Then the report is a
conformance claim: real Kubernetes, local processes.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from conformance.config import DEFAULT_MOCK_GPUS
from conformance.providers.base import (
    ClusterHandle,
    DriverDeployment,
    InputError,
    ProviderConfig,
    ProviderError,
)
from conformance.providers.helm import (
    DEFAULT_RELEASE,
    REFERENCE_CHART,
    REPO_ROOT,
    HelmDeployer,
    deep_merge,
    reference_pod_selector,
    resolve_chart,
)
from conformance.providers.sim import SimProvider
from localkube import images, versions
from localkube.controlplane import ControlPlane, ControlPlaneError
from localkube.noderun import FAILED_MARK, READY_MARK
from localkube.nodes import (
    ClusterPlan,
    NodeConfig,
    NodeError,
    host_problems,
    plan_cluster,
    sweep,
    sweep_stale_bridges,
)
from sim.launcher import sim_command

NODE_READY_TIMEOUT = 90.0
POD_DELETE_TIMEOUT = 120


def check_release(version: str | None) -> str:
    """The pinned release ``--kube-version`` names, once its binaries are built; InputError (exit 4) says
    which releases exist or how to build this one."""
    try:
        release = versions.resolve(version)
    except versions.VersionError as exc:
        raise InputError(f"{exc}.") from None
    missing = versions.missing_binaries(release)
    if missing:
        raise InputError(
            f"--cluster local needs the Kubernetes v{release} binaries, and {versions.bin_dir(release)} "
            f"lacks {', '.join(missing)}; build them once with: make kube-bin "
            f"KUBE_VERSION={versions.minor_of(release)} (needs Go and the Go module proxy)."
        )
    return release


def check_real_nodes(release: str) -> None:
    """InputError (exit 4) naming each thing this machine lacks for --nodes real, and how to get it."""
    problems = host_problems(release or versions.resolve(None))
    try:
        images.find_busybox()
    except images.ImageError as exc:
        problems.append(str(exc).rstrip("."))
    if problems:
        raise InputError(f"--nodes real cannot run here: {'; '.join(problems)}.")


def image_cache() -> Path:
    return versions.cache_root().parent / "images"


class LocalProvider(SimProvider):
    name = "local"
    simulated = True  # unless the nodes are real too (--nodes real)

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        try:
            self.release = versions.resolve(config.kube_version)
        except versions.VersionError as exc:
            raise ProviderError(str(exc)) from None
        self.control_dir = config.work_dir / "control-plane"
        self.nodes_dir = self.control_dir / "nodes"
        self.control: ControlPlane | None = None
        self.real = config.node_kind == "real"
        if self.real:
            self.simulated = False
            self.what = "the local nodes"
            self.serving_mark = READY_MARK
            self.start_timeout = 180.0
            self.plan_path = config.work_dir / "nodes-plan.json"
        self.pod_image = ""
        self.driver_image = ""
        self.cluster: ClusterPlan | None = None
        self.helm: HelmDeployer | None = None
        self._client: Any = None

    def start(self) -> ClusterHandle:
        if self.real:
            return self._start_real()
        self._start_control_plane()
        assert self.control is not None
        endpoints = self.control.endpoints
        self.nodes_dir.mkdir(parents=True, exist_ok=True)
        for node in self.config.nodes:
            shutil.copyfile(self.control.node_kubeconfig(node), self.nodes_dir / f"{node}.kubeconfig")
        try:
            handle = super().start()
        except BaseException:
            self._stop_control_plane()
            raise
        version = f"v{self.release}"
        details = dict(handle.details)
        details.update(
            control_plane=f"real Kubernetes {version} (local processes: etcd, kube-apiserver, "
            "kube-controller-manager, kube-scheduler)",
            nodes="simulated (sim kubelets; the driver runs as a real process)",
            apiserver=endpoints.apiserver,
            control_plane_dir=str(self.control_dir),
        )
        return ClusterHandle(
            provider=self.name,
            kubeconfig=self.kubeconfig,
            kubernetes_version=version,
            simulated=True,
            nodes=handle.nodes,
            details=details,
            banner=f"control plane: real Kubernetes {version}; nodes: simulated. The scheduler, claim "
            "controller, admission and validation are upstream's; the kubelets are the sim's (real "
            "driver processes, mock GPUs). It is not a conformance claim.",
        )

    def command(self) -> list[str]:
        """The sim's own launch line, nodes only: its kubelets are clients of the control plane (each with
        its node's certificate) and serve container logs to the API server over mutual TLS."""
        assert self.launch is not None and self.control is not None
        cfg = self.config
        serving = self.control.kubelet_serving
        return sim_command(
            self.kubeconfig,  # where the sim writes its copy of the admin kubeconfig (the drivers' too)
            cfg.nodes,
            state_dir=self.state_dir,
            driver_spec=self.spec_path,
            gpus=(cfg.gpus or DEFAULT_MOCK_GPUS) if "gpus" in self.launch.placeholders() else None,
            slice_wipe_delay=cfg.slice_wipe_delay,
            extra_args=[
                "--apiserver-kubeconfig",
                str(self.control.endpoints.admin_kubeconfig),
                "--node-kubeconfig-dir",
                str(self.nodes_dir),
                "--kubelet-tls",
                f"{serving.cert},{serving.key},{self.control.ca.cert_path}",
            ],
        )

    # -- real nodes -----------------------------------------------------------------------------------
    def _start_real(self) -> ClusterHandle:
        check_real_nodes(self.release)
        cfg = self.config
        if not self.chart_mode:
            self.launch = self.launch_spec()
        try:
            sweep_stale_bridges()
            self.cluster = plan_cluster(cfg.nodes, self.state_dir)
            self.cluster.save(self.release)
            self.cluster.make_api_bridge()
        except NodeError as exc:
            self.stop()
            raise InputError(f"--nodes real: {exc}") from None
        try:
            # On the run's own bridge, not loopback: pods reach it through the kubernetes Service.
            self._start_control_plane(address=self.cluster.api_ip)
            assert self.control is not None
            shutil.copyfile(self.control.endpoints.admin_kubeconfig, self.kubeconfig)
            self._write_plan()
            cmd = [sys.executable, "-m", "localkube.noderun", "--plan", str(self.plan_path)]
            if self.launch is not None:
                self.spec_path.write_text(json.dumps(self.launch.to_dict(), indent=2))
                cmd += ["--driver-spec", str(self.spec_path)]
                cmd += ["--kubeconfig", str(self.control.endpoints.admin_kubeconfig)]
                if "gpus" in self.launch.placeholders():
                    cmd += ["--gpus", cfg.gpus or DEFAULT_MOCK_GPUS]
            self.spawn(cmd)
            self._wait_nodes_ready()
            if self.launch is not None:
                self._wait_drivers()
        except BaseException:
            self.stop()
            raise
        version = f"v{self.release}"
        description = (
            f"real Kubernetes {version}, local processes (etcd, kube-apiserver, kube-controller-manager, "
            f"kube-scheduler, kube-proxy; per node a kubelet and containerd v{versions.CONTAINERD} with "
            "runc and a CNI bridge)"
        )
        how = (
            "deployed by its Helm chart as a DaemonSet"
            if self.chart_mode
            else "run through the launch contract in each node's mount namespace"
        )
        return ClusterHandle(
            provider=self.name,
            kubeconfig=self.kubeconfig,
            kubernetes_version=version,
            simulated=False,
            nodes=tuple(cfg.nodes),
            details={
                "control_plane": f"real Kubernetes {version} (local processes)",
                "nodes": f"real (kubelet {version}, containerd v{versions.CONTAINERD}, runc, CNI bridge); "
                f"the driver is {how}",
                "apiserver": self.control.endpoints.apiserver,
                "control_plane_dir": str(self.control_dir),
                "state_dir": str(self.state_dir),
                "driver": str(REFERENCE_CHART)
                if self.chart_mode
                else (self.launch.describe() if self.launch else ""),
            },
            pod_image=self.pod_image,
            description=description,
        )

    @property
    def chart_mode(self) -> bool:
        """The driver goes in through Helm, as on kind: the profile installs this checkout's chart (whose
        image the provider builds here) and no --sim-driver-command replaces the driver."""
        install = self.config.profile.install
        return (
            self.real
            and install.method == "chart"
            and resolve_chart(install.chart) == REFERENCE_CHART
            and not self.config.driver_command
        )

    def _start_control_plane(self, address: str = "127.0.0.1") -> None:
        self.control = ControlPlane(
            self.release,
            self.control_dir,
            feature_gates=dict(self.config.feature_gates),
            nodes=tuple(self.config.nodes),
            progress=self._progress,
            address=address,
        )
        try:
            self.control.start()
        except ControlPlaneError as exc:
            # A component that does not start (a port taken, a flag refused, a broken build) is what the
            # machine gives the run, not the driver's doing and not an interruption: exit 4 with its words.
            self.control = None
            self._stop_control_plane()
            raise InputError(str(exc)) from None

    @staticmethod
    def _progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def _write_plan(self) -> None:
        assert self.control is not None and self.cluster is not None
        cache = image_cache()
        try:
            pause_ref, pause_tar = images.pause_image(versions.node_bin_dir() / versions.PAUSE, cache)
            self.pod_image, pod_tar = images.pod_image(cache)
            tars = [str(pause_tar), str(pod_tar)]
            if self.chart_mode:
                self.driver_image, driver_tar = images.driver_image(REPO_ROOT, cache)
                tars.append(str(driver_tar))
        except (images.ImageError, OSError) as exc:
            raise InputError(f"--nodes real: {exc}") from None
        nodes = []
        for plan in self.cluster.nodes:
            serving = self.control.kubelet_serving_for(plan.name, plan.ip)
            nodes.append(
                replace(
                    plan,
                    kubeconfig=str(self.control.node_kubeconfig(plan.name)),
                    serving_cert=str(serving.cert),
                    serving_key=str(serving.key),
                )
            )
        self.cluster = replace(
            self.cluster,
            nodes=tuple(nodes),
            kube_proxy_kubeconfig=str(self.control.kube_proxy_kubeconfig()),
        )
        config = NodeConfig(
            release=self.release,
            ca_cert=str(self.control.ca.cert_path),
            feature_gates=dict(self.control.gates),
            images=tuple(tars),
            sandbox_image=pause_ref,
        )
        self.plan_path.write_text(json.dumps({"config": asdict(config), "cluster": self.cluster.to_dict()}))

    # -- the driver through its chart (real nodes, chart mode) ---------------------------------------
    def deploy_driver(self) -> DriverDeployment:
        if not self.chart_mode:
            return super().deploy_driver()
        install = self.config.profile.install
        repo, _, tag = self.driver_image.rpartition(":")
        values = deep_merge(
            dict(install.values),
            {
                # The image exists only inside the nodes (imported at their start): never pull it.
                "image": {"repository": repo, "tag": tag, "pullPolicy": "Never"},
                "driverName": self.config.profile.driver,
                "gpus": {"source": "mock", "mockProfile": self.config.gpus or DEFAULT_MOCK_GPUS},
            },
        )
        self.helm = HelmDeployer(
            helm=str(versions.node_bin_dir() / "helm"),
            kubeconfig=self.kubeconfig,
            release=install.release or DEFAULT_RELEASE,
            namespace=install.namespace or install.release or DEFAULT_RELEASE,
            chart=str(REFERENCE_CHART),
            values_file=self.config.work_dir / "driver-values.yaml",
            profile_source=self.config.profile.source or self.config.profile.name,
        )
        self.helm.install(values)
        return DriverDeployment(
            driver_name=self.config.profile.driver,
            image=self.driver_image,
            version=tag,
            installed_by_suite=True,
            details=self.helm.details(),
        )

    def teardown_driver(self) -> None:
        if self.helm is not None:
            self.helm.uninstall()
            self.helm = None

    def _driver_pods(self, node: str | None) -> list[Any]:
        from kubernetes import client

        assert self.helm is not None
        selector = self.config.profile.install.pod_selector or reference_pod_selector(self.helm.release)
        core = client.CoreV1Api(self._api())
        fields = f"spec.nodeName={node}" if node else None
        return list(
            core.list_namespaced_pod(
                self.helm.namespace, label_selector=selector, field_selector=fields
            ).items
        )

    def _api(self) -> Any:
        from kubernetes import config

        if self._client is None:
            self._client = config.new_client_from_config(config_file=str(self.kubeconfig))
        return self._client

    def restart_driver(self, node: str) -> None:
        if not self.chart_mode:
            return super().restart_driver(node)
        from kubernetes import client

        pods = self._driver_pods(node)
        if not pods:
            raise ProviderError(f"no driver pod of the chart runs on node {node}; check the DaemonSet.")
        core = client.CoreV1Api(self._api())
        assert self.helm is not None
        for pod in pods:
            # As kind's restart does (kubectl delete pod --wait): the DaemonSet makes a new one.
            core.delete_namespaced_pod(pod.metadata.name, self.helm.namespace)
            self._wait_pod_gone(core, pod, node)

    def _wait_pod_gone(self, core: Any, pod: Any, node: str) -> None:
        """Until the pod with this uid is gone: read it, then watch from that version for its deletion (the
        read closes the gap a watch alone leaves when the pod went before the watch began)."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        assert self.helm is not None
        name, uid, namespace = pod.metadata.name, pod.metadata.uid, self.helm.namespace
        deadline = time.monotonic() + POD_DELETE_TIMEOUT
        while (left := deadline - time.monotonic()) > 0:
            try:
                current = core.read_namespaced_pod(name, namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return
                raise
            if current.metadata.uid != uid:
                return
            w = watch.Watch()
            for event in w.stream(
                core.list_namespaced_pod,
                namespace,
                field_selector=f"metadata.name={name}",
                resource_version=current.metadata.resource_version,
                timeout_seconds=max(1, int(left)),
            ):
                if event["type"] == "DELETED" and event["object"].metadata.uid == uid:
                    w.stop()
                    return
        raise ProviderError(f"driver pod {name} on {node} was not gone within {POD_DELETE_TIMEOUT}s.")

    def driver_logs(self, node: str | None = None, tail: int = 200) -> dict[str, str]:
        if not self.chart_mode or self.helm is None:
            return super().driver_logs(node, tail)
        from kubernetes import client

        core = client.CoreV1Api(self._api())
        logs: dict[str, str] = {}
        try:
            for pod in self._driver_pods(node):
                logs[pod.spec.node_name] = core.read_namespaced_pod_log(
                    pod.metadata.name, self.helm.namespace, tail_lines=tail
                )
        except Exception as exc:  # diagnostics must not fail the run: say why instead
            logs[node or "*"] = f"could not read the driver pods' logs: {exc}"
        return logs

    def start_failure(self, code: int | None, message: str, last_line: str) -> ProviderError:
        # A node the machine cannot run (a cgroup, a mount, a bridge refused) is bad input: exit 4.
        if FAILED_MARK in last_line:
            return InputError(last_line.split(FAILED_MARK, 1)[1])
        return super().start_failure(code, message, last_line)

    def _wait_nodes_ready(self) -> None:
        """Until every node's Node object says Ready (the scheduler places nothing on a node before)."""
        from kubernetes import client, config, watch

        api = config.new_client_from_config(config_file=str(self.kubeconfig))
        want = set(self.config.nodes)
        deadline = time.monotonic() + NODE_READY_TIMEOUT
        try:
            core = client.CoreV1Api(api)
            while True:
                listed = core.list_node()
                ready = {n.metadata.name for n in listed.items if n.metadata and _node_ready(n)}
                if want <= ready:
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ProviderError(
                        f"nodes {', '.join(sorted(want - ready))} did not become Ready within "
                        f"{NODE_READY_TIMEOUT:.0f}s; see the kubelet logs under {self.state_dir}/<node>/logs."
                    )
                w = watch.Watch()
                for event in w.stream(
                    core.list_node,
                    resource_version=listed.metadata.resource_version if listed.metadata else None,
                    timeout_seconds=max(1, int(left)),
                ):
                    node = event["object"]
                    if _node_ready(node):
                        ready.add(node.metadata.name)
                    if want <= ready:
                        w.stop()
                        return
        finally:
            api.close()

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            if self._client is not None:
                self._client.close()
                self._client = None
            if self.real and not self.config.keep_cluster:
                # A runner that was killed left its nodes: remove what they wrote down about themselves.
                with contextlib.suppress(NodeError, OSError):
                    sweep(self.state_dir)
            if not self.config.keep_cluster:
                self._stop_control_plane()
            elif self.control is not None:
                print(
                    f"local control plane kept running; kubeconfig {self.kubeconfig} "
                    f"(processes: {shlex.join(str(p.proc.pid) for p in self.control.processes if p.proc)})",
                    file=sys.stderr,
                )

    def _stop_control_plane(self) -> None:
        control, self.control = self.control, None
        if control is not None:
            control.stop()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.control_dir)


def _node_ready(node: object) -> bool:
    status = getattr(node, "status", None)
    for cond in getattr(status, "conditions", None) or ():
        if cond.type == "Ready":
            return bool(cond.status == "True")
    return False
