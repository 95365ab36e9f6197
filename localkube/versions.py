"""Which Kubernetes the local provider runs: the pinned release of each supported minor, and the
feature gates DRA consumable capacity needs there."""

from __future__ import annotations

import os
from pathlib import Path

from drakit.gates import DEFAULT_VERSION, gate_defaults

DEFAULT_MINOR = DEFAULT_VERSION
# The newest patch of each minor that the Go module proxy serves (k8s.io/kubernetes) and that builds
# with the staging modules of the same patch (k8s.io/api vX-1.Y.Z ...).
PINNED = {"1.34": "1.34.4", "1.35": "1.35.4", "1.36": "1.36.3", "1.37": "1.37.2"}
# etcd server each release is tested with upstream (its go.mod's etcd client).
ETCD = {"1.34": "3.6.4", "1.35": "3.6.5", "1.36": "3.6.8", "1.37": "3.7.3"}
NEEDED_GATES = ("DynamicResourceAllocation", "DRAConsumableCapacity")
COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
BINARIES = ("etcd", *COMPONENTS)
# Real nodes (--nodes real): the release's kubelet beside the control plane, and a container runtime
# that does not depend on the release (containerd v2: the CRI with CDI, which DRA needs; 1.6 has none).
NODE_COMPONENTS = ("kubelet", "kube-proxy")
CONTAINERD = "2.4.2"
CONTAINERD_BINARIES = ("containerd", "containerd-shim-runc-v2", "ctr")
# Helm installs the reference driver's chart on real nodes, as on kind (helm.sh/helm/v3 from the proxy).
HELM = "3.22.0"
# The pod sandbox's process, built from localkube/pause (no registry serves registry.k8s.io/pause).
PAUSE = "pause"
# Everything make kube-bin puts in node_bin_dir().
NODE_RUNTIME_BINARIES = (*CONTAINERD_BINARIES, PAUSE, "helm")


class VersionError(ValueError):
    """A --kube-version this provider cannot run; the message names the ones it can."""


def resolve(version: str | None) -> str:
    """``1.36`` or ``1.36.3`` or ``v1.36.3`` -> the full pinned release ``1.36.3``."""
    text = (version or DEFAULT_MINOR).strip().removeprefix("v")
    parts = text.split(".")
    minor = ".".join(parts[:2])
    if minor not in PINNED or len(parts) > 3 or (len(parts) == 3 and text != PINNED[minor]):
        known = ", ".join(f"{m} (v{p})" for m, p in PINNED.items())
        raise VersionError(
            f"--kube-version {version!r} is not one the local provider builds; use one of {known}"
        )
    return PINNED[minor]


def minor_of(release: str) -> str:
    return ".".join(release.split(".")[:2])


def feature_gates(release: str) -> dict[str, bool]:
    """Gates every component gets: the ones DRA consumable capacity needs, where the release has them off
    by default (alpha in 1.34 and 1.35; drakit.gates holds the defaults)."""
    defaults = gate_defaults(minor_of(release))
    return {g: True for g in NEEDED_GATES if not defaults[g]}


def cache_root() -> Path:
    """Outside any work tree: ``$GSC_CACHE_DIR`` or ``~/.cache/gpu-share-conformance``."""
    base = os.environ.get("GSC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "gpu-share-conformance"
    )
    return Path(base) / "kube"


def bin_dir(release: str) -> Path:
    return cache_root() / f"v{release}" / "bin"


def missing_binaries(release: str) -> list[str]:
    d = bin_dir(release)
    return [b for b in BINARIES if not os.access(d / b, os.X_OK)]


def node_bin_dir() -> Path:
    return cache_root().parent / "node" / f"containerd-v{CONTAINERD}" / "bin"


def missing_node_binaries(release: str) -> list[str]:
    """What real nodes need beyond the control plane: kubelet, kube-proxy and the node runtime."""
    kube = bin_dir(release)
    node = node_bin_dir()
    missing = [b for b in NODE_COMPONENTS if not os.access(kube / b, os.X_OK)]
    return missing + [b for b in NODE_RUNTIME_BINARIES if not os.access(node / b, os.X_OK)]
