"""The pytest plugin behind ``make conformance``.

Loaded by ``conformance/scenarios/conftest.py``, so ``pytest conformance/scenarios`` is the whole
command. It checks every input before anything starts (``conformance.validate``), brings up the cluster
through a provider, runs preflight, gives each scenario a ``scenario`` fixture that cleans up after it,
and writes report.json and report.md.

A verdict is complete or it is not a verdict: an interrupted run (SIGINT, SIGTERM, SIGHUP, the
``--run-timeout``), a run stopped by an error of the suite itself, or one whose cluster never came up
is INCOMPLETE, never PASS. Teardown runs in order whatever stopped the run: the scenarios' fixtures,
then the driver, then the cluster; signals that arrive while it runs are noted, not obeyed, and a
SIGKILL still leaves nothing behind because the sim dies with this process.

Exit codes: 0 PASS, 1 FAIL, 3 INCOMPLETE, 4 bad input (see docs/reading-the-report.md).
"""

from __future__ import annotations

import _thread
import contextlib
import importlib
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from conformance import report as report_mod
from conformance.inventory import by_node, capacities_by_device
from conformance.kube import Kube, api_message, raw
from conformance.options import OPTIONS, SHARED_OPTIONS, dest
from conformance.preflight import FatalPreflight, check_dra_api, run_preflight, share_request_problem
from conformance.providers.base import DriverInputError, Provider, ProviderConfig, ProviderError
from conformance.session import Suite
from conformance.templates import TemplateError, load_templates, schema_version
from conformance.validate import BadInput, Inputs, check
from conformance.workloads import NAMESPACE_PREFIX, Scenario

PROVIDERS = {
    "sim": "conformance.providers.sim:SimProvider",
    "local": "conformance.providers.local:LocalProvider",
    "kind": "conformance.providers.kind:KindProvider",
    "existing": "conformance.providers.existing:ExistingProvider",
}
EXIT_BAD_INPUT = report_mod.EXIT_CODES["error"]
EXIT_INCOMPLETE = report_mod.EXIT_CODES["incomplete"]
_STATE = pytest.StashKey["ConformanceRun"]()
# What a check may raise to say the driver is wrong; anything else is an error of the suite itself.
DRIVER_FAILURES: tuple[type[BaseException], ...] = (AssertionError, pytest.fail.Exception)
_INTERRUPTS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance", "GPU-sharing DRA conformance")
    for flag, kw in OPTIONS:
        group.addoption(flag, **kw)
    # pytest-kind registers --keep-cluster and --kubeconfig with the same meaning; share them.
    kind_group = parser.getgroup("kind")
    for flag, kw in SHARED_OPTIONS:
        with contextlib.suppress(ValueError):
            kind_group.addoption(flag, **kw)


def pytest_configure(config: pytest.Config) -> None:
    for cap, desc in report_mod.CAPABILITIES.items():
        config.addinivalue_line("markers", f"{cap}: capability '{cap}': {desc}")
    if config.option.help:
        return
    opts = {dest(flag): config.getoption(dest(flag)) for flag, _ in (*OPTIONS, *SHARED_OPTIONS)}
    try:
        inputs = check(opts)
    except BadInput as exc:
        _write_bad_input_report(Path(opts["report_dir"] or "reports"), str(exc), opts)
        raise pytest.UsageError(str(exc)) from None
    run = ConformanceRun(config, inputs)
    config.stash[_STATE] = run
    run.install_signal_handlers()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _STATE in config.stash:
        _run(config).restore_signal_handlers()


def _write_bad_input_report(report_dir: Path, message: str, opts: dict[str, Any]) -> None:
    """A report that says why the run did not start, unless the report dir itself is the bad input."""
    if report_dir.exists() and not report_dir.is_dir():
        return
    meta = {
        "driver_profile": opts.get("driver_profile"),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    with contextlib.suppress(OSError):
        report_mod.write(report_dir, report_mod.build(meta, [], [], message))


class ConformanceRun:
    """Owns the provider and the report for one pytest session."""

    def __init__(self, config: pytest.Config, inputs: Inputs) -> None:
        self.config = config
        self.inputs = inputs
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
        self.report_dir = Path(config.getoption("report_dir"))
        self.paths: tuple[Path, Path] | None = None
        self._finished = False
        self._old_handlers: dict[int, Any] = {}
        self._timer: threading.Timer | None = None

    # ---- signals --------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in _INTERRUPTS:
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        bound = self.opt("run_timeout")
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
            f"the run timeout ({self.opt('run_timeout'):g}s)"
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
    def opt(self, name: str) -> Any:
        return self.config.getoption(name)

    def fail_early(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
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
        # local: the sim's nodes under upstream's control plane, which acts as fast as the sim's.
        simulated = name in ("sim", "local")
        wait_timeout = self.opt("wait_timeout") or (20.0 if simulated else 120.0)
        settle = self.opt("settle_seconds")
        settle = settle if settle is not None else (1.0 if simulated else 5.0)
        self.work_dir = Path(tempfile.mkdtemp(prefix="gsc-"))
        config = ProviderConfig(
            profile=self.profile,
            work_dir=self.work_dir,
            kubeconfig=kubeconfig,
            gpus=inputs.gpus,
            nodes=inputs.nodes or tuple(n for n in self.opt("nodes").split(",") if n),
            keep_cluster=self.opt("keep_cluster"),
            allow_busy_gpus=self.opt("allow_busy_gpus"),
            driver_command=inputs.driver_command,
            feature_gates=inputs.feature_gates,
            kube_version=inputs.kube_version,
        )
        self.meta["provider"] = name
        try:
            module, _, cls_name = PROVIDERS[name].partition(":")
            provider_cls = getattr(importlib.import_module(module), cls_name)
        except (ImportError, AttributeError) as exc:
            self.fail_early(f"the {name} provider is not available ({exc}); use --cluster sim or existing.")
        try:
            self.provider = provider_cls(config)
            handle = self.provider.start()
        except DriverInputError as exc:
            self.fail_early(str(exc))
        except ProviderError as exc:
            # Inputs were checked already: a cluster that does not come up is not the driver's fault,
            # and no verdict can be given.
            self.fail_early(str(exc), EXIT_INCOMPLETE)
        if handle.simulated:
            why = " (auto: no container engine answered, so no kind)" if self.opt("cluster") == "auto" else ""
            self._loud((handle.banner or report_mod.SIMULATED_BANNER) + why)
        self.meta.update(
            provider=handle.provider,
            kubernetes_version=handle.kubernetes_version,
            simulated=handle.simulated,
            banner=handle.banner,
            kubeconfig=str(handle.kubeconfig),
            nodes=list(handle.nodes),
            cluster_details=handle.details,
        )
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
                templates = load_templates(Path(self.opt("claim_templates")), schema)
            except TemplateError as exc:
                self.fail_early(str(exc))
        try:
            deployment = self.provider.deploy_driver()
        except ProviderError as exc:
            self.fail_early(str(exc))
        self.meta.update(driver_image=deployment.image, driver_version=deployment.version)
        driver_nodes = self.provider.driver_nodes() or (() if name == "existing" else handle.nodes)
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
            provider=self.provider,
            handle=handle,
            deployment=deployment,
            kube=kube,
            schema_version=schema,
            templates=templates,
            preflight=preflight,
            wait_timeout=wait_timeout,
            settle_seconds=settle,
            republish_timeout=self.profile.republish_bound(simulated, wait_timeout),
            gpu_profile=_load_gpu_profile(config.gpus)
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
        if self.work_dir is not None and not self.opt("keep_cluster"):
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


def pytest_report_header(config: pytest.Config) -> list[str]:
    if _STATE not in config.stash:
        return []
    run = _run(config)
    return [
        f"conformance: driver profile {run.profile.name} ({run.profile.driver}), "
        f"cluster {run.inputs.provider}"
    ]


def _load_gpu_profile(spec: str | None) -> dict[str, Any] | None:
    """The mock GPU profile(s) behind --gpus (``NAME``, a path, or ``node=NAME,...``), merged, so the
    publish check can compare published memory with each model's real size."""
    merged: dict[str, Any] = {"gpus": []}
    for part in (spec or "rtx3090x2").split(","):
        path = Path(part.partition("=")[2] or part) if "=" in part else Path(part)
        if not path.suffix:
            path = Path(__file__).resolve().parent.parent / "fixtures" / "gpus" / f"{path}.yaml"
        with contextlib.suppress(OSError, yaml.YAMLError):
            data = yaml.safe_load(path.read_text())
            if isinstance(data, dict):
                merged["gpus"] += list(data.get("gpus") or [])
    return merged if merged["gpus"] else None


def _run(config: pytest.Config) -> ConformanceRun:
    return config.stash[_STATE]


def capability_of(item: pytest.Item) -> str:
    caps = [m.name for m in item.iter_markers() if m.name in report_mod.CAPABILITIES]
    return caps[0] if caps else "other"


# ---- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def suite(request: pytest.FixtureRequest) -> Iterator[Suite]:
    run = _run(request.config)
    # Registered before start so a start cut short (a signal, a failure) still stops what it began; as a
    # session fixture it is torn down after every scenario fixture.
    request.addfinalizer(run.finish)
    yield run.start()


@pytest.fixture
def shareable(suite: Suite) -> Suite:
    """The suite, once preflight says there is a shareable GPU to test; otherwise skip with the reason."""
    reason = suite.preflight.skip_reason()
    if reason:
        pytest.skip(reason)
    return suite


@pytest.fixture
def scenario(request: pytest.FixtureRequest, shareable: Suite) -> Iterator[Scenario]:
    name = request.node.originalname.removeprefix("test_").replace("_", "-")[:30].strip("-")
    sc = Scenario(shareable, name)
    request.node.stash[_SCENARIO] = sc
    try:
        yield sc
    finally:
        rep = request.node.stash.get(_CALL_REPORT, None)
        if rep is not None and rep.failed:
            request.node.stash[_DIAG] = collect_diagnostics(sc)
        problems = sc.cleanup()
        if problems and (rep is None or not rep.failed):
            pytest.fail("cleanup left objects behind: " + "; ".join(problems))


_SCENARIO = pytest.StashKey[Scenario]()
_CALL_REPORT = pytest.StashKey[pytest.TestReport]()
_DIAG = pytest.StashKey[dict]()


def collect_diagnostics(sc: Scenario) -> dict[str, Any]:
    """Slices, claims, pods, events and driver logs at the moment of a failure."""
    kube, out = sc.kube, cluster_diagnostics(sc.suite)
    for ns in sc.namespaces:
        out[f"claims {ns}"] = [
            {"name": (c.get("metadata") or {}).get("name"), "status": c.get("status")}
            for c in listing(kube.resource.list_namespaced_resource_claim, ns)
        ]
        out[f"pods {ns}"] = [
            {
                "name": (p.get("metadata") or {}).get("name"),
                "nodeName": (p.get("spec") or {}).get("nodeName"),
                "status": p.get("status"),
            }
            for p in listing(kube.core.list_namespaced_pod, ns)
        ]
        out[f"events {ns}"] = [
            f"{e.get('type')} {(e.get('involvedObject') or {}).get('name')} "
            f"{e.get('reason')}: {e.get('message')}"
            for e in listing(kube.core.list_namespaced_event, ns)
        ]
    return out


def listing(call: Any, *args: Any) -> list[dict[str, Any]]:
    try:
        return raw(call, *args).get("items") or []
    except Exception as exc:  # diagnostics must never hide the failure itself
        return [{"error": f"{type(exc).__name__}: {exc}"}]


def cluster_diagnostics(suite: Suite) -> dict[str, Any]:
    """What every failure carries: the driver's slices and logs."""
    out: dict[str, Any] = {
        "resourceslices": [
            s
            for s in listing(suite.kube.resource.list_resource_slice)
            if (s.get("spec") or {}).get("driver") == suite.profile.driver
        ]
    }
    try:
        for node, text in suite.provider.driver_logs(tail=80).items():
            out[f"driver log {node}"] = text
    except Exception as exc:
        out["driver logs"] = f"unavailable: {type(exc).__name__}: {exc}"
    return out


# ---- hooks ----------------------------------------------------------------------------------------
_REPORTS = pytest.StashKey[list]()
_T0 = pytest.StashKey[float]()
_CHECK_MESSAGE = pytest.StashKey[str]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.user_properties.append(("capability", capability_of(item)))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    item.stash[_T0] = time.monotonic()
    item.stash[_REPORTS] = []
    result = yield
    if _STATE in item.config.stash:
        _record(item, item.stash[_REPORTS])
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    if rep.when == "call":
        item.stash[_CALL_REPORT] = rep
    if rep.failed and call.excinfo is not None and call.excinfo.errisinstance(AssertionError):
        # A failed check's message is its verdict: report it without the exception's type name.
        item.stash.setdefault(_CHECK_MESSAGE, str(call.excinfo.value).strip())
    if rep.failed and call.excinfo is not None and not call.excinfo.errisinstance(DRIVER_FAILURES):
        # Not an assertion about the driver: the suite itself broke, so this check has no verdict.
        item.stash[_SUITE_ERROR] = f"suite error ({call.excinfo.typename}): {call.excinfo.exconly()[-1000:]}"
        rep.user_properties.append(("conformance_outcome", "error"))
    item.stash.setdefault(_REPORTS, []).append(rep)
    return rep


_SUITE_ERROR = pytest.StashKey[str]()


def _record(item: pytest.Item, reports: list[pytest.TestReport]) -> None:
    run = _run(item.config)
    outcome, reason = "passed", ""
    for rep in reports:
        if rep.failed:
            outcome, reason = "failed", item.stash.get(_CHECK_MESSAGE, "") or _short_reason(rep)
            break
        if rep.skipped:
            outcome = "skipped"
            longrepr = rep.longrepr
            reason = str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)
            reason = reason.removeprefix("Skipped: ")
    if not reports:
        return
    if outcome == "failed" and _SUITE_ERROR in item.stash:
        outcome, reason = "error", item.stash[_SUITE_ERROR]
    sc = item.stash.get(_SCENARIO, None)
    diagnostics = item.stash.get(_DIAG, {})
    if outcome == "failed" and not diagnostics and run.suite is not None:
        diagnostics = cluster_diagnostics(run.suite)
    run.checks.append(
        report_mod.CheckResult(
            nodeid=item.nodeid,
            capability=capability_of(item),
            outcome=outcome,
            duration=time.monotonic() - item.stash.get(_T0, time.monotonic()),
            reason=reason,
            gpus=sorted({p.gpu.label for p in sc.pods if p.gpu}) if sc else [],
            diagnostics=diagnostics,
        )
    )


def _short_reason(rep: pytest.TestReport) -> str:
    crash = getattr(rep.longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message)
    return str(rep.longrepr)[-2000:]


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _STATE not in session.config.stash:
        return
    run = _run(session.config)
    if exitstatus == pytest.ExitCode.INTERRUPTED and run.interrupted is None:
        run.interrupted = "KeyboardInterrupt"
    if not run.attempted and run.error is None and run.interrupted is None:
        return  # nothing asked for a cluster (collect-only, or every test deselected): no verdict
    run._tearing_down = True
    if run._timer is not None:
        run._timer.cancel()
    # Scenario fixtures first (an interrupted run still has them on the stack), then the session's
    # suite fixture, whose finalizer removes the driver and stops the cluster. pytest's own
    # sessionfinish would do this too, but after the report is written.
    try:
        session._setupstate.teardown_exact(None)
    except BaseException as exc:
        run.incomplete.append(f"teardown of the scenarios failed ({type(exc).__name__}: {exc})")
    run.finish()
    run.paths = run.write_report()
    xml = session.config.stash.get(_junit_xml_key(), None)
    if xml is not None:
        xml.add_global_property("conformance_verdict", run.verdict.upper())
        for reason in run.incomplete_reasons():
            xml.add_global_property("conformance_incomplete", reason)
    session.exitstatus = report_mod.EXIT_CODES[run.verdict]


def _junit_xml_key() -> Any:
    from _pytest.junitxml import xml_key

    return xml_key


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if _STATE not in config.stash:
        return
    run = _run(config)
    paths = getattr(run, "paths", None)
    if paths is None:
        return
    tr = terminalreporter
    tr.section("GPU-sharing conformance")
    if run.meta.get("simulated"):
        tr.write_line(run.meta.get("banner") or report_mod.SIMULATED_BANNER, red=True, bold=True)
    if run.error:
        tr.write_line(f"stopped early: {run.error}", red=True, bold=True)
    for reason in run.incomplete_reasons():
        tr.write_line(f"INCOMPLETE: {reason}", yellow=True, bold=True)
    for cap, v in report_mod.verdicts(run.checks).items():
        colour = {"pass": {"green": True}, "fail": {"red": True}}.get(v["verdict"], {"yellow": True})
        reason = f"  ({v['reason'][:160]})" if v["reason"] else ""
        tr.write_line(f"{cap:<13} {v['verdict'].upper():<8}{reason}", **colour)
    for r in run.suite.rejections if run.suite else []:
        tr.write_line(
            f"rejection {r.scenario} {r.pod}: decided {r.decided_at}, seen after "
            f"{r.signal_after:.2f}s, verdict after {r.verdict_after:.2f}s"
        )
    code = report_mod.EXIT_CODES[run.verdict]
    tr.write_line(
        f"Overall: {run.verdict.upper()} (exit code {code}); wall time "
        f"{run.meta.get('wall_seconds')}s; report: {paths[0]} and {paths[1]}",
        bold=True,
    )
