"""The suite's command-line options, in one table.

The pytest plugin registers them (``pytest conformance/scenarios --cluster sim``) and the input check
(``python -m conformance.validate``) parses the same table with argparse, so both read every option
the same way.
"""

from __future__ import annotations

from typing import Any

from conformance.templates import CLAIMS_DIR

# (flag, argparse/pytest keyword arguments). Kept in the order ``--help`` shows them.
OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        "--cluster",
        {
            "choices": ("auto", "kind", "existing", "sim", "local"),
            "default": "auto",
            "help": "where to run: kind, an existing cluster (--kubeconfig), sim, local (a real control "
            "plane from local processes, the sim's nodes; make kube-bin first), or auto (existing "
            "when --kubeconfig is given, kind when a container engine answers, else sim)",
        },
    ),
    (
        "--driver-profile",
        {
            "default": "reference",
            "help": "driver profile: a name in fixtures/drivers or a path (default: reference)",
        },
    ),
    ("--gpus", {"default": None, "help": "mock GPU profile for kind/sim (name in fixtures/gpus or path)"}),
    ("--report-dir", {"default": "reports", "help": "where report.json and report.md go"}),
    (
        "--claim-templates",
        {
            "default": str(CLAIMS_DIR),
            "help": "directory of ResourceClaimTemplates to validate and use (default: the seed's)",
        },
    ),
    (
        "--wait-timeout",
        {"type": float, "default": None, "help": "bound in seconds for each wait (default 120, 20 on sim)"},
    ),
    (
        "--settle-seconds",
        {
            "type": float,
            "default": None,
            "help": "how long a rejected pod must stay unscheduled (default 5, 1 on sim)",
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
    ("--nodes", {"default": "node-1,node-2", "help": "sim, local: node names (comma separated)"}),
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
