"""The suite's one entry point: ``gpu-share-conformance`` (the console script an installed wheel has),
``python -m conformance`` and ``make conformance`` all call :func:`main`.

It runs pytest on the scenarios shipped in the package (found through importlib.resources, so it works
from any directory); the plugin they load reads the options into the run configuration
(conformance/config.py) and checks them before anything starts. A program that has a
:class:`~conformance.config.RunConfig` already calls :func:`run` instead.

Settings come from the command line and, for ``make``, from the environment: the Makefile exports its
variables (CONFORMANCE_CLUSTER, ...) instead of splicing them into a shell line, so a value with a space,
a quote or a ``;`` reaches pytest as one argument and is never run. CONFORMANCE_ARGS is split the way a
shell splits words (shlex), without a shell.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from conformance.config import RunConfig
from conformance.resources import scenarios_dir

SCENARIOS = scenarios_dir()
# environment variable -> the option it sets (empty values are left out)
ENV_OPTIONS = (
    ("CONFORMANCE_CLUSTER", "--cluster"),
    ("CONFORMANCE_DRIVER_PROFILE", "--driver-profile"),
    ("CONFORMANCE_GPUS", "--gpus"),
    ("CONFORMANCE_KUBECONFIG", "--kubeconfig"),
    ("CONFORMANCE_REPORT_DIR", "--report-dir"),
    ("CONFORMANCE_SIM_DRIVER_COMMAND", "--sim-driver-command"),
    ("CONFORMANCE_KUBE_VERSION", "--kube-version"),
    ("CONFORMANCE_NODES", "--nodes"),
)


def pytest_args(argv: list[str], env: dict[str, str] | os._Environ[str]) -> list[str]:
    """The pytest command line for ``argv`` and the CONFORMANCE_* variables in ``env``."""
    args = _base_args()
    for var, flag in ENV_OPTIONS:
        value = env.get(var, "")
        if value:
            args.append(f"{flag}={value}")  # one argument, whatever the value holds
    report_dir = env.get("CONFORMANCE_REPORT_DIR", "")
    if report_dir:
        args.append(f"--junitxml={Path(report_dir) / 'junit.xml'}")
    try:
        extra = shlex.split(env.get("CONFORMANCE_ARGS", ""))
    except ValueError as exc:
        raise SystemExit(
            f"CONFORMANCE_ARGS does not split into arguments ({exc}); fix its quoting."
        ) from None
    return args + extra + list(argv)


def _base_args() -> list[str]:
    # The rootdir is the directory the conformance package sits in (the checkout, or site-packages), so a
    # check's node id reads conformance/scenarios/test_x.py::... however the suite was installed and
    # wherever it runs from. No cache: pytest would write .pytest_cache there, inside an installed
    # package. The scenarios do not use hypothesis; skipping its plugin saves ~0.7 s per run.
    return [
        _relative(SCENARIOS),
        f"--rootdir={_relative(SCENARIOS.parent.parent)}",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:hypothesispytest",
    ]


def run(config: RunConfig, pytest_options: Sequence[str] = ()) -> int:
    """Run the suite with ``config`` (and pytest's own options, e.g. ``["-k", "sharing"]``); return the
    exit code: 0 PASS, 1 FAIL, 3 INCOMPLETE, 4 bad input."""
    return int(pytest.main([*_base_args(), *config.args(), *pytest_options]))


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    try:
        args = pytest_args(sys.argv[1:] if argv is None else argv, os.environ)
    except SystemExit as exc:
        print(f"conformance: {exc}", file=sys.stderr)
        return 4
    return int(pytest.main(args))
