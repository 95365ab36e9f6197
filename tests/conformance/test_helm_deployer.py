"""The one Helm deployer kind and existing share: its command lines, its values file, its failures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from conformance.profiles import PROFILE_DIR, DriverProfile, parse_profile
from conformance.providers.base import ProviderConfig, ProviderError
from conformance.providers.existing import ExistingProvider
from conformance.providers.helm import HelmDeployer, profile_values

FAKE_HELM = """#!/usr/bin/env python3
import json, os, sys
with open(os.environ["HELM_RECORD"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if os.environ.get("HELM_FAIL"):
    print("Error: INSTALLATION FAILED: values don't meet the specifications", file=sys.stderr)
    sys.exit(1)
"""


@pytest.fixture
def helm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    exe = tmp_path / "bin" / "helm"
    exe.parent.mkdir()
    exe.write_text(FAKE_HELM)
    exe.chmod(0o755)
    monkeypatch.setenv("HELM_RECORD", str(tmp_path / "helm.jsonl"))
    monkeypatch.setenv("PATH", f"{exe.parent}:{os.environ['PATH']}")
    return exe


def _calls(tmp_path: Path) -> list[list[str]]:
    return [json.loads(line) for line in (tmp_path / "helm.jsonl").read_text().splitlines()]


def _profile() -> DriverProfile:
    data = yaml.safe_load((PROFILE_DIR / "reference.yaml").read_text())
    return parse_profile(data, "reference.yaml")


def test_existing_upgrades_or_installs_with_the_profiles_values_then_uninstalls_only_that(
    helm: Path, tmp_path: Path
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("{}")
    provider = ExistingProvider(ProviderConfig(profile=_profile(), work_dir=tmp_path, kubeconfig=kubeconfig))
    deployment = provider.deploy_driver()
    provider.teardown_driver()
    provider.teardown_driver()  # a second teardown does nothing
    values = tmp_path / "driver-values.yaml"
    assert _calls(tmp_path) == [
        [
            "upgrade",
            "--install",
            "gpu-sharing-dra-driver",
            "deployments/helm/gpu-sharing-dra-driver",
            "--namespace",
            "gpu-sharing-dra-driver",
            "--create-namespace",
            "--kubeconfig",
            str(kubeconfig),
            "--values",
            str(values),
            "--wait",
            "--timeout",
            "5m0s",
        ],
        [
            "uninstall",
            "gpu-sharing-dra-driver",
            "--namespace",
            "gpu-sharing-dra-driver",
            "--kubeconfig",
            str(kubeconfig),
            "--wait",
            "--timeout",
            "5m0s",
        ],
    ]
    # Types as the profile wrote them (a --set would have made the bool a string).
    assert yaml.safe_load(values.read_text()) == {
        "image": {"repository": "gpu-sharing-dra-driver", "tag": "dev"},
        "resources": {"gpus": {"enabled": True}},
    }
    assert deployment.image == "gpu-sharing-dra-driver:dev" and deployment.installed_by_suite


def test_a_failed_install_names_the_chart_helms_words_and_the_fix(
    helm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HELM_FAIL", "1")
    deployer = HelmDeployer(
        helm=str(helm),
        kubeconfig=tmp_path / "kc",
        release="r",
        namespace="ns",
        chart="./chart",
        values_file=tmp_path / "v.yaml",
        profile_source="vendor.yaml",
    )
    with pytest.raises(ProviderError) as err:
        deployer.install(profile_values(_profile().install))
    message = str(err.value)
    assert message.startswith("helm install of ./chart failed (exit 1: Error: INSTALLATION FAILED")
    assert "values come from the driver profile vendor.yaml" in message
    # A failed install may have created objects: teardown still uninstalls the release.
    deployer.uninstall()
    assert _calls(tmp_path)[-1][:2] == ["uninstall", "r"]
