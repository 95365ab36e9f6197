"""The run configuration: one frozen object that says everything a conformance run was asked to do.

Every default of the suite is here, once, with what it means; the command-line table
(``conformance/options.py``), the input check (``conformance/validate.py``), the plugin and the providers
read them from this module instead of repeating literals. A caller that wants a run without a command
line builds a :class:`RunConfig` and hands it to :func:`conformance.cli.run`::

    from conformance.cli import run
    from conformance.config import RunConfig

    exit_code = run(RunConfig(cluster="sim", driver_profile="./my-profile.yaml", report_dir=Path("out")))

Values are kept as the user gave them (a profile name or path, a GPU spec string): turning them into
files and objects, and saying which one is wrong, is the input check's job, so a bad value still gets its
one-sentence error and exit code 4 there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.resources import claims_dir

# Where a run can go. ``auto`` picks existing (a --kubeconfig was given), else kind (a container engine
# answers), else sim. A new cluster choice is added here and gets a provider in conformance/plugin.py.
CLUSTERS: tuple[str, ...] = ("auto", "kind", "existing", "sim", "local")
DEFAULT_CLUSTER = "auto"
# The project's reference driver (conformance/data/drivers/reference.yaml).
DEFAULT_DRIVER_PROFILE = "reference"
# report.json, report.md (and junit.xml from make) go here, relative to the current directory.
DEFAULT_REPORT_DIR = "reports"
# The sim's two nodes; kind makes its own (two workers), existing uses the cluster's.
DEFAULT_SIM_NODES = "node-1,node-2"
# --nodes words the local provider reads as the kind of node it runs (the names stay the default ones).
NODE_KINDS = ("simulated", "real")
# The mock GPU profile a sim (and kind with mock GPUs) uses when --gpus is not given: two RTX 3090s.
DEFAULT_MOCK_GPUS = "rtx3090x2"
# Each wait of a scenario (a pod to run, slices to appear) is bounded by this many seconds. The sim is
# fast and local, so a stuck wait there is a bug to report soon rather than a slow node.
DEFAULT_WAIT_TIMEOUT = 120.0
DEFAULT_SIM_WAIT_TIMEOUT = 20.0
# How long a pod that must be rejected has to stay unscheduled before the check believes it. The sim's
# scheduler decides within milliseconds; a real scheduler retries on a backoff of seconds.
DEFAULT_SETTLE_SECONDS = 5.0
DEFAULT_SIM_SETTLE_SECONDS = 1.0


# Options whose empty value (``--cluster=``, an empty make variable) means "the default", as it always has.
_EMPTY_IS_DEFAULT = frozenset({"cluster", "driver_profile", "report_dir"})


def default_claim_templates() -> Path:
    """The seed guide's three ResourceClaimTemplates, shipped in the package (conformance/data/claims)."""
    return claims_dir()


@dataclass(frozen=True)
class RunConfig:
    """One run's options, named as the command-line flags are (``--driver-profile`` is
    ``driver_profile``); ``None`` means "the default for the cluster in use" where the default depends on
    it (see :meth:`wait_timeout_for` and :meth:`settle_seconds_for`)."""

    cluster: str = DEFAULT_CLUSTER
    driver_profile: str = DEFAULT_DRIVER_PROFILE  # a name in conformance/data/drivers or a path
    gpus: str | None = None  # kind/sim: mock GPU profile (NAME, path, node=NAME,...) or nvml
    report_dir: Path = Path(DEFAULT_REPORT_DIR)
    claim_templates: Path = field(default_factory=default_claim_templates)
    wait_timeout: float | None = None  # None: DEFAULT_WAIT_TIMEOUT, DEFAULT_SIM_WAIT_TIMEOUT on sim
    settle_seconds: float | None = None  # None: DEFAULT_SETTLE_SECONDS, DEFAULT_SIM_SETTLE_SECONDS on sim
    run_timeout: float | None = None  # bound for the whole run; None: no bound
    allow_busy_gpus: bool = False  # existing: test only the idle GPUs instead of refusing to start
    nodes: str = DEFAULT_SIM_NODES  # sim: node names, comma separated; local: also "real" or "simulated"
    sim_driver_command: str | None = None  # sim: the driver's command instead of the profile's
    sim_feature_gates: str = ""  # sim: apiserver/scheduler feature gates (Name=bool,...)
    sim_kube_version: str | None = None  # sim: the Kubernetes version to emulate; None: the sim's default
    # local: the Kubernetes release to run (1.34 to 1.37); None: localkube.versions.DEFAULT_MINOR (1.36)
    kube_version: str | None = None
    keep_cluster: bool = False  # leave the cluster (and the sim) running after the run
    kubeconfig: str | None = None  # existing: the cluster to test; kind: where to write its kubeconfig

    @classmethod
    def from_options(cls, opts: Mapping[str, Any]) -> RunConfig:
        """From option values keyed by their dest (argparse's ``vars(args)``, pytest's options); keys
        this object does not know are ignored (pytest's own options), missing ones take the default, and
        a ``None`` for an option whose default is not ``None`` means "not given"."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in opts or opts[f.name] is None:
                continue
            if f.name in _EMPTY_IS_DEFAULT and opts[f.name] == "":
                continue
            value = opts[f.name]
            if f.name in ("report_dir", "claim_templates"):
                value = Path(value)
            values[f.name] = value
        return cls(**values)

    @property
    def simulated(self) -> bool:
        """Whether the cluster was chosen as sim outright (``auto`` is resolved by the input check)."""
        return self.cluster == "sim"

    def wait_timeout_for(self, simulated: bool) -> float:
        if self.wait_timeout:
            return self.wait_timeout
        return DEFAULT_SIM_WAIT_TIMEOUT if simulated else DEFAULT_WAIT_TIMEOUT

    def settle_seconds_for(self, simulated: bool) -> float:
        if self.settle_seconds is not None:
            return self.settle_seconds
        return DEFAULT_SIM_SETTLE_SECONDS if simulated else DEFAULT_SETTLE_SECONDS

    def node_names(self) -> tuple[str, ...]:
        return tuple(n for n in self.nodes.split(",") if n)

    def mock_gpus_for(self, provider: str) -> str | None:
        """The mock GPU profile the run's GPUs come from: --gpus, else the default on sim."""
        return self.gpus or (DEFAULT_MOCK_GPUS if provider in ("sim", "local") else None)

    def args(self) -> list[str]:
        """The suite's command-line flags that give this configuration (only those that differ from the
        defaults), one argument each whatever the value holds: what :func:`conformance.cli.run` passes
        to pytest."""
        out: list[str] = []
        defaults = RunConfig()
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value == getattr(defaults, f.name):
                continue
            flag = "--" + f.name.replace("_", "-")
            if isinstance(value, bool):
                if value:
                    out.append(flag)
                continue
            out.append(f"{flag}={value}")
        return out
