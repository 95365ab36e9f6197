"""How ``python -m sim`` is started as a process: the one command line its two launchers share.

The suite's sim provider (conformance/providers/sim.py) and the tests' ``running_sim(subprocess=True)``
(sim/testing.py) both run the sim this way, so a flag renamed in sim/__main__.py is renamed here once.
The sim prints ``SERVING_MARK`` and its URL once its kubeconfig is written and it serves.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

SERVING_MARK = "sim: serving"
# The directory that holds the sim, driver and conformance packages (a checkout, or site-packages): the
# sim runs there so that drivers named by module (python -m driver) import from the same tree.
SOURCE_ROOT = Path(__file__).resolve().parent.parent


def sim_command(
    kubeconfig: Path,
    nodes: Iterable[str] = (),
    *,
    state_dir: Path | None = None,
    driver_spec: Path | None = None,
    gpus: str | None = None,
    feature_gates: str = "",
    kube_version: str | None = None,
    slice_wipe_delay: float | None = None,
    extra_args: Iterable[str] = (),
) -> list[str]:
    """``python -m sim`` on a free port (``--port 0``: it prints the URL it got) with these settings; a
    setting left at its default is not passed, so the sim's own default applies."""
    cmd = [sys.executable, "-m", "sim", "--kubeconfig", str(kubeconfig), "--port", "0"]
    names = list(nodes)
    if names:
        cmd += ["--nodes", ",".join(names)]
    if state_dir is not None:
        cmd += ["--state-dir", str(state_dir)]
    if driver_spec is not None:
        cmd += ["--driver-spec", str(driver_spec)]
    if gpus:
        cmd += ["--gpus", gpus]
    if feature_gates:
        cmd += ["--feature-gates", feature_gates]
    if kube_version:
        cmd += ["--kube-version", kube_version]
    if slice_wipe_delay is not None:
        cmd += ["--slice-wipe-delay", str(slice_wipe_delay)]
    return cmd + list(extra_args)


def serving_url(line: str) -> str | None:
    """The URL in the sim's "serving" line, or None for any other line of its output."""
    if not line.startswith(SERVING_MARK + " "):
        return None
    return line.split(SERVING_MARK + " ", 1)[1].strip()
