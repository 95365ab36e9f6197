"""The local provider: a real Kubernetes control plane from local processes, the sim's nodes.

``--cluster local`` starts etcd, kube-apiserver, kube-controller-manager and kube-scheduler of a pinned
release (``localkube``; binaries from ``make kube-bin``) on loopback with real authentication, then the
sim's kubelets as clients of that API server (``python -m sim --apiserver-kubeconfig``), each with its
own node identity, running the profile's driver through the launch contract. The scheduler, the claim
controller, admission and validation are upstream's; only the nodes are simulated, and the report says
so. Everything the run started stops with it: the sim watches the suite's pipe, and each control-plane
process gets SIGKILL when the suite dies (parent-death signal).
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import sys

from conformance.config import DEFAULT_MOCK_GPUS
from conformance.providers.base import ClusterHandle, InputError, ProviderConfig, ProviderError
from conformance.providers.sim import SimProvider
from localkube import versions
from localkube.controlplane import ControlPlane, ControlPlaneError
from sim.launcher import sim_command


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


class LocalProvider(SimProvider):
    name = "local"
    simulated = True  # the nodes are: not a conformance claim yet

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        try:
            self.release = versions.resolve(config.kube_version)
        except versions.VersionError as exc:
            raise ProviderError(str(exc)) from None
        self.control_dir = config.work_dir / "control-plane"
        self.nodes_dir = self.control_dir / "nodes"
        self.control: ControlPlane | None = None

    def start(self) -> ClusterHandle:
        self.control = ControlPlane(
            self.release,
            self.control_dir,
            feature_gates=dict(self.config.feature_gates),
            nodes=tuple(self.config.nodes),
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
        try:
            endpoints = self.control.start()
        except ControlPlaneError as exc:
            # A component that does not start (a port taken, a flag refused, a broken build) is what the
            # machine gives the run, not the driver's doing and not an interruption: exit 4 with its words.
            self.control = None
            self._stop_control_plane()
            raise InputError(str(exc)) from None
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

    def stop(self) -> None:
        try:
            super().stop()
        finally:
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
