"""The existing provider: a cluster someone else runs (GPU runners, real clusters).

It never creates or deletes a cluster, and only touches namespaces the suite created plus, when the
profile says the suite installs the driver, that Helm release (conformance/providers/helm.py, the deployer
it shares with kind).
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException

from conformance.providers.base import (
    ClusterHandle,
    DriverDeployment,
    Provider,
    ProviderConfig,
    ProviderError,
)
from conformance.providers.helm import HelmDeployer, profile_values


class ExistingProvider(Provider):
    name = "existing"
    simulated = False

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        self._helm: HelmDeployer | None = None  # once deploy_driver began the install
        self._kube: Any = None

    def start(self) -> ClusterHandle:
        kc = self.config.kubeconfig
        if kc is None or not Path(kc).is_file():
            raise ProviderError(f"kubeconfig {kc} does not exist; pass --kubeconfig with an existing file.")
        from conformance.kube import Kube, items

        self._kube = Kube.from_kubeconfig(Path(kc))
        try:
            nodes, _ = items(self._kube.core.list_node)
        except ApiException as exc:
            raise ProviderError(
                f"listing the cluster's nodes failed ({exc.status} {exc.reason}); "
                "the kubeconfig needs rights to list nodes."
            ) from None
        except Exception as exc:
            raise ProviderError(
                f"cannot reach the cluster in {kc} ({type(exc).__name__}); check "
                "that it runs and that the kubeconfig points at it."
            ) from None
        # Which nodes carry GPUs is the driver's business: the suite learns it from the driver's pods
        # (driver_nodes) or, failing that, from its slices; the handle lists every node for the report.
        return ClusterHandle(
            provider=self.name,
            kubeconfig=Path(kc),
            kubernetes_version="",
            simulated=False,
            nodes=tuple(n["metadata"]["name"] for n in nodes),
        )

    def driver_nodes(self) -> tuple[str, ...]:
        if not self.config.profile.install.pod_selector:
            return ()
        try:
            pods = self._driver_pods(None)
        except (ProviderError, ApiException):
            return ()
        return tuple(sorted({n for p in pods if (n := (p.get("spec") or {}).get("nodeName"))}))

    def deploy_driver(self) -> DriverDeployment:
        inst = self.config.profile.install
        if inst.method == "preinstalled":
            return DriverDeployment(driver_name=self.config.profile.driver, installed_by_suite=False)
        helm = shutil.which("helm")
        if not helm:
            raise ProviderError(
                f"driver profile {self.config.profile.name!r} installs a chart but "
                f"helm is not on "
                "PATH; install helm, or install the driver yourself and set install.method: "
                "preinstalled."
            )
        assert self.config.kubeconfig is not None  # start() checked it
        # The cluster may hold this release from an earlier run: upgrade it rather than fail.
        self._helm = HelmDeployer(
            helm=helm,
            kubeconfig=Path(self.config.kubeconfig),
            release=inst.release or self.config.profile.name,
            namespace=inst.namespace or self.config.profile.name,
            chart=inst.chart,
            values_file=self.config.work_dir / "driver-values.yaml",
            install_verb=("upgrade", "--install"),
            profile_source=self.config.profile.source or self.config.profile.name,
        )
        self._helm.install(profile_values(inst))
        image = f"{inst.image_repository}:{inst.image_tag}" if inst.image_repository else ""
        return DriverDeployment(
            driver_name=self.config.profile.driver,
            image=image,
            installed_by_suite=True,
            details=self._helm.details(),
        )

    def teardown_driver(self) -> None:
        if self._helm is not None:
            self._helm.uninstall()

    def _driver_pods(self, node: str | None) -> list[dict[str, Any]]:
        from conformance.kube import items

        inst = self.config.profile.install
        if not inst.pod_selector:
            raise ProviderError(
                f"driver profile {self.config.profile.name!r} has no "
                f"install.podSelector; add "
                "the label selector of the driver's kubelet-plugin pods."
            )
        kw: dict[str, Any] = {"label_selector": inst.pod_selector}
        if node:
            kw["field_selector"] = f"spec.nodeName={node}"
        pods, _ = items(self._kube.core.list_pod_for_all_namespaces, **kw)
        return pods

    def restart_driver(self, node: str) -> None:
        from conformance.observe import wait_for

        pods = self._driver_pods(node)
        if not pods:
            raise ProviderError(f"no driver pod ({self.config.profile.install.pod_selector}) runs on {node}.")
        uids = {p["metadata"]["uid"] for p in pods}
        for p in pods:
            self._kube.core.delete_namespaced_pod(p["metadata"]["name"], p["metadata"]["namespace"])
        wait_for(
            self._kube.core.list_pod_for_all_namespaces,
            lambda st: True if not uids & {o["metadata"]["uid"] for o in st.values()} else None,
            timeout=120,
            what=f"the driver pod on {node} to be deleted",
            label_selector=self.config.profile.install.pod_selector,
        )

    def driver_logs(self, node: str | None = None, tail: int = 200) -> dict[str, str]:
        out: dict[str, str] = {}
        with contextlib.suppress(ProviderError, ApiException):
            for p in self._driver_pods(node):
                meta = p["metadata"]
                with contextlib.suppress(ApiException):
                    out[(p.get("spec") or {}).get("nodeName", meta["name"])] = (
                        self._kube.core.read_namespaced_pod_log(
                            meta["name"], meta["namespace"], tail_lines=tail, _request_timeout=30
                        )
                    )
        return out

    def stop(self) -> None:
        if self._kube is not None:
            self._kube.close()
            self._kube = None
