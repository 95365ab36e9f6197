"""The suite's command-line options, in one table (their defaults and meaning: conformance/config.py).

The pytest plugin registers them (``pytest conformance/scenarios --cluster sim``) and the input check
(``python -m conformance.validate``) parses the same table with argparse, so both read every option
the same way.
"""

from __future__ import annotations

from typing import Any

from conformance.config import (
    CLUSTERS,
    DEFAULT_CLUSTER,
    DEFAULT_DRIVER_PROFILE,
    DEFAULT_REPORT_DIR,
    DEFAULT_SETTLE_SECONDS,
    DEFAULT_SIM_NODES,
    DEFAULT_SIM_SETTLE_SECONDS,
    DEFAULT_SIM_WAIT_TIMEOUT,
    DEFAULT_WAIT_TIMEOUT,
    default_claim_templates,
)

# (flag, argparse/pytest keyword arguments). Kept in the order ``--help`` shows them.
OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        "--cluster",
        {
            "choices": CLUSTERS,
            "default": DEFAULT_CLUSTER,
            "help": "where to run: kind, an existing cluster (--kubeconfig), sim, local (a real control "
            "plane from local processes, the sim's nodes; make kube-bin first), or auto (existing "
            "when --kubeconfig is given, kind when a container engine answers, else sim)",
        },
    ),
    (
        "--driver-profile",
        {
            "default": DEFAULT_DRIVER_PROFILE,
            "help": "driver profile: a name in conformance/data/drivers or a path (default: "
            f"{DEFAULT_DRIVER_PROFILE})",
        },
    ),
    ("--gpus", {"default": None, "help": "mock GPU profile for kind/sim (name in drakit/gpus or path)"}),
    ("--report-dir", {"default": DEFAULT_REPORT_DIR, "help": "where report.json and report.md go"}),
    (
        "--claim-templates",
        {
            "default": str(default_claim_templates()),
            "help": "directory of ResourceClaimTemplates to validate and use (default: the seed's)",
        },
    ),
    (
        "--wait-timeout",
        {
            "type": float,
            "default": None,
            "help": f"bound in seconds for each wait (default {DEFAULT_WAIT_TIMEOUT:g}, "
            f"{DEFAULT_SIM_WAIT_TIMEOUT:g} on sim)",
        },
    ),
    (
        "--settle-seconds",
        {
            "type": float,
            "default": None,
            "help": "how long a rejected pod must stay unscheduled (default "
            f"{DEFAULT_SETTLE_SECONDS:g}, {DEFAULT_SIM_SETTLE_SECONDS:g} on sim)",
        },
    ),
    (
        "--run-timeout",
        {
            "type": float,
            "default": None,
            "help": "bound in seconds for the whole run; when it passes the run stops, cleans up "
            "and reports INCOMPLETE (default: none)",
        },
    ),
    (
        "--allow-busy-gpus",
        {"action": "store_true", "help": "existing: run even if GPUs under test already hold allocations"},
    ),
    (
        "--nodes",
        {
            "default": DEFAULT_SIM_NODES,
            "help": "sim, local: node names (comma separated); local: 'real' runs a kubelet and "
            "containerd per node instead of the sim's kubelets (make kube-bin builds them)",
        },
    ),
    (
        "--sim-driver-command",
        {
            "default": None,
            "help": "sim: the driver's command instead of the profile's sim.command (your "
            "build of the driver, or a broken variant); the profile's args "
            "and env still apply",
        },
    ),
    (
        "--sim-feature-gates",
        {
            "default": "",
            "help": "sim, local: apiserver/scheduler feature gates, e.g. DRAConsumableCapacity=false",
        },
    ),
    ("--sim-kube-version", {"default": None, "help": "sim: Kubernetes version to emulate"}),
    (
        "--kube-version",
        {
            "default": None,
            "help": "local: Kubernetes release to run, 1.34 to 1.37 (default 1.36; make kube-bin "
            "KUBE_VERSION=... builds it)",
        },
    ),
)

# pytest-kind registers these with the same meaning; the plugin shares them instead of adding its own.
SHARED_OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--keep-cluster", {"action": "store_true", "help": "keep the cluster after the run"}),
    ("--kubeconfig", {"default": None, "help": "kubeconfig of an existing cluster"}),
)


def dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")
