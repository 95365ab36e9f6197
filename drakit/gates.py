"""The Kubernetes versions the project emulates and their DRA feature gates.

Gate defaults follow the upstream versioned feature table as recorded in the team's dra-facts.md §4. The
sim emulates them, the suite checks ``--sim-feature-gates`` / ``--sim-kube-version`` with the same table
before a run, and a real control plane (localkube) is started with them.
"""

from __future__ import annotations

SUPPORTED_VERSIONS = ("1.34", "1.35", "1.36", "1.37")
DEFAULT_VERSION = "1.36"

# gate -> {version: default}. Versions missing from a row inherit the previous version's value.
_GATE_DEFAULTS: dict[str, dict[str, bool]] = {
    "DynamicResourceAllocation": {"1.34": True},
    "DRAConsumableCapacity": {"1.34": False, "1.36": True},
    "DRAPrioritizedList": {"1.34": True},
    "DRAAdminAccess": {"1.34": True},
    "DRAResourceClaimDeviceStatus": {"1.34": True},
    "DRAPartitionableDevices": {"1.34": False, "1.36": True},
    "DRAExtendedResource": {"1.34": False, "1.36": True},
    "DRADeviceTaints": {"1.34": False},
    "DRADeviceBindingConditions": {"1.34": False},
    "DRAListTypeAttributes": {"1.34": False},
    "DRAFractionalCapacityRange": {"1.34": False, "1.37": True},
    "ResourceHealthStatus": {"1.34": False, "1.36": True},
}


def gate_defaults(version: str) -> dict[str, bool]:
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(
            f"--kube-version {version!r} is not supported; use one of {', '.join(SUPPORTED_VERSIONS)}"
        )
    out: dict[str, bool] = {}
    for gate, row in _GATE_DEFAULTS.items():
        value = False
        for v in SUPPORTED_VERSIONS:
            if v in row:
                value = row[v]
            if v == version:
                break
        out[gate] = value
    return out


def parse_feature_gates(text: str) -> dict[str, bool]:
    """Parse "A=true,B=false" the way kube components do; errors name the bad entry and the fix."""
    out: dict[str, bool] = {}
    for raw in (text or "").split(","):
        item = raw.strip()
        if not item:
            continue
        if "=" not in item:
            raise ValueError(f"--feature-gates entry {item!r} must look like Name=true or Name=false")
        name, _, value = item.partition("=")
        name, value = name.strip(), value.strip().lower()
        if name not in _GATE_DEFAULTS:
            raise ValueError(
                f"--feature-gates: unknown feature gate {name!r}; known: {', '.join(sorted(_GATE_DEFAULTS))}"
            )
        if value not in ("true", "false"):
            raise ValueError(f"--feature-gates: {name} must be true or false, got {value!r}")
        out[name] = value == "true"
    return out
