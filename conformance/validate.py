"""Every input of a run, checked before anything starts.

The driver profile, the mock GPU profiles, the claim templates, the kubeconfig and the flags are read
and checked here, by the same code the parts that use them run (the driver's GPU profile parser, the
sim's feature-gate parser, Kubernetes' name rules). A problem is one sentence naming the input, the
field and the fix, and exit code 4; nothing has been created when it is raised: no cluster, no work
dir, no object.

    python -m conformance.validate --driver-profile vendor.yaml --cluster sim   # check only, exit 0 or 4
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, cast

import urllib3
import yaml

from conformance.config import CLUSTERS, DEFAULT_MOCK_GPUS, DEFAULT_SIM_NODES, NODE_KINDS, RunConfig
from conformance.options import OPTIONS, SHARED_OPTIONS
from conformance.profiles import DriverProfile, ProfileError, load_profile, resolve_sim_launch, yaml_problem
from conformance.templates import (
    SCHEMA_VERSIONS,
    ClaimTemplate,
    TemplateError,
    load_templates,
    schema_version,
)
from drakit.gates import DEFAULT_VERSION, SUPPORTED_VERSIONS, parse_feature_gates
from drakit.gpuprofiles import InventoryError, parse_gpus
from drakit.gpuprofiles import load_profile as load_gpu_profile
from drakit.nodedirs import NodeDirs

EXIT_BAD_INPUT = 4
REACH_TIMEOUT = 10.0
DEFAULT_SIM_GPUS = DEFAULT_MOCK_GPUS  # kept for callers of the old name
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class BadInput(ValueError):
    """One sentence: the input, the field and the fix. The run exits with ``exit_code``."""

    exit_code = EXIT_BAD_INPUT


@dataclass(frozen=True)
class Inputs:
    """What the checks read, for the plugin to use as is."""

    provider: str  # sim, kind or existing (auto resolved)
    profile: DriverProfile
    templates: list[ClaimTemplate]
    schema: str  # Kubernetes schema version the templates were checked against
    kubeconfig: Path | None = None
    server_version: str = ""  # existing: what /version answered
    gpus: str | None = None
    nodes: tuple[str, ...] = ()
    feature_gates: dict[str, bool] = field(default_factory=dict)
    kube_version: str | None = None
    driver_command: str | None = None
    node_kind: str = "simulated"  # local: --nodes real gives "real"
    config: RunConfig = field(default_factory=RunConfig)  # the run configuration these were read from


def check(opts: RunConfig | Mapping[str, Any], *, engine_answers: Callable[[], bool] | None = None) -> Inputs:
    """Check a run configuration (or option values keyed by dest, as argparse/pytest name them, which
    become one); raise BadInput."""
    cfg = opts if isinstance(opts, RunConfig) else RunConfig.from_options(opts)
    o = _Opts(cfg)
    _check_numbers(o)
    report_dir = cfg.report_dir
    if report_dir.exists() and not report_dir.is_dir():
        raise BadInput(
            f"--report-dir {report_dir} is a file, not a directory; pass a directory (it is "
            "created when missing)."
        )
    try:
        profile = load_profile(cfg.driver_profile)
    except ProfileError as exc:
        raise BadInput(str(exc)) from None
    provider = _choose_provider(o, engine_answers or container_engine_answers)
    kubeconfig = o.get("kubeconfig")
    server_version = ""
    nodes: tuple[str, ...] = ()
    gates: dict[str, bool] = {}
    kube_version = o.get("sim_kube_version")
    if provider == "existing":
        if not kubeconfig:
            raise BadInput(
                "--cluster existing needs --kubeconfig PATH; pass the kubeconfig of the cluster to test."
            )
        server_version = check_kubeconfig(Path(kubeconfig))
    sim_nodes = provider in ("sim", "local")  # local runs the sim's nodes under a real control plane
    if provider == "local":
        if cfg.keep_cluster:
            raise BadInput(
                "--keep-cluster cannot keep a --cluster local cluster: its processes die with the suite "
                "(parent-death signal), by design; drop --keep-cluster, or keep a sim or kind cluster."
            )
        if kube_version is not None:
            raise BadInput(
                "--sim-kube-version is the sim's emulated version; with --cluster local use --kube-version."
            )
        kube_version = _check_local_release(o.get("kube_version"))
    elif o.get("kube_version") is not None:
        raise BadInput(
            f"--kube-version is for --cluster local (the release it runs); with --cluster {provider} "
            "drop it (sim: --sim-kube-version)."
        )
    node_kind = "simulated"
    nodes_text = (o.get("nodes") or "").strip()
    if nodes_text in NODE_KINDS:
        if provider != "local":
            raise BadInput(
                f"--nodes {nodes_text} is for --cluster local (which kind of node it runs); with "
                f"--cluster {provider} pass node names or drop --nodes."
            )
        node_kind, nodes_text = nodes_text, DEFAULT_SIM_NODES
    if node_kind == "real":
        _check_real_nodes(kube_version)
    if sim_nodes:
        nodes = _check_nodes(nodes_text)
        gates = _check_gates(o.get("sim_feature_gates") or "")
        if provider == "sim":
            _check_kube_version(kube_version)
        _check_driver_command(o.get("sim_driver_command"))
        _check_sim_launch(profile, o.get("sim_driver_command"), nodes, o.get("gpus"))
    if provider in ("sim", "local", "kind"):
        check_gpu_profiles(cfg.mock_gpus_for(provider), nodes)
    if provider == "existing":
        schema = schema_version(server_version)
    elif provider == "sim":
        schema = schema_version(kube_version or DEFAULT_VERSION)
    elif provider == "local":
        schema = schema_version(f"v{kube_version}")
    else:
        schema = SCHEMA_VERSIONS[-1]
    try:
        templates = load_templates(cfg.claim_templates, schema)
    except TemplateError as exc:
        raise BadInput(str(exc)) from None
    if sim_nodes:
        _check_socket_room(profile.driver, nodes)
    return Inputs(
        provider=provider,
        profile=profile,
        templates=templates,
        schema=schema,
        kubeconfig=Path(kubeconfig) if kubeconfig else None,
        server_version=server_version,
        gpus=o.get("gpus"),
        nodes=nodes,
        feature_gates=gates,
        kube_version=kube_version,
        driver_command=o.get("sim_driver_command"),
        node_kind=node_kind,
        config=cfg,
    )


class _Opts:
    """Reads a RunConfig's fields by their option dest (the checks below name options that way)."""

    def __init__(self, cfg: RunConfig) -> None:
        self._cfg = cfg

    def get(self, name: str) -> Any:
        return getattr(self._cfg, name)


def _check_numbers(o: _Opts) -> None:
    for name, flag, minimum in (
        ("wait_timeout", "--wait-timeout", 0.0),
        ("run_timeout", "--run-timeout", 0.0),
        ("settle_seconds", "--settle-seconds", None),
    ):
        value = o.get(name)
        if value is None:
            continue
        if value != value or value in (float("inf"), float("-inf")):  # NaN or infinite
            raise BadInput(f"{flag} {value} is not a finite number of seconds; pass a number such as 30.")
        if minimum is not None and value <= minimum:
            raise BadInput(f"{flag} {value} must be more than 0 seconds; pass a positive bound such as 30.")
        if value < 0:
            raise BadInput(f"{flag} {value} is negative; pass 0 or more seconds.")


def _choose_provider(o: _Opts, engine_answers: Callable[[], bool]) -> str:
    cluster = o.get("cluster") or "auto"
    if cluster not in CLUSTERS:
        raise BadInput(f"--cluster {cluster!r} is not one of {', '.join(CLUSTERS)}; pick one of those.")
    if cluster != "auto":
        return cluster
    if o.get("kubeconfig"):
        return "existing"
    return "kind" if engine_answers() else "sim"


def container_engine_answers() -> bool:
    for engine in ("docker", "podman"):
        exe = shutil.which(engine)
        if not exe:
            continue
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            if subprocess.run([exe, "info"], capture_output=True, timeout=15).returncode == 0:
                return True
    return False


def _check_nodes(text: str) -> tuple[str, ...]:
    nodes = tuple(n.strip() for n in text.split(",") if n.strip())
    if not nodes:
        raise BadInput(f"--nodes {text!r} names no node; pass node names such as node-1,node-2.")
    for n in nodes:
        if not _DNS_SUBDOMAIN.match(n) or len(n) > 253:
            raise BadInput(
                f"--nodes: {n!r} is not a valid node name (a lower-case DNS subdomain: a-z, 0-9, "
                "'-' and '.'); rename it, e.g. node-1."
            )
    dup = sorted({n for n in nodes if nodes.count(n) > 1})
    if dup:
        raise BadInput(f"--nodes names {dup[0]!r} twice; give each node once.")
    return nodes


def _check_socket_room(driver: str, nodes: tuple[str, ...]) -> None:
    """The sim's state dir will be TMPDIR/gsc-XXXXXXXX/sim-state: its driver sockets must fit in a unix
    socket path, which a deep TMPDIR (CI runners, pytest's tmp_path) can overflow."""
    state_dir = Path(tempfile.gettempdir()) / "gsc-XXXXXXXX" / "sim-state"
    for node in nodes:
        try:
            NodeDirs(state_dir / node).check_socket_room(driver)
        except ValueError:
            raise BadInput(
                f"TMPDIR {tempfile.gettempdir()} is too deep for the sim: its driver sockets "
                f"under {state_dir} would pass the 107-byte unix socket path limit; set TMPDIR "
                "to a shorter directory, e.g. TMPDIR=/tmp."
            ) from None


def _check_gates(text: str) -> dict[str, bool]:
    try:
        return parse_feature_gates(text)
    except ValueError as exc:
        why = str(exc).removeprefix("--feature-gates").lstrip(": ")
        raise BadInput(f"--sim-feature-gates {text!r}: {why}.") from None


def _check_kube_version(version: str | None) -> None:
    if version is not None and version not in SUPPORTED_VERSIONS:
        raise BadInput(
            f"--sim-kube-version {version!r} is not emulated; use one of {', '.join(SUPPORTED_VERSIONS)}."
        )


def _check_local_release(version: str | None) -> str:
    """The release --cluster local runs, and that its binaries were built (make kube-bin)."""
    from conformance.providers.base import ProviderError
    from conformance.providers.local import check_release

    try:
        return check_release(version)
    except ProviderError as exc:
        raise BadInput(str(exc)) from None


def _check_real_nodes(release: str | None) -> None:
    """This machine can run real nodes (root, runc, CNI plugins, cgroups, the node binaries)."""
    from conformance.providers.base import ProviderError
    from conformance.providers.local import check_real_nodes

    try:
        check_real_nodes(release or "")
    except ProviderError as exc:
        raise BadInput(str(exc)) from None


def _check_sim_launch(
    profile: DriverProfile, driver_command: str | None, nodes: tuple[str, ...], gpus: str | None
) -> None:
    """The profile's sim: section resolves into a runnable launch spec (the provider's own check)."""
    try:
        resolve_sim_launch(profile, driver_command, nodes, gpus)
    except ProfileError as exc:
        raise BadInput(str(exc)) from None


def _check_driver_command(command: str | None) -> None:
    """Its quoting; whether it exists and runs is the launch spec's check (``_check_sim_launch``)."""
    if command is None:
        return
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise BadInput(
            f"--sim-driver-command {command!r} does not parse as a command line ({exc}); fix its quoting."
        ) from None
    if not argv:
        raise BadInput(
            "--sim-driver-command is empty; pass the command that starts the driver, or leave "
            "the option out to run the profile's sim.command."
        )


def check_gpu_profiles(spec: str | None, nodes: tuple[str, ...]) -> None:
    """Each mock GPU profile parsed by the driver's own parser, so a bad file is named here instead of
    crash-looping the driver."""
    if spec is None:
        return
    if spec == "nvml":
        return
    if nodes:
        try:
            mapping = parse_gpus(spec, list(nodes))
        except ValueError as exc:
            raise BadInput(f"{exc}.".replace("..", ".")) from None
    else:
        mapping = {f"node-{i}": part.partition("=")[2] or part for i, part in enumerate(spec.split(","))}
    for node, profile in mapping.items():
        if profile == "nvml":
            continue
        try:
            load_gpu_profile(profile, node)
        except InventoryError as exc:
            raise BadInput(
                f"--gpus: {' '.join(str(exc).split())}; fix the GPU profile or pass one of "
                "drakit/gpus (rtx3090x2, mixed, h100x8, odd16380)."
            ) from None


def check_kubeconfig(path: Path) -> str:
    """Parse, current context, reachable; return the server's gitVersion."""
    if not path.is_file():
        raise BadInput(
            f"kubeconfig {path} does not exist; pass --kubeconfig with the path of an existing "
            "kubeconfig file."
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise BadInput(
            f"kubeconfig {path} is not valid YAML ({yaml_problem(exc)}); fix the syntax or pass another file."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"kubeconfig {path} cannot be read ({exc}); pass a readable kubeconfig.") from None
    if not isinstance(data, dict):
        raise BadInput(
            f"kubeconfig {path} does not hold a Config mapping; pass a kubeconfig file (kind: Config)."
        )
    current = data.get("current-context")
    if not current:
        raise BadInput(
            f"kubeconfig {path} has no current-context; set one with 'kubectl config "
            f"use-context NAME --kubeconfig {path}'."
        )
    contexts = {
        c.get("name"): c.get("context") or {} for c in data.get("contexts") or () if isinstance(c, dict)
    }
    if current not in contexts:
        raise BadInput(
            f"kubeconfig {path}: current-context {current!r} is not in its contexts; add that "
            "context or pick an existing one with 'kubectl config use-context'."
        )
    clusters = {
        c.get("name"): c.get("cluster") or {} for c in data.get("clusters") or () if isinstance(c, dict)
    }
    cluster_name = contexts[current].get("cluster")
    if cluster_name not in clusters:
        raise BadInput(
            f"kubeconfig {path}: context {current!r} names cluster {cluster_name!r}, which is not "
            "in its clusters; add the cluster entry or fix contexts[].context.cluster."
        )
    server = clusters[cluster_name].get("server")
    if not server:
        raise BadInput(
            f"kubeconfig {path}: cluster {cluster_name!r} has no server; set clusters[].cluster."
            "server to the API server's URL."
        )
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    try:
        api = config.new_client_from_config(config_file=str(path))
    except (ConfigException, ValueError, TypeError, KeyError, OSError) as exc:
        raise BadInput(
            f"kubeconfig {path} cannot be loaded ({' '.join(str(exc).split())[:200]}); fix the "
            f"entries of context {current!r}."
        ) from None
    api.configuration.retries = 0
    try:
        # With _preload_content=False the client returns the raw urllib3 response, not a VersionInfo.
        resp = cast(
            urllib3.BaseHTTPResponse,
            client.VersionApi(api).get_code(_request_timeout=REACH_TIMEOUT, _preload_content=False),
        )
        version = yaml.safe_load(resp.data or b"{}") or {}
        return str(version.get("gitVersion") or "") if isinstance(version, dict) else ""
    except ApiException as exc:
        raise BadInput(
            f"the cluster in {path} answered /version with {exc.status} {exc.reason}; check the "
            "kubeconfig's credentials."
        ) from None
    except Exception as exc:  # refused, DNS, TLS, timeout: urllib3 raises several types
        raise BadInput(
            f"cannot reach the cluster in {path} at {server} ({type(exc).__name__}); check that "
            "it runs and that the kubeconfig points at it."
        ) from None
    finally:
        api.close()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message}; see --help.", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m conformance.validate",
        description="Check the inputs of a conformance run without starting anything.",
    )
    for flag, kw in (*OPTIONS, *SHARED_OPTIONS):
        p.add_argument(flag, **kw)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        inputs = check(vars(args))
    except BadInput as exc:
        print(f"bad input: {exc}", file=sys.stderr)
        return exc.exit_code
    print(
        f"inputs OK: provider {inputs.provider}, driver profile {inputs.profile.name}, "
        f"{len(inputs.templates)} claim template(s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
