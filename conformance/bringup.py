"""Bring-up and teardown of one conformance run: the cluster, the driver, preflight, the report.

``ConformanceRun`` is what the pytest plugin (conformance/plugin.py, hooks and fixtures only) keeps for a
session. ``start`` brings up the cluster through the provider the input check chose, deploys the driver,
runs preflight and returns the ``Suite`` the scenarios use; ``finish`` takes everything down again in
order, and ``write_report`` writes report.json and report.md. Every option comes from the run
configuration (conformance/config.py) the input check was given.

A verdict is complete or it is not a verdict: an interrupted run (SIGINT, SIGTERM, SIGHUP, the
``--run-timeout``), a run stopped by an error of the suite itself, or one whose cluster never came up
is INCOMPLETE, never PASS. Signals that arrive during teardown are noted, not obeyed.
"""

from __future__ import annotations

import _thread
import contextlib
import dataclasses
import importlib
import shutil
import signal
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from conformance import report as report_mod
from conformance.config import DEFAULT_MOCK_GPUS, RunConfig
from conformance.inventory import by_node, capacities_by_device
from conformance.kube import Kube, api_message, raw
from conformance.preflight import FatalPreflight, check_dra_api, run_preflight, share_request_problem
from conformance.providers.base import InputError, Provider, ProviderConfig, ProviderError
from conformance.session import Suite
from conformance.templates import TemplateError, load_templates, schema_version
from conformance.validate import Inputs
from conformance.workloads import NAMESPACE_PREFIX
from drakit.gpuprofiles import InventoryError, resolve_profile

# --cluster -> the provider class ("module:Class"), imported only when chosen (kind's needs an extra).
PROVIDERS = {
    "sim": "conformance.providers.sim:SimProvider",
    "local": "conformance.providers.local:LocalProvider",
    "kind": "conformance.providers.kind:KindProvider",
    "existing": "conformance.providers.existing:ExistingProvider",
}
EXIT_BAD_INPUT = report_mod.EXIT_CODES["error"]
EXIT_INCOMPLETE = report_mod.EXIT_CODES["incomplete"]
INTERRUPTS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class ConformanceRun:
    """Owns the provider and the report for one pytest session."""

    def __init__(self, config: pytest.Config, inputs: Inputs) -> None:
        """``config`` is pytest's (for its terminal and exit); the run's own options are
        ``inputs.config``, the RunConfig the input check read."""
        self.config = config
        self.inputs = inputs
        self.options: RunConfig = inputs.config
        self.profile = inputs.profile
        self.provider: Provider | None = None
        self.suite: Suite | None = None
        self.error: str | None = None  # why the run stopped before the scenarios
        self.exit_code: int | None = None  # with error: 4 bad input, 3 the run could not go on
        self.attempted = False  # a scenario asked for the cluster
        self.interrupted: str | None = None  # the signal (or run timeout) that stopped the run
        self.timed_out = False
        self.incomplete: list[str] = []  # errors of the suite itself, teardown included
        self.teardown_notes: list[str] = []
        self.checks: list[report_mod.CheckResult] = []
        self.meta: dict[str, Any] = {
            "driver_profile": self.profile.name,
            "driver_name": self.profile.driver,
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        self.t0 = time.monotonic()
        self.work_dir: Path | None = None  # made when the cluster starts, never before
        self.report_dir = self.options.report_dir
        self.paths: tuple[Path, Path] | None = None
        self._finished = False
        self._old_handlers: dict[int, Any] = {}
        self._timer: threading.Timer | None = None

    # ---- signals --------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in INTERRUPTS:
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        bound = self.options.run_timeout
        if bound:
            self._timer = threading.Timer(bound, self._on_run_timeout)
            self._timer.daemon = True
            self._timer.start()

    def restore_signal_handlers(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for sig, old in self._old_handlers.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, old)
        self._old_handlers.clear()

    def _on_run_timeout(self) -> None:
        self.timed_out = True
        _thread.interrupt_main(signal.SIGINT)

    def _on_signal(self, signum: int, frame: Any) -> None:
        name = (
            f"the run timeout ({self.options.run_timeout:g}s)"
            if self.timed_out and self.interrupted is None
            else signal.Signals(signum).name
        )
        if self.interrupted is None and not self._tearing_down:
            self.interrupted = name
            raise KeyboardInterrupt(name)
        # Teardown is running (or a first signal already stopped the run): finish cleaning up.
        self.interrupted = self.interrupted or name
        with contextlib.suppress(OSError):
            sys.stderr.write(
                f"\nconformance: {name} received; cleaning up before exiting (the cluster and "
                "everything it started stop with this process even if it is killed).\n"
            )

    _tearing_down = False

    # ---- start-up -------------------------------------------------------------------------------
    def fail_early(self, message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
        self.error = message
        self.exit_code = code
        # From here pytest unwinds to the teardown; a signal now must not replace this exit with an
        # uncaught KeyboardInterrupt (pytest handles only one of them).
        self._tearing_down = True
        pytest.exit(message, returncode=code)

    def start(self) -> Suite:
        if self.suite is not None:
            return self.suite
        if self.error:
            pytest.exit(self.error, returncode=self.exit_code or EXIT_BAD_INPUT)
        self.attempted = True
        inputs = self.inputs
        name = inputs.provider
        kubeconfig = inputs.kubeconfig
        # local: upstream's control plane on this machine decides as fast as the sim's, so a wait for
        # nothing to happen (settle) is as short; a wait for a pod to run is the sim's only where the
        # nodes are the sim's (a real kubelet backs off, retries, pulls).
        simulated = name in ("sim", "local")
        simulated_nodes = name == "sim" or (name == "local" and inputs.node_kind != "real")
        wait_timeout = self.options.wait_timeout_for(simulated_nodes)
        settle = self.options.settle_seconds_for(simulated)
        self.work_dir = Path(tempfile.mkdtemp(prefix="gsc-"))
        config = ProviderConfig(
            profile=self.profile,
            work_dir=self.work_dir,
            kubeconfig=kubeconfig,
            gpus=inputs.gpus,
            nodes=inputs.nodes or self.options.node_names(),
            keep_cluster=self.options.keep_cluster,
            allow_busy_gpus=self.options.allow_busy_gpus,
            driver_command=inputs.driver_command,
            feature_gates=inputs.feature_gates,
            kube_version=inputs.kube_version,
            node_kind=inputs.node_kind,
        )
        self.meta["provider"] = name
        try:
            module, _, cls_name = PROVIDERS[name].partition(":")
            provider_cls = getattr(importlib.import_module(module), cls_name)
        except (ImportError, AttributeError) as exc:
            self.fail_early(f"the {name} provider is not available ({exc}); use --cluster sim or existing.")
        try:
            # A local name too: self.provider is None until here, and the steps below need one.
            provider: Provider = provider_cls(config)
            self.provider = provider
            handle = provider.start()
        except InputError as exc:  # the driver or the cluster's binaries cannot run: bad input
            self.fail_early(str(exc))
        except ProviderError as exc:
            # Inputs were checked already: a cluster that does not come up is not the driver's fault,
            # and no verdict can be given.
            self.fail_early(str(exc), EXIT_INCOMPLETE)
        if handle.simulated:
            why = (
                " (auto: no container engine answered, so no kind)" if self.options.cluster == "auto" else ""
            )
            self._loud((handle.banner or report_mod.SIMULATED_BANNER) + why)
        self.meta.update(
            provider=handle.provider,
            kubernetes_version=handle.kubernetes_version,
            simulated=handle.simulated,
            kubeconfig=str(handle.kubeconfig),
            nodes=list(handle.nodes),
            cluster_details=handle.details,
        )
        if handle.description:
            self.meta["cluster"] = handle.description
        if handle.pod_image:
            # The cluster pulls from no registry: its own image stands in for the profile's pod.image.
            self.meta["pod_image"] = handle.pod_image
            self.profile = dataclasses.replace(self.profile, pod_image=handle.pod_image)
        if handle.banner:
            # Only a provider's own banner (local) goes into the meta: an empty one there would override
            # the generic SIMULATED banner report.build() gives every other simulated run.
            self.meta["banner"] = handle.banner
        kube = Kube.from_kubeconfig(handle.kubeconfig)
        try:
            version = raw(kube.version.get_code)
        except ApiException as exc:
            self.fail_early(
                f"the cluster answered /version with {exc.status} {api_message(exc)}; check the "
                "kubeconfig's credentials."
            )
        except Exception as exc:  # connection refused, DNS, TLS: urllib3 raises several types
            server = kube.api.configuration.host
            self.fail_early(
                f"cannot reach the cluster at {server} ({type(exc).__name__}); check that it is "
                "running and that the kubeconfig points at it.",
                EXIT_INCOMPLETE,
            )
        self.meta["kubernetes_version"] = version.get("gitVersion") or handle.kubernetes_version
        try:
            check_dra_api(kube)
        except FatalPreflight as exc:
            self.fail_early(str(exc))
        schema = schema_version(self.meta["kubernetes_version"])
        templates = inputs.templates
        if schema != inputs.schema:
            try:
                templates = load_templates(self.options.claim_templates, schema)
            except TemplateError as exc:
                self.fail_early(str(exc))
        try:
            deployment = provider.deploy_driver()
        except ProviderError as exc:
            self.fail_early(str(exc))
        self.meta.update(driver_image=deployment.image, driver_version=deployment.version)
        driver_nodes = provider.driver_nodes() or (() if name == "existing" else handle.nodes)
        self.meta["driver_nodes"] = list(driver_nodes)
        preflight = run_preflight(
            kube,
            self.profile,
            driver_nodes,
            slice_timeout=wait_timeout,
            own_namespace_prefix=NAMESPACE_PREFIX,
        )
        if preflight.busy and not config.allow_busy_gpus:
            busy = "; ".join(preflight.busy)
            self.fail_early(
                f"GPUs under test already hold allocations ({busy}); free them "
                "or pass --allow-busy-gpus to test only the idle ones."
            )
        self.meta["gpus"] = by_node(preflight.gpus)
        self.meta["capacities"] = capacities_by_device(preflight.gpus)
        self.meta["share_requests"] = dict(self.profile.share_requests)
        problem = share_request_problem(self.profile, preflight.gpus)
        if problem:
            self.fail_early(problem)
        self.meta["gate"] = preflight.gate_detail
        self.suite = Suite(
            profile=self.profile,
            provider=provider,
            handle=handle,
            deployment=deployment,
            kube=kube,
            schema_version=schema,
            templates=templates,
            preflight=preflight,
            wait_timeout=wait_timeout,
            settle_seconds=settle,
            republish_timeout=self.profile.republish_bound(simulated, wait_timeout),
            gpu_profile=load_gpu_profile(config.gpus)
            if config.gpus or (simulated and self.profile.sim is not None and self.profile.sim.mock_gpus)
            else None,
        )
        return self.suite

    def _loud(self, text: str) -> None:
        """Print past pytest's output capture: the user must see this even in the middle of a test."""
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        capman = self.config.pluginmanager.get_plugin("capturemanager")
        if tr is None:
            return
        with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
            bar = "!" * 100
            for line in ("", bar, text, bar):
                tr.write_line(line, red=True, bold=True)

    # ---- shutdown -------------------------------------------------------------------------------
    def finish(self) -> None:
        """Driver, then cluster, then the work dir; each step runs even if the one before failed, and
        signals arriving meanwhile do not cut it short. Safe to call more than once."""
        if self._finished:
            return
        self._finished = True
        self._tearing_down = True
        steps = []
        if self.suite is not None:
            suite = self.suite
            steps.append(("deleting the scenarios' namespaces", lambda: self._delete_leftovers(suite)))
        if self.provider is not None:
            provider = self.provider
            steps += [
                ("removing the driver", provider.teardown_driver),
                ("stopping the cluster", provider.stop),
            ]
        if self.suite is not None:
            steps.append(("closing the API client", self.suite.kube.close))
        for what, step in steps:
            try:
                step()
            except BaseException as exc:
                self.incomplete.append(f"teardown: {what} failed ({type(exc).__name__}: {exc})")
        if self.work_dir is not None and not self.options.keep_cluster:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def _delete_leftovers(self, suite: Suite) -> None:
        leftovers = list(suite.created_namespaces)
        if leftovers:
            self.teardown_notes += suite.delete_namespaces(leftovers)

    def incomplete_reasons(self) -> list[str]:
        reasons = []
        if self.interrupted:
            reasons.append(f"the run was interrupted by {self.interrupted}")
        if self.error and self.exit_code == EXIT_INCOMPLETE:
            reasons.append(f"the run could not go on: {self.error}")
        return reasons + self.incomplete

    def write_report(self) -> tuple[Path, Path]:
        self.meta["wall_seconds"] = round(time.monotonic() - self.t0, 2)
        if self.teardown_notes:
            self.meta["teardown_problems"] = self.teardown_notes
        rejections = self.suite.rejections if self.suite else []
        bad_input = self.error if self.exit_code == EXIT_BAD_INPUT else None
        data = report_mod.build(
            self.meta, self.checks, rejections, bad_input, incomplete=self.incomplete_reasons()
        )
        self.verdict = data["verdict"]
        return report_mod.write(self.report_dir, data)

    verdict = ""


def load_gpu_profile(spec: str | None) -> dict[str, Any] | None:
    """The mock GPU profile(s) behind --gpus (``NAME``, a path, or ``node=NAME,...``), merged, so the
    publish check can compare published memory with each model's real size."""
    merged: dict[str, Any] = {"gpus": []}
    for part in (spec or DEFAULT_MOCK_GPUS).split(","):
        # The driver's own look-up (drakit), so both always read the same file; a profile the input check
        # let through but that cannot be read now only loses this comparison.
        with contextlib.suppress(InventoryError, OSError, yaml.YAMLError):
            data = yaml.safe_load(resolve_profile(part.partition("=")[2] or part).read_text())
            if isinstance(data, dict):
                merged["gpus"] += list(data.get("gpus") or [])
    return merged if merged["gpus"] else None
