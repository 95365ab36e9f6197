"""``python -m conformance``: the suite's one entry point (``make conformance`` calls it).

Settings come from the command line and, for ``make``, from the environment: the Makefile exports its
variables (CONFORMANCE_CLUSTER, ...) instead of splicing them into a shell line, so a value with a space,
a quote or a ``;`` reaches pytest as one argument and is never run. CONFORMANCE_ARGS is split the way a
shell splits words (shlex), without a shell.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import pytest

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
# environment variable -> the option it sets (empty values are left out)
ENV_OPTIONS = (
    ("CONFORMANCE_CLUSTER", "--cluster"),
    ("CONFORMANCE_DRIVER_PROFILE", "--driver-profile"),
    ("CONFORMANCE_GPUS", "--gpus"),
    ("CONFORMANCE_KUBECONFIG", "--kubeconfig"),
    ("CONFORMANCE_REPORT_DIR", "--report-dir"),
    ("CONFORMANCE_SIM_DRIVER_COMMAND", "--sim-driver-command"),
    ("CONFORMANCE_KUBE_VERSION", "--kube-version"),
)


def pytest_args(argv: list[str], env: dict[str, str] | os._Environ[str]) -> list[str]:
    """The pytest command line for ``argv`` and the CONFORMANCE_* variables in ``env``."""
    # The scenarios do not use hypothesis; skipping its plugin saves ~0.7 s per run.
    args = [_relative(SCENARIOS), "-p", "no:hypothesispytest"]
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
