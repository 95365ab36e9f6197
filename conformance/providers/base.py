"""The provider interface: how the suite gets a cluster and the driver under test.

A provider is chosen by ``--cluster`` (sim, kind, existing). The suite only ever talks to the
cluster through the kubeconfig in the handle, so every scenario runs unchanged on all providers;
the provider owns what differs: bringing the cluster up, installing the driver, restarting it,
reading its logs and tearing everything down.

Lifecycle, as driven by ``conformance.bringup``::

    provider = make_provider(config)          # cheap, validates options only
    handle = provider.start()                 # cluster up, kubeconfig written
    deployment = provider.deploy_driver()     # driver under test installed (may be a no-op)
    ... preflight, scenarios (may call restart_driver / driver_logs) ...
    provider.teardown_driver()                # what deploy_driver installed, nothing else
    provider.stop()                           # cluster down unless keep_cluster

``stop`` must be safe to call after a failed or partial ``start`` and more than once.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conformance.profiles import DriverProfile


class ProviderError(RuntimeError):
    """A provider could not do what was asked; the message is one sentence: what and how to fix it."""


class InputError(ProviderError):
    """What the user gave or has cannot run (bad input, exit 4), not an incomplete run: e.g. the local
    provider's binaries that do not start, or a release it cannot build."""


class DriverInputError(InputError):
    """What the user gave cannot run: the driver the profile (or --sim-driver-command) names exited before
    it registered, having published nothing. Bad input (exit 4), not an incomplete run."""


@dataclass(frozen=True)
class ProviderConfig:
    """Everything a provider may need, taken from the command line and the driver profile."""

    profile: DriverProfile
    work_dir: Path  # scratch space owned by this run (kubeconfigs, logs, state)
    kubeconfig: Path | None = None  # --kubeconfig (existing), or where to write one
    gpus: str | None = None  # --gpus: mock GPU profile for kind/sim
    nodes: tuple[str, ...] = ("node-1", "node-2")
    keep_cluster: bool = False  # --keep-cluster
    allow_busy_gpus: bool = False  # existing: start even if GPUs hold allocations
    # sim only: substitute a (broken) driver and emulate apiserver feature gates.
    driver_command: str | None = None
    feature_gates: dict[str, bool] = field(default_factory=dict)
    kube_version: str | None = None
    slice_wipe_delay: float | None = None
    # local: "simulated" (the sim's kubelets) or "real" (kubelet + containerd per node; --nodes real).
    node_kind: str = "simulated"


@dataclass(frozen=True)
class ClusterHandle:
    """What ``start`` returns: enough to talk to the cluster and to label the report."""

    provider: str  # "sim", "local", "kind", "existing"
    kubeconfig: Path
    kubernetes_version: str  # as served by /version, e.g. "v1.36.1"
    simulated: bool  # True only for sim: the report is headed SIMULATED
    nodes: tuple[str, ...]  # nodes expected to run the driver under test
    details: dict[str, str] = field(default_factory=dict)  # free-form, shown in the report
    # The report's banner for a simulated run when the provider knows better than the generic one (local:
    # a real control plane, simulated nodes).
    banner: str = ""
    # The image the suite's pods run instead of the profile's pod.image, where the cluster pulls from no
    # registry (local real nodes: the project's own busybox image, imported into every node).
    pod_image: str = ""
    # One line saying what the cluster is made of, for the report (local: "real Kubernetes v1.36.3, local
    # processes"); empty where the provider's name says enough.
    description: str = ""


@dataclass(frozen=True)
class DriverDeployment:
    """What ``deploy_driver`` installed, for the report and for teardown."""

    driver_name: str
    image: str = ""  # image reference, or "" when not known (sim, preinstalled)
    version: str = ""
    installed_by_suite: bool = False  # False for "already installed": teardown leaves it alone
    details: dict[str, str] = field(default_factory=dict)


class Provider(abc.ABC):
    """One way of obtaining a cluster with the driver under test."""

    name: str = ""
    simulated: bool = False

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config

    @abc.abstractmethod
    def start(self) -> ClusterHandle:
        """Bring the cluster up (or connect to it) and return its handle.

        Raises ProviderError with one clear sentence when the cluster cannot be reached or made.
        """

    @abc.abstractmethod
    def deploy_driver(self) -> DriverDeployment:
        """Install the driver under test as the profile's ``install`` section says.

        Returns once the install command finished; the suite's preflight then waits for the
        driver's ResourceSlices itself. A provider that starts the driver together with the
        cluster (sim) only reports what runs.
        """

    @abc.abstractmethod
    def teardown_driver(self) -> None:
        """Remove what ``deploy_driver`` installed; never touch a driver the suite did not install."""

    @abc.abstractmethod
    def restart_driver(self, node: str) -> None:
        """Restart the driver instance serving ``node`` the way an operator would.

        kind/existing delete the driver's pod on that node (its DaemonSet makes a new one); sim
        kills the driver process (the simulated kubelet starts a new one). Returns once the old
        instance is gone; the caller watches for the new one (registration, slices) itself.
        """

    @abc.abstractmethod
    def driver_logs(self, node: str | None = None, tail: int = 200) -> dict[str, str]:
        """Recent driver log lines per node (all nodes when ``node`` is None), for diagnostics."""

    def driver_nodes(self) -> tuple[str, ...]:
        """Nodes where the driver under test runs, once deployed; () when the handle's nodes are
        exactly those (sim, kind) or when the provider cannot tell (then any node with slices counts)."""
        return ()

    def node_cdi_specs(self, node: str) -> dict[str, dict[str, Any]] | None:
        """The CDI spec files in ``node``'s CDI directory (file name -> parsed spec), or None when the
        provider cannot look; the checks that read them then skip with that reason. Optional."""
        return None

    def container_edits_unapplied(self, node: str) -> str:
        """Why the containers on ``node`` do not get their CDI device nodes and mounts ('' when they do,
        as with any real container runtime); the checks of what a container sees then skip with it."""
        return ""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the cluster and remove everything this provider made, unless keep_cluster is set.

        Safe after a failed start and when called twice.
        """

    def __enter__(self) -> Provider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
