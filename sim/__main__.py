"""python -m sim: the one entry point of the simulated cluster (see docs/architecture.md)."""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import logging
import re
import shutil
import sys
import threading
from pathlib import Path
from typing import Any, NoReturn

from drakit.lifetime import StopSignal

from .cluster import Cluster
from .config import DEFAULT_VERSION, SUPPORTED_VERSIONS, SimConfig

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class _Parser(argparse.ArgumentParser):
    """Bad flags: one line and exit 2, never the usage block or a traceback."""

    def error(self, message: str) -> NoReturn:
        print(f"sim: {message}; see python -m sim --help", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m sim", description="Simulated Kubernetes cluster for DRA tests")
    p.add_argument(
        "--kubeconfig",
        default=None,
        help="where to write the kubeconfig once the API serves (required unless --apiserver-kubeconfig)",
    )
    # Nodes only (sim/kubelet/remote.py): the kubelets and drivers against an API server we did not start.
    p.add_argument(
        "--apiserver-kubeconfig",
        default=None,
        help="run only the nodes, as clients of the API server this kubeconfig names (no in-process "
        "API server, scheduler or claim controller); the drivers get this kubeconfig",
    )
    p.add_argument(
        "--node-kubeconfig-dir",
        default=None,
        help="with --apiserver-kubeconfig: DIR/<node>.kubeconfig is each kubelet's own identity",
    )
    p.add_argument(
        "--kubelet-tls",
        default=None,
        help="with --apiserver-kubeconfig: CERT,KEY,CLIENT_CA of the kubelet API that serves container "
        "logs to the API server (mutual TLS)",
    )
    p.add_argument("--nodes", default="", help="comma-separated node names, e.g. node-1,node-2")
    p.add_argument("--feature-gates", default="", help="K=V,... overrides of the emulated version's defaults")
    p.add_argument("--kube-version", default=DEFAULT_VERSION, choices=SUPPORTED_VERSIONS)
    p.add_argument("--port", type=int, default=0, help="API port on 127.0.0.1 (0 picks a free one)")
    p.add_argument("--log-level", default="WARNING", help="Python logging level (DEBUG, INFO, WARNING)")
    # Nodes (sim/kubelet): with --driver-spec or --gpus every node gets a kubelet and a driver process.
    p.add_argument(
        "--driver-spec",
        default=None,
        help="YAML/JSON launch spec of any driver (name, command, args, env, nodeEnv); every node "
        "runs it as the spec says, nothing added (docs/architecture.md)",
    )
    p.add_argument(
        "--gpus",
        default="",
        help="mock GPUs: PROFILE for every node, or node-1=PROFILE,node-2=PROFILE; without "
        "--driver-spec it runs the reference driver on those nodes, with it it fills {gpus}",
    )
    p.add_argument(
        "--state-dir",
        default=None,
        help="per-node dirs DIR/<node>/{plugins_registry,plugins,cdi,driver-state}",
    )
    p.add_argument(
        "--driver-command",
        default=None,
        help='with --gpus: the reference driver variant to run (default "<python> -m driver")',
    )
    p.add_argument(
        "--driver-arg",
        action="append",
        default=[],
        help="with --gpus: extra argument for the reference driver (repeatable)",
    )
    p.add_argument(
        "--slice-wipe-delay",
        type=float,
        default=30.0,
        help="seconds before the kubelet deletes an unreachable driver's slices",
    )
    # Lifetime (set by the suite's sim provider): stop when the parent's pipe closes, i.e. the parent died,
    # and then remove the parent's work dir, which nobody else is left to remove.
    p.add_argument(
        "--exit-with-fd",
        type=int,
        default=None,
        help="stop when this inherited fd (the parent's pipe) reads EOF",
    )
    p.add_argument(
        "--orphan-cleanup",
        default=None,
        help="with --exit-with-fd: remove this directory after stopping because the parent died",
    )
    return p


def _say(line: str) -> None:
    """A status line for whoever reads our stdout; a reader that went away is not an error here."""
    with contextlib.suppress(BrokenPipeError, ValueError):
        print(line, flush=True)


def parse_nodes(text: str) -> list[str]:
    nodes = [n.strip() for n in text.split(",") if n.strip()]
    if len(set(nodes)) != len(nodes):
        raise ValueError(f"--nodes {text!r} names a node twice")
    for n in nodes:
        if not _DNS_SUBDOMAIN.match(n) or len(n) > 253:
            raise ValueError(
                f"--nodes: {n!r} is not a valid node name (a lower-case DNS subdomain: a-z, "
                "0-9, '-' and '.'); rename it, e.g. node-1"
            )
    return nodes


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.log_level.upper() not in _LOG_LEVELS:
            raise ValueError(f"--log-level {args.log_level!r} is not one of {', '.join(_LOG_LEVELS)}")
        if not 0 <= args.port <= 65535:
            raise ValueError(f"--port {args.port} is not a TCP port; use 0 (any free port) to 65535")
        remote = args.apiserver_kubeconfig is not None
        if not remote and not args.kubeconfig:
            raise ValueError("--kubeconfig is required (or --apiserver-kubeconfig to run only nodes)")
        if not remote and (args.node_kubeconfig_dir or args.kubelet_tls):
            raise ValueError("--node-kubeconfig-dir and --kubelet-tls need --apiserver-kubeconfig")
        if remote and (args.port or args.feature_gates or args.kube_version != DEFAULT_VERSION):
            raise ValueError(
                "--port, --feature-gates and --kube-version are the in-process API server's; the API "
                "server --apiserver-kubeconfig names has its own"
            )
        kubelet_tls = None
        if args.kubelet_tls:
            parts = [Path(x) for x in args.kubelet_tls.split(",")]
            if len(parts) != 3 or not all(x.is_file() for x in parts):
                raise ValueError("--kubelet-tls wants CERT,KEY,CLIENT_CA: three existing files")
            kubelet_tls = (parts[0], parts[1], parts[2])
        if args.orphan_cleanup and args.exit_with_fd is None:
            raise ValueError("--orphan-cleanup needs --exit-with-fd")
        if args.state_dir and Path(args.state_dir).exists() and not Path(args.state_dir).is_dir():
            raise ValueError(f"--state-dir {args.state_dir} is a file; pass a directory")
        config = SimConfig.from_flags(args.kube_version, args.feature_gates)
        nodes = parse_nodes(args.nodes)
    except ValueError as e:
        print(f"sim: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # A sim that hangs can be asked where (SIGABRT prints every thread's stack to stderr before it dies).
    faulthandler.enable()
    stop = StopSignal()
    orphaned = threading.Event()
    if args.exit_with_fd is not None:
        from drakit.lifetime import exit_when_fd_closes

        def parent_gone() -> None:
            orphaned.set()
            stop.set()

        exit_when_fd_closes(args.exit_with_fd, parent_gone)
    cluster: Any
    if remote:
        from .kubelet.remote import KubeconfigError
        from .kubelet.remotecluster import RemoteCluster

        try:
            cluster = RemoteCluster(
                Path(args.apiserver_kubeconfig),
                nodes,
                node_kubeconfig_dir=Path(args.node_kubeconfig_dir) if args.node_kubeconfig_dir else None,
                kubelet_tls=kubelet_tls,
            )
        except (KubeconfigError, OSError) as e:
            print(f"sim: {e}", file=sys.stderr)
            return 2
    else:
        try:
            cluster = Cluster(config, nodes=nodes, port=args.port)
        except OSError as e:  # the port is taken: say so before anything else starts
            print(
                f"sim: cannot start the API server on 127.0.0.1:{args.port}: {e}; pick a free --port or 0",
                file=sys.stderr,
            )
            return 1
        # Components are wired here, e.g.: cluster.add(Scheduler(cluster))
        from .scheduler import add_control_plane

        add_control_plane(cluster)  # claim controller + scheduler (issue 3)
    fleet = None
    if args.gpus or args.driver_spec or args.driver_command or args.driver_arg:
        from .kubelet.fleet import add_kubelets, load_spec

        try:
            fleet = add_kubelets(
                cluster,
                args.gpus,
                launch=load_spec(args.driver_spec) if args.driver_spec else None,
                state_dir=args.state_dir,
                driver_command=args.driver_command,
                driver_args=args.driver_arg,
                slice_wipe_delay=args.slice_wipe_delay,
            )
        except ValueError as e:
            print(f"sim: {e}", file=sys.stderr)
            return 2
    if orphaned.is_set():  # the parent died while we started up: nothing to serve, only to clean
        if args.orphan_cleanup:
            shutil.rmtree(args.orphan_cleanup, ignore_errors=True)
        return 0
    from .apiserver.errors import ApiError

    try:
        cluster.start()
    except (OSError, ApiError) as e:
        what = f"reach the API server {cluster.url}" if remote else "start the API server"
        print(f"sim: cannot {what}: {e}", file=sys.stderr)
        return 1
    try:
        if args.kubeconfig:
            cluster.write_kubeconfig(args.kubeconfig)
        with contextlib.suppress(BrokenPipeError):  # the parent died while we started: stop below
            print(f"sim: serving {'nodes of ' if remote else ''}{cluster.url}", flush=True)
        if fleet is not None:
            fleet.report_driver_starts(_say)
        stop.wait()
    finally:
        cluster.stop()
        if orphaned.is_set() and args.orphan_cleanup:
            shutil.rmtree(args.orphan_cleanup, ignore_errors=True)
    if not orphaned.is_set():  # with the parent gone, stdout may be a broken pipe
        print("sim: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
