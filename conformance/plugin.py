"""The pytest plugin behind ``make conformance`` and ``gpu-share-conformance``: hooks and fixtures only.

Loaded by ``conformance/scenarios/conftest.py``, so ``pytest conformance/scenarios`` is the whole
command. It reads its options into the run configuration (conformance/config.py), checks every input
before anything starts (``conformance.validate``), has ``conformance.bringup`` bring up the cluster
through a provider and run preflight, gives each scenario a ``scenario`` fixture that cleans up after it
(a failure's diagnostics: ``conformance.diagnostics``), and writes report.json and report.md.

A verdict is complete or it is not a verdict: an interrupted run (SIGINT, SIGTERM, SIGHUP, the
``--run-timeout``), a run stopped by an error of the suite itself, or one whose cluster never came up
is INCOMPLETE, never PASS. Teardown runs in order whatever stopped the run: the scenarios' fixtures,
then the driver, then the cluster; signals that arrive while it runs are noted, not obeyed, and a
SIGKILL still leaves nothing behind because the sim dies with this process.

Exit codes: 0 PASS, 1 FAIL, 3 INCOMPLETE, 4 bad input (see docs/reading-the-report.md).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from conformance import report as report_mod
from conformance.bringup import ConformanceRun
from conformance.config import RunConfig
from conformance.diagnostics import cluster_diagnostics, collect_diagnostics
from conformance.options import OPTIONS, SHARED_OPTIONS, dest
from conformance.session import Suite
from conformance.validate import BadInput, check
from conformance.workloads import Scenario

_STATE = pytest.StashKey[ConformanceRun]()
# What a check may raise to say the driver is wrong; anything else is an error of the suite itself.
DRIVER_FAILURES: tuple[type[BaseException], ...] = (AssertionError, pytest.fail.Exception)
# How pytest-timeout words its own expiry (a pytest.fail.Exception too). The suite's waits carry their own
# bounds and say what they waited for; a check cut off by pytest's per-test bound has no verdict.
PYTEST_TIMEOUT_PREFIX = "Timeout (>"


def is_driver_failure(excinfo: pytest.ExceptionInfo[BaseException]) -> bool:
    """Whether an exception out of a check says the driver is wrong (otherwise the suite broke)."""
    if not excinfo.errisinstance(DRIVER_FAILURES):
        return False
    return not (
        excinfo.errisinstance(pytest.fail.Exception) and str(excinfo.value).startswith(PYTEST_TIMEOUT_PREFIX)
    )


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
    options = RunConfig.from_options(
        {dest(flag): config.getoption(dest(flag)) for flag, _ in (*OPTIONS, *SHARED_OPTIONS)}
    )
    try:
        inputs = check(options)
    except BadInput as exc:
        _write_bad_input_report(options, str(exc))
        raise pytest.UsageError(str(exc)) from None
    run = ConformanceRun(config, inputs)
    config.stash[_STATE] = run
    run.install_signal_handlers()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _STATE in config.stash:
        _run(config).restore_signal_handlers()


def _write_bad_input_report(options: RunConfig, message: str) -> None:
    """A report that says why the run did not start, unless the report dir itself is the bad input."""
    report_dir = options.report_dir
    if report_dir.exists() and not report_dir.is_dir():
        return
    meta = {
        "driver_profile": options.driver_profile,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    with contextlib.suppress(OSError):
        report_mod.write(report_dir, report_mod.build(meta, [], [], message))


def pytest_report_header(config: pytest.Config) -> list[str]:
    if _STATE not in config.stash:
        return []
    run = _run(config)
    return [
        f"conformance: driver profile {run.profile.name} ({run.profile.driver}), "
        f"cluster {run.inputs.provider}"
    ]


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
    if rep.failed and call.excinfo is not None and not is_driver_failure(call.excinfo):
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
