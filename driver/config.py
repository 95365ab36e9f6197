"""The driver's command line. Every flag also reads an environment variable (the flag's name in upper case
with dashes as underscores: --node-name / NODE_NAME), so a Helm chart can set either."""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from pathlib import Path

from drakit.quantity import QuantityError, parse_bytes

DEFAULT_DRIVER_NAME = "gpu.sharing.example.dev"
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Config:
    node_name: str
    kubeconfig: str | None
    gpus: str
    driver_name: str
    sharing: bool
    memory_policy: str
    memory_min: int
    memory_step: int
    plugin_dir: Path
    registry_dir: Path
    cdi_dir: Path
    state_dir: Path
    metrics_port: int
    metrics_address: str
    remove_slices_on_exit: bool
    log_level: str

    @property
    def dra_socket(self) -> Path:
        return self.plugin_dir / "dra.sock"

    @property
    def registration_socket(self) -> Path:
        return self.registry_dir / f"{self.driver_name}-reg.sock"


def _env_name(flag: str) -> str:
    return flag.lstrip("-").upper().replace("-", "_")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m driver",
        description="Reference DRA driver that shares GPUs by memory (allowMultipleAllocations + memory "
        "capacity). Each flag can also be set through the environment variable shown.",
    )

    def add(flag: str, help_text: str, **kw: object) -> None:
        env = _env_name(flag)
        p.add_argument(flag, help=f"{help_text} [env {env}]", **kw)  # type: ignore[arg-type]

    add("--node-name", "name of this node; also the pool name (required)")
    add("--kubeconfig", "kubeconfig path; in-cluster config when omitted")
    add("--gpus", "'nvml' for real GPUs, or a mock profile (path or name in drakit/gpus) (default nvml)")
    add("--driver-name", f"driver name, a DNS subdomain (default {DEFAULT_DRIVER_NAME})")
    add("--sharing", "on|off: publish allowMultipleAllocations (default on)")
    add("--memory-policy", "none|range: requestPolicy on the memory capacity (default range)")
    add("--memory-min", "smallest memory a share consumes, for --memory-policy range (default 1Mi)")
    add("--memory-step", "memory granularity, for --memory-policy range (default 1Mi)")
    add("--plugin-dir", "directory of the DRA socket (default /var/lib/kubelet/plugins/<driver-name>)")
    add("--registry-dir", "kubelet plugin registry directory (default /var/lib/kubelet/plugins_registry)")
    add("--cdi-dir", "directory for per-claim CDI specs (default /var/run/cdi)")
    add("--state-dir", "directory for the checkpoint (default /var/lib/<driver-name>)")
    add("--metrics-port", "Prometheus metrics port; 0 turns metrics off (default 0)")
    add("--metrics-address", "address the metrics endpoint binds (default 0.0.0.0)")
    add(
        "--remove-slices-on-exit",
        "delete this node's ResourceSlices on clean shutdown",
        action="store_const",
        const="true",
    )
    add("--log-level", "DEBUG|INFO|WARNING|ERROR (default INFO)")
    return p


def _bool(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ConfigError(f"{name}: expected on|off (or true|false), got {value!r}")


def parse_config(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> Config:
    environ = dict(os.environ if environ is None else environ)
    args = vars(_parser().parse_args(argv))

    def get(flag: str, default: str | None = None) -> str | None:
        key = flag.lstrip("-").replace("-", "_")
        if args.get(key) is not None:
            return str(args[key])
        return environ.get(_env_name(flag), default)

    node_name = get("--node-name")
    if not node_name:
        raise ConfigError("--node-name (or NODE_NAME) is required: the node this driver runs on")
    driver_name = get("--driver-name", DEFAULT_DRIVER_NAME) or DEFAULT_DRIVER_NAME
    if len(driver_name) > 63 or not _DNS_SUBDOMAIN.match(driver_name):
        raise ConfigError(
            f"--driver-name: {driver_name!r} must be a lower-case DNS subdomain of at most "
            "63 characters, e.g. gpu.sharing.example.dev"
        )
    memory_policy = (get("--memory-policy", "range") or "range").lower()
    if memory_policy not in {"none", "range"}:
        raise ConfigError(f"--memory-policy: expected none or range, got {memory_policy!r}")
    try:
        memory_min = parse_bytes(get("--memory-min", "1Mi") or "1Mi", "--memory-min")
        memory_step = parse_bytes(get("--memory-step", "1Mi") or "1Mi", "--memory-step")
    except QuantityError as err:
        raise ConfigError(str(err)) from err
    if memory_step < 1:
        raise ConfigError("--memory-step: must be at least 1 byte, e.g. 1Mi")
    port_text = get("--metrics-port", "0") or "0"
    try:
        metrics_port = int(port_text)
    except ValueError as err:
        raise ConfigError(f"--metrics-port: expected a port number, got {port_text!r}") from err
    if not 0 <= metrics_port <= 65535:
        raise ConfigError(f"--metrics-port: {metrics_port} is not a port (0 turns metrics off)")
    log_level = (get("--log-level", "INFO") or "INFO").upper()
    if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError(f"--log-level: expected DEBUG, INFO, WARNING or ERROR, got {log_level!r}")
    sharing = _bool("--sharing", get("--sharing", "on") or "on")
    if memory_policy == "range" and not sharing:
        # The API server forbids requestPolicy on a device that is not multi-allocatable.
        memory_policy = "none"
    return Config(
        node_name=node_name,
        kubeconfig=get("--kubeconfig") or None,
        gpus=get("--gpus", "nvml") or "nvml",
        driver_name=driver_name,
        sharing=sharing,
        memory_policy=memory_policy,
        memory_min=memory_min,
        memory_step=memory_step,
        plugin_dir=Path(get("--plugin-dir", f"/var/lib/kubelet/plugins/{driver_name}") or "").absolute(),
        registry_dir=Path(get("--registry-dir", "/var/lib/kubelet/plugins_registry") or "").absolute(),
        cdi_dir=Path(get("--cdi-dir", "/var/run/cdi") or "").absolute(),
        state_dir=Path(get("--state-dir", f"/var/lib/{driver_name}") or "").absolute(),
        metrics_port=metrics_port,
        metrics_address=get("--metrics-address", "0.0.0.0") or "0.0.0.0",
        remove_slices_on_exit=_bool("--remove-slices-on-exit", get("--remove-slices-on-exit", "false") or ""),
        log_level=log_level,
    )
