"""The driver deployer for real clusters: one Helm release of the driver's chart, for kind and existing.

A cluster provider (kind, existing) brings the cluster; this deploys the driver under test into it and
takes it out again, the same way on both: the profile's ``install.values`` (plus what the provider adds,
e.g. the image kind loaded) are written to a values file, so YAML types reach the chart as the profile
wrote them, then ``helm <install> RELEASE CHART --namespace NS --create-namespace --kubeconfig KC
--values FILE --wait --timeout 5m0s``; teardown is ``helm uninstall`` of that release only. A failure is
a ProviderError that quotes Helm's last line and says what to fix.

What stays with the providers is what differs for a reason: kind makes a fresh cluster, so it installs
(``install``); an existing cluster may hold a release from an earlier run, so it upgrades or installs
(``upgrade --install``). Release and namespace defaults are the provider's too.
"""

from __future__ import annotations

import logging
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from conformance.providers.base import ProviderError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
# The project's own chart: a profile that installs it gets the image built from this checkout.
REFERENCE_CHART = REPO_ROOT / "deployments" / "helm" / "gpu-sharing-dra-driver"
# The release a profile that names none gets, and how its kubelet-plugin pods are found (kind and local).
DEFAULT_RELEASE = "gpu-sharing-dra-driver"


def reference_pod_selector(release: str) -> str:
    return f"app.kubernetes.io/name=gpu-sharing-dra-driver,app.kubernetes.io/instance={release}"


# helm's own bound for --wait; the subprocess gets longer, so helm reports the timeout itself.
HELM_TIMEOUT = "5m0s"
COMMAND_TIMEOUT_S = 1800  # an image build or a node setup (apt) on a slow runner


def last_line(text: str) -> str:
    """The most telling line of a tool's output: the last one that is not make's own "Error N" trailer."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    telling = [line for line in lines if not re.match(r"^make(\[\d+\])?: ", line)]
    return (telling or lines or ["(no output)"])[-1]


def run_tool(
    argv: Sequence[str],
    what: str,
    fix: str,
    *,
    timeout: float = COMMAND_TIMEOUT_S,
    stdin: Any = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise ProviderError naming what failed, the tool's last words and the
    fix. Output is kept, not streamed, so the message can quote it."""
    log.info("provider: %s", " ".join(argv))
    try:
        done = subprocess.run(
            list(argv), stdin=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ProviderError(
            f"{what} did not finish within {int(timeout)} s ({' '.join(argv)}); {fix}."
        ) from exc
    if check and done.returncode != 0:
        raise ProviderError(
            f"{what} failed (exit {done.returncode}: {last_line(done.stderr or done.stdout)}); {fix}."
        )
    return done


def resolve_chart(chart: str) -> Path | str:
    """The profile's install.chart as helm takes it: a path relative to the checkout, resolved; anything
    that is not a path here (repo/chart, oci://...) as is, for helm to resolve."""
    if not chart:
        return REFERENCE_CHART
    path = Path(chart)
    if not path.is_absolute():
        path = REPO_ROOT / path
    return path.resolve() if path.exists() else chart


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@dataclass
class HelmDeployer:
    """One Helm release of the driver under test in the cluster behind ``kubeconfig``."""

    helm: str  # the helm executable
    kubeconfig: Path
    release: str
    namespace: str
    chart: str
    values_file: Path  # written by install(); kept for the report and for a look after a failure
    install_verb: tuple[str, ...] = ("install",)  # ("upgrade", "--install") where a release may exist
    profile_source: str = ""  # named in the fix of a failed install
    installed: bool = False

    def install(self, values: dict[str, Any]) -> None:
        self.values_file.parent.mkdir(parents=True, exist_ok=True)
        self.values_file.write_text(yaml.safe_dump(values, sort_keys=True))
        self.installed = True  # a failed install may still have created objects: uninstall covers both
        run_tool(
            [
                self.helm,
                *self.install_verb,
                self.release,
                self.chart,
                "--namespace",
                self.namespace,
                "--create-namespace",
                "--kubeconfig",
                str(self.kubeconfig),
                "--values",
                str(self.values_file),
                "--wait",
                "--timeout",
                HELM_TIMEOUT,
            ],
            f"helm install of {self.chart}",
            "fix the chart value or the driver error quoted here (values come from the driver profile "
            f"{self.profile_source} and {self.values_file})",
        )

    def uninstall(self) -> None:
        """Remove the release this deployer installed (never one it did not); does not raise."""
        if not self.installed:
            return
        run_tool(
            [
                self.helm,
                "uninstall",
                self.release,
                "--namespace",
                self.namespace,
                "--kubeconfig",
                str(self.kubeconfig),
                "--wait",
                "--timeout",
                HELM_TIMEOUT,
            ],
            f"helm uninstall {self.release}",
            "remove the release by hand (helm uninstall)",
            check=False,
        )
        self.installed = False

    def details(self) -> dict[str, str]:
        return {
            "release": self.release,
            "namespace": self.namespace,
            "chart": self.chart,
            "values": str(self.values_file),
        }


def profile_values(install: Any) -> dict[str, Any]:
    """The profile's ``install.values`` with its ``install.image`` as the chart's image values."""
    values: dict[str, Any] = dict(install.values)
    if install.image_repository:
        image = {"repository": install.image_repository}
        if install.image_tag:
            image["tag"] = install.image_tag
        values = deep_merge(values, {"image": image})
    return values
