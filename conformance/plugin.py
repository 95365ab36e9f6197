"""The pytest plugin behind ``make conformance``.

Loaded by ``conformance/scenarios/conftest.py``, so ``pytest conformance/scenarios`` is the whole
command. It parses the options, brings up the cluster through a provider, runs preflight, gives each
scenario a ``scenario`` fixture that cleans up after it, and writes report.json and report.md.
Bad input stops the run before anything is created, with one sentence naming the problem and the fix.
"""

from __future__ import annotations

import contextlib
import importlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from conformance import report as report_mod
from conformance.inventory import by_node
from conformance.kube import Kube, api_message, raw
from conformance.preflight import FatalPreflight, check_dra_api, run_preflight
from conformance.profiles import ProfileError, load_profile
from conformance.providers.base import Provider, ProviderConfig, ProviderError
from conformance.session import Suite
from conformance.templates import CLAIMS_DIR, TemplateError, load_templates, schema_version
from conformance.workloads import NAMESPACE_PREFIX, Scenario

PROVIDERS = {
    "sim": "conformance.providers.sim:SimProvider",
    "kind": "conformance.providers.kind:KindProvider",
    "existing": "conformance.providers.existing:ExistingProvider",
}
EXIT_BAD_INPUT = 4
_STATE = pytest.StashKey["ConformanceRun"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance", "GPU-sharing DRA conformance")
    group.addoption("--cluster", choices=("auto", "kind", "existing", "sim"), default="auto",
                    help="where to run: kind, an existing cluster (--kubeconfig), sim, or auto "
                         "(existing when "
                         "--kubeconfig is given, kind when a container engine answers, else sim)")
    group.addoption("--driver-profile", default="reference",
                    help="driver profile: a name in fixtures/drivers or a path (default: reference)")
    group.addoption("--gpus", default=None, help="mock GPU profile for kind/sim (name in "
                                                 "fixtures/gpus or path)")
    group.addoption("--report-dir", default="reports", help="where report.json and report.md go")
    group.addoption("--claim-templates", default=str(CLAIMS_DIR),
                    help="directory of ResourceClaimTemplates to validate and use (default: the seed's)")
    group.addoption("--wait-timeout", type=float, default=None,
                    help="bound in seconds for each wait (default 120, 20 on sim)")
    group.addoption("--settle-seconds", type=float, default=None,
                    help="how long a rejected pod must stay unscheduled (default 5, 1 on sim)")
    group.addoption("--allow-busy-gpus", action="store_true",
                    help="existing: run even if GPUs under test already hold allocations")
    group.addoption("--nodes", default="node-1,node-2", help="sim: node names (comma separated)")
    group.addoption("--sim-driver-command", default=None,
                    help="sim: command that starts the driver instead of 'python -m driver' (broken "
                         "variants)")
    group.addoption("--sim-feature-gates", default="",
                    help="sim: apiserver/scheduler feature gates, e.g. DRAConsumableCapacity=false")
    group.addoption("--sim-kube-version", default=None, help="sim: Kubernetes version to emulate")
    # pytest-kind registers --keep-cluster and --kubeconfig with the same meaning; share them.
    kind_group = parser.getgroup("kind")
    for opt, kw in (("--keep-cluster", {"action": "store_true", "help": "keep the cluster after the run"}),
                    ("--kubeconfig", {"default": None, "help": "kubeconfig of an existing cluster"})):
        with contextlib.suppress(ValueError):
            kind_group.addoption(opt, **kw)


def pytest_configure(config: pytest.Config) -> None:
    for cap, desc in report_mod.CAPABILITIES.items():
        config.addinivalue_line("markers", f"{cap}: capability '{cap}': {desc}")
    if config.option.help:
        return
    try:
        profile = load_profile(config.getoption("driver_profile"))
    except ProfileError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[_STATE] = ConformanceRun(config, profile)


class ConformanceRun:
    """Owns the provider and the report for one pytest session."""

    def __init__(self, config: pytest.Config, profile: Any) -> None:
        self.config = config
        self.profile = profile
        self.provider: Provider | None = None
        self.suite: Suite | None = None
        self.error: str | None = None
        self.checks: list[report_mod.CheckResult] = []
        self.meta: dict[str, Any] = {"driver_profile": profile.name, "driver_name": profile.driver,
                                     "started": datetime.now(UTC).isoformat(timespec="seconds")}
        self.t0 = time.monotonic()
        self.work_dir = Path(tempfile.mkdtemp(prefix="gsc-"))
        self.report_dir = Path(config.getoption("report_dir"))
        self.paths: tuple[Path, Path] | None = None

    # ---- start-up -------------------------------------------------------------------------------
    def opt(self, name: str) -> Any:
        return self.config.getoption(name)

    def choose_provider(self) -> str:
        cluster = self.opt("cluster")
        if cluster != "auto":
            return cluster
        if self.opt("kubeconfig"):
            return "existing"
        if _container_engine_answers():
            return "kind"
        return "sim"

    def fail_early(self, message: str) -> None:
        self.error = message
        pytest.exit(message, returncode=EXIT_BAD_INPUT)

    def start(self) -> Suite:
        if self.suite is not None:
            return self.suite
        if self.error:
            pytest.exit(self.error, returncode=EXIT_BAD_INPUT)
        name = self.choose_provider()
        kubeconfig = self.opt("kubeconfig")
        if name == "existing":
            if not kubeconfig:
                self.fail_early("--cluster existing needs --kubeconfig PATH; pass the kubeconfig of "
                                "the cluster to test.")
            if not Path(kubeconfig).is_file():
                self.fail_early(f"kubeconfig {kubeconfig} does not exist; pass --kubeconfig with "
                                "the path of an existing kubeconfig file.")
        simulated = name == "sim"
        wait_timeout = self.opt("wait_timeout") or (20.0 if simulated else 120.0)
        settle = self.opt("settle_seconds")
        settle = settle if settle is not None else (1.0 if simulated else 5.0)
        gates = {}
        for item in filter(None, (self.opt("sim_feature_gates") or "").split(",")):
            key, _, value = item.partition("=")
            gates[key.strip()] = value.strip().lower() in ("1", "true", "on", "yes")
        config = ProviderConfig(
            profile=self.profile, work_dir=self.work_dir,
            kubeconfig=Path(kubeconfig) if kubeconfig else None, gpus=self.opt("gpus"),
            nodes=tuple(n for n in self.opt("nodes").split(",") if n), keep_cluster=self.opt("keep_cluster"),
            allow_busy_gpus=self.opt("allow_busy_gpus"), driver_command=self.opt("sim_driver_command"),
            feature_gates=gates, kube_version=self.opt("sim_kube_version"))
        self.meta["provider"] = name
        try:
            module, _, cls_name = PROVIDERS[name].partition(":")
            provider_cls = getattr(importlib.import_module(module), cls_name)
        except (ImportError, AttributeError) as exc:
            self.fail_early(f"the {name} provider is not available ({exc}); use --cluster sim or existing.")
        try:
            self.provider = provider_cls(config)
            handle = self.provider.start()
        except ProviderError as exc:
            self.fail_early(str(exc))
        if handle.simulated:
            why = " (auto: no container engine answered, so no kind)" if self.opt("cluster") == "auto" else ""
            self._loud(report_mod.SIMULATED_BANNER + why)
        self.meta.update(provider=handle.provider, kubernetes_version=handle.kubernetes_version,
                         simulated=handle.simulated, kubeconfig=str(handle.kubeconfig),
                         nodes=list(handle.nodes), cluster_details=handle.details)
        kube = Kube.from_kubeconfig(handle.kubeconfig)
        try:
            version = raw(kube.version.get_code)
        except ApiException as exc:
            self.fail_early(f"the cluster answered /version with {exc.status} {api_message(exc)}; check the "
                            "kubeconfig's credentials.")
        except Exception as exc:  # connection refused, DNS, TLS: urllib3 raises several types
            server = kube.api.configuration.host
            self.fail_early(f"cannot reach the cluster at {server} ({type(exc).__name__}); check that it is "
                            "running and that the kubeconfig points at it.")
        self.meta["kubernetes_version"] = version.get("gitVersion") or handle.kubernetes_version
        try:
            check_dra_api(kube)
        except FatalPreflight as exc:
            self.fail_early(str(exc))
        schema = schema_version(self.meta["kubernetes_version"])
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
        preflight = run_preflight(kube, self.profile, driver_nodes, slice_timeout=wait_timeout,
                                  own_namespace_prefix=NAMESPACE_PREFIX)
        if preflight.busy and not config.allow_busy_gpus:
            busy = "; ".join(preflight.busy)
            self.fail_early(f"GPUs under test already hold allocations ({busy}); free them "
                            "or pass --allow-busy-gpus to test only the idle ones.")
        self.meta["gpus"] = by_node(preflight.gpus)
        self.meta["gate"] = preflight.gate_detail
        self.suite = Suite(profile=self.profile, provider=self.provider, handle=handle, deployment=deployment,
                           kube=kube, schema_version=schema, templates=templates, preflight=preflight,
                           wait_timeout=wait_timeout, settle_seconds=settle,
                           gpu_profile=_load_gpu_profile(config.gpus) if config.gpus or simulated else None)
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
        if self.suite is not None:
            leftovers = list(self.suite.created_namespaces)
            if leftovers:
                self.suite.delete_namespaces(leftovers)
        if self.provider is not None:
            try:
                self.provider.teardown_driver()
            finally:
                self.provider.stop()
        if self.suite is not None:
            self.suite.kube.close()
        if not self.opt("keep_cluster"):
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def write_report(self) -> tuple[Path, Path]:
        self.meta["wall_seconds"] = round(time.monotonic() - self.t0, 2)
        rejections = self.suite.rejections if self.suite else []
        data = report_mod.build(self.meta, self.checks, rejections, self.error)
        return report_mod.write(self.report_dir, data)


def pytest_report_header(config: pytest.Config) -> list[str]:
    if _STATE not in config.stash:
        return []
    run = _run(config)
    return [f"conformance: driver profile {run.profile.name} ({run.profile.driver}), "
            f"cluster {config.getoption('cluster')}"]


def _container_engine_answers() -> bool:
    for engine in ("docker", "podman"):
        exe = shutil.which(engine)
        if not exe:
            continue
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            if subprocess.run([exe, "info"], capture_output=True, timeout=15).returncode == 0:
                return True
    return False


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
def suite(request: pytest.FixtureRequest) -> Suite:
    return _run(request.config).start()


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
        out[f"claims {ns}"] = [{"name": (c.get("metadata") or {}).get("name"), "status": c.get("status")}
                               for c in listing(kube.resource.list_namespaced_resource_claim, ns)]
        out[f"pods {ns}"] = [{"name": (p.get("metadata") or {}).get("name"),
                              "nodeName": (p.get("spec") or {}).get("nodeName"), "status": p.get("status")}
                             for p in listing(kube.core.list_namespaced_pod, ns)]
        out[f"events {ns}"] = [f"{e.get('type')} {(e.get('involvedObject') or {}).get('name')} "
                               f"{e.get('reason')}: {e.get('message')}"
                               for e in listing(kube.core.list_namespaced_event, ns)]
    return out


def listing(call: Any, *args: Any) -> list[dict[str, Any]]:
    try:
        return raw(call, *args).get("items") or []
    except Exception as exc:  # diagnostics must never hide the failure itself
        return [{"error": f"{type(exc).__name__}: {exc}"}]


def cluster_diagnostics(suite: Suite) -> dict[str, Any]:
    """What every failure carries: the driver's slices and logs."""
    out: dict[str, Any] = {"resourceslices": [
        s for s in listing(suite.kube.resource.list_resource_slice)
        if (s.get("spec") or {}).get("driver") == suite.profile.driver]}
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
    item.stash.setdefault(_REPORTS, []).append(rep)
    return rep


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
    sc = item.stash.get(_SCENARIO, None)
    diagnostics = item.stash.get(_DIAG, {})
    if outcome == "failed" and not diagnostics and run.suite is not None:
        diagnostics = cluster_diagnostics(run.suite)
    run.checks.append(report_mod.CheckResult(
        nodeid=item.nodeid, capability=capability_of(item), outcome=outcome,
        duration=time.monotonic() - item.stash.get(_T0, time.monotonic()), reason=reason,
        gpus=sorted({p.gpu.label for p in sc.pods if p.gpu}) if sc else [],
        diagnostics=diagnostics))


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
    if run.suite is None and run.provider is None and run.error is None:
        return  # nothing ran (collect-only, or every test deselected)
    try:
        run.finish()
    finally:
        run.paths = run.write_report()


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
        tr.write_line(report_mod.SIMULATED_BANNER, red=True, bold=True)
    if run.error:
        tr.write_line(f"stopped early: {run.error}", red=True, bold=True)
    for cap, v in report_mod.verdicts(run.checks).items():
        colour = {"pass": {"green": True}, "fail": {"red": True}}.get(v["verdict"], {"yellow": True})
        reason = f"  ({v['reason'][:160]})" if v["reason"] else ""
        tr.write_line(f"{cap:<13} {v['verdict'].upper():<8}{reason}", **colour)
    for r in run.suite.rejections if run.suite else []:
        tr.write_line(f"rejection {r.scenario} {r.pod}: decided {r.decided_at}, seen after "
                      f"{r.signal_after:.2f}s, verdict after {r.verdict_after:.2f}s")
    tr.write_line(f"wall time {run.meta.get('wall_seconds')}s; report: {paths[0]} and {paths[1]}")
