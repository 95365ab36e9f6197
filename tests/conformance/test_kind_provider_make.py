"""`make conformance CLUSTER=kind` end to end against the recording stand-ins for docker, kind, helm and
kubectl: the exact commands it runs, and that it cleans up (or leaves alone) what it should when it stops.

The stand-in cluster's API server does not exist (its kubeconfig points at 127.0.0.1:1), so the suite
stops right after the cluster is up, which is exactly the "failure after creation" path.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STANDINS = Path(__file__).resolve().parent.parent / "support" / "standins"
CLUSTER = "gpu-share-conformance"
EXIT_INCOMPLETE = 3  # conformance.report.EXIT_CODES: the run could not go on, no verdict


def run_conformance(
    tmp: Path, *make_args: str, **env: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bindir = tmp / "bin"
    bindir.mkdir(exist_ok=True)
    for tool in ("kind", "docker", "helm", "kubectl"):
        if not (bindir / tool).exists():
            (bindir / tool).symlink_to(STANDINS / tool)
    (tmp / "state").mkdir(exist_ok=True)
    make = shutil.which("make")
    assert make
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STANDIN_", "KIND_", "IMAGE_", "MAKE")) and k not in ("GPUS", "DRIVER_PROFILE")
    }
    clean.update(
        PATH=os.pathsep.join([str(bindir), str(Path(make).parent), "/bin"]),
        STANDIN_PYTHON=sys.executable,
        STANDIN_LOG=str(tmp / "log.jsonl"),
        STANDIN_STATE=str(tmp / "state"),
        **env,
    )
    # -o: the virtualenv is already set up; `make test` must not reinstall it.
    done = subprocess.run(
        [
            make,
            "--no-print-directory",
            "-o",
            ".venv/.installed",
            "conformance",
            "CLUSTER=kind",
            f"REPORT_DIR={tmp / 'reports'}",
            *make_args,
        ],
        cwd=REPO,
        env=clean,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    log = tmp / "log.jsonl"
    commands = []
    for line in log.read_text().splitlines() if log.exists() else []:
        entry = json.loads(line)
        text = " ".join([entry["tool"], *entry["argv"]]).replace(str(REPO), "<repo>")
        commands.append(re.sub(r"/tmp/gsc-[^/ ]+", "<work>", text))
    return done, commands


def clusters(tmp: Path) -> list[str]:
    path = tmp / "state" / "clusters"
    return path.read_text().split() if path.exists() else []


PREFLIGHT = ["docker info --format {{.ServerVersion}}", "kind version", "kind get clusters"]
BUILD = [
    "docker build --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm --build-arg VERSION=v0.1.0 "
    "-t gpu-sharing-dra-driver:dev -f <repo>/deployments/container/Dockerfile <repo>"
]
CREATE = [
    "kind get clusters",
    f"kind create cluster --name={CLUSTER} --kubeconfig=<work>/kubeconfig "
    "--config <repo>/conformance/data/kind-config/mock-gpus.yaml",
    f"kind get nodes --name {CLUSTER}",
    "kubectl --kubeconfig <work>/kubeconfig wait --for=condition=Ready node --all --timeout=300s",
    "kubectl --kubeconfig <work>/kubeconfig version -o json",
]
DELETE = [f"kind delete cluster --name={CLUSTER} --kubeconfig=<work>/kubeconfig"]


def test_make_conformance_builds_creates_then_deletes_the_cluster_when_the_run_stops(tmp_path: Path) -> None:
    done, commands = run_conformance(tmp_path)
    assert done.returncode != 0 and f"Error {EXIT_INCOMPLETE}" in done.stderr
    assert "cannot reach the cluster at https://127.0.0.1:1" in done.stdout
    assert commands == PREFLIGHT + BUILD + CREATE + DELETE
    assert clusters(tmp_path) == []
    report = json.loads((tmp_path / "reports" / "report.json").read_text())
    assert report["verdict"] == "incomplete" and "cannot reach the cluster" in " ".join(report["incomplete"])


def test_make_conformance_keep_cluster_leaves_it_for_debugging(tmp_path: Path) -> None:
    done, commands = run_conformance(tmp_path, "CONFORMANCE_ARGS=--keep-cluster")
    # A kept cluster keeps its kubeconfig in the run's work dir; this test removes it afterwards.
    for work_dir in set(re.findall(r"/tmp/gsc-[^/ \"]+", (tmp_path / "log.jsonl").read_text())):
        shutil.rmtree(work_dir, ignore_errors=True)
    assert done.returncode != 0
    assert commands == PREFLIGHT + BUILD + CREATE
    assert clusters(tmp_path) == [CLUSTER]


def test_make_conformance_refuses_a_cluster_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "clusters").write_text(f"{CLUSTER}\n")
    done, commands = run_conformance(tmp_path)
    assert done.returncode != 0
    assert f"a kind cluster named '{CLUSTER}' already exists" in done.stdout + done.stderr
    assert commands == PREFLIGHT
    assert clusters(tmp_path) == [CLUSTER]


@pytest.mark.parametrize(
    "failure, expected",
    [
        ("docker build", "building the driver image gpu-sharing-dra-driver:dev"),
        ("docker info", "start Docker"),
    ],
)
def test_make_conformance_stops_before_any_cluster_on_a_broken_machine(
    tmp_path: Path, failure: str, expected: str
) -> None:
    done, commands = run_conformance(tmp_path, STANDIN_FAIL=failure)
    assert done.returncode != 0 and expected in done.stdout + done.stderr
    assert not any(c.startswith("kind create") for c in commands)
    assert clusters(tmp_path) == []
