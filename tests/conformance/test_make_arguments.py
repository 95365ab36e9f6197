"""Make variables and workflow inputs reach pytest as arguments, never through a shell line."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conformance.cli import pytest_args

REPO = Path(__file__).resolve().parents[2]


def make_conformance(tmp: Path, *variables: str) -> subprocess.CompletedProcess[str]:
    make = shutil.which("make")
    assert make
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MAKE", "CONFORMANCE_"))
        and k not in ("GPUS", "DRIVER_PROFILE", "CLUSTER", "KUBECONFIG_PATH", "REPORT_DIR")
    }
    return subprocess.run(
        [
            make,
            "--no-print-directory",
            "-o",
            ".venv/.installed",
            "conformance",
            f"REPORT_DIR={tmp / 'reports'}",
            *variables,
        ],
        cwd=REPO,
        env={**env, "TMPDIR": str(tmp)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_semicolon_runs_nothing_and_a_path_with_a_space_is_one_argument(tmp_path: Path) -> None:
    # The profile (checked first) loads from a path with spaces, so the run gets as far as the kubeconfig,
    # whose ';' commands are part of a path that does not exist.
    spaced = tmp_path / "my profiles"
    spaced.mkdir()
    shutil.copy(REPO / "conformance/data/drivers/reference.yaml", spaced / "vendor profile.yaml")
    marker = tmp_path / "INJECTED"
    done = make_conformance(
        tmp_path,
        f"DRIVER_PROFILE={spaced / 'vendor profile.yaml'}",
        f"KUBECONFIG_PATH=/x;echo INJECTED > {marker};false",
    )
    assert "Error 4" in done.stderr, done.stdout + done.stderr
    assert f"kubeconfig /x;echo INJECTED > {marker};false does not exist" in done.stderr
    assert not marker.exists()
    assert list(tmp_path.glob("gsc-*")) == []


def test_the_entry_point_builds_argv_from_the_environment_without_a_shell() -> None:
    env = {
        "CONFORMANCE_CLUSTER": "sim",
        "CONFORMANCE_KUBECONFIG": "/a dir/k;rm -rf x",
        "CONFORMANCE_REPORT_DIR": "out dir",
        "CONFORMANCE_GPUS": "",
        "CONFORMANCE_ARGS": "-k 'sharing or publish' --wait-timeout=30 ';'",
    }
    args = pytest_args(["-x"], env)
    assert args[args.index("--cluster=sim") :] == [
        "--cluster=sim",
        "--kubeconfig=/a dir/k;rm -rf x",
        "--report-dir=out dir",
        "--junitxml=out dir/junit.xml",
        "-k",
        "sharing or publish",
        "--wait-timeout=30",
        ";",
        "-x",
    ]


def test_unbalanced_quotes_in_conformance_args_are_bad_input() -> None:
    with pytest.raises(SystemExit, match="CONFORMANCE_ARGS does not split"):
        pytest_args([], {"CONFORMANCE_ARGS": "-k 'open"})


def test_no_make_recipe_splices_a_user_variable_into_the_shell() -> None:
    recipes = [line for line in (REPO / "Makefile").read_text().splitlines() if line.startswith("\t")]
    for var in (
        "CLUSTER",
        "DRIVER_PROFILE",
        "GPUS",
        "KUBECONFIG_PATH",
        "REPORT_DIR",
        "CONFORMANCE_ARGS",
        "PYTEST_ARGS",
    ):
        assert not any(f"$({var})" in line for line in recipes), var


@pytest.mark.parametrize(
    "workflow", sorted((REPO / ".github/workflows").glob("*.yaml")), ids=lambda p: p.name
)
def test_workflow_inputs_reach_run_steps_only_through_env(workflow: Path) -> None:
    doc = yaml.safe_load(workflow.read_text())
    for job in doc["jobs"].values():
        for step in job.get("steps", []):
            run = step.get("run", "")
            # An input inlined in run: is spliced into the script; through env: it is only data.
            assert "${{" not in run, f"{workflow.name}: step {step.get('name')!r} inlines an expression"
