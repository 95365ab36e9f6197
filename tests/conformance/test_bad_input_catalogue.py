"""The bad-input catalogue: every input a run reads, broken one way at a time.

Each case runs the input check (``python -m conformance.validate``, the same ``check()`` the pytest
plugin calls before anything starts) and asserts exit code 4, one sentence that names the input and
the field, and that nothing was left behind: no new process, nothing at all in a private TMPDIR. A few
cases then go through the real ``pytest conformance/scenarios`` and ``python -m sim`` command lines.
"""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance import validate

REPO = Path(__file__).resolve().parents[2]
REFERENCE = yaml.safe_load((REPO / "conformance/data/drivers/reference.yaml").read_text())
SEED_CLAIM = yaml.safe_load((REPO / "conformance/data/claims/gpu-6gi-any.yaml").read_text())
RTX = yaml.safe_load((REPO / "drakit/gpus/rtx3090x2.yaml").read_text())


def profile(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        body = copy.deepcopy(REFERENCE)
        change(body)
        (tmp / "vendor.yaml").write_text(yaml.safe_dump(body))
        return ["--cluster=sim", f"--driver-profile={tmp / 'vendor.yaml'}"]

    return make


def raw_file(name: str, text: str, *args: str) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        (tmp / name).write_text(text)
        return [a.replace("{f}", str(tmp / name)) for a in args]

    return make


def gpus(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        body = copy.deepcopy(RTX)
        change(body)
        (tmp / "gpus.yaml").write_text(yaml.safe_dump(body))
        return ["--cluster=sim", f"--gpus={tmp / 'gpus.yaml'}"]

    return make


def claims(*bodies: Any) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        d = tmp / "claims"
        d.mkdir()
        for i, body in enumerate(bodies):
            (d / f"t{i}.yaml").write_text(body if isinstance(body, str) else yaml.safe_dump(body))
        return ["--cluster=sim", f"--claim-templates={d}"]

    return make


def claim(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    body = copy.deepcopy(SEED_CLAIM)
    change(body)
    return body


def kubeconfig(doc: Any) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        (tmp / "kc").write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
        return ["--cluster=existing", f"--kubeconfig={tmp / 'kc'}"]

    return make


def flags(*args: str) -> Callable[[Path], list[str]]:
    return lambda tmp: list(args)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kc_doc(
    server: str = "http://127.0.0.1:1", current: str | None = "c", cluster: str = "c"
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server} if server else {}}],
        "contexts": [{"name": "c", "context": {"cluster": cluster, "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
    }
    if current is not None:
        doc["current-context"] = current
    return doc


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = body
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if value is _DELETE:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return change


_DELETE = object()
_ENV = "claims.visibility.env"

# id -> (build the arguments in a scratch dir, fragments the one sentence must contain)
CATALOGUE: dict[str, tuple[Callable[[Path], list[str]], tuple[str, ...]]] = {
    "profile unknown key": (
        profile(_set("claims.sharingMode", "memory")),
        ("unknown key 'sharingMode'", "under 'claims'"),
    ),
    "profile deviceClass not a DNS subdomain": (
        profile(_set("deviceClass", "Bad_Class!")),
        ("'deviceClass' 'Bad_Class!'", "DNS subdomain"),
    ),
    "profile driver not a DNS subdomain": (profile(_set("driver", "Gpu_Driver")), ("'driver' 'Gpu_Driver'",)),
    "profile env template unclosed": (
        profile(_set(_ENV, {"GPU_{index": "{uuid}"})),
        ("'GPU_{index'", "does not parse"),
    ),
    "profile env template positional": (profile(_set(_ENV, {"GPU_{0}": "{uuid}"})), ("placeholder {0}",)),
    "profile env template attribute access": (
        profile(_set(_ENV, {"GPU": "{uuid.hex}"})),
        ("placeholder {uuid.hex}",),
    ),
    "profile identityAttribute not a C identifier": (
        profile(_set("identityAttribute", "bad-name")),
        ("'identityAttribute' 'bad-name'", "qualified name"),
    ),
    "profile productAttribute too long": (
        profile(_set("productAttribute", "p" * 33)),
        ("'productAttribute'", "at most 32"),
    ),
    "profile capacity with a bad domain": (
        profile(_set("capacity", "Bad_Domain/memory")),
        ("'capacity' 'Bad_Domain/memory'",),
    ),
    "profile missing deviceClass": (profile(_set("deviceClass", _DELETE)), ("required key 'deviceClass'",)),
    "profile sharing not a bool": (profile(_set("claims.sharing", "yes")), ("'claims.sharing' must be",)),
    "profile requestPolicy not allowed": (
        profile(_set("claims.requestPolicy", "sometimes")),
        ("'claims.requestPolicy' is 'sometimes'", "valid values"),
    ),
    "profile install.release not a DNS label": (
        profile(_set("install.release", "Bad_Release")),
        ("'install.release' 'Bad_Release'",),
    ),
    "profile chart method without a chart": (
        profile(_set("install.chart", _DELETE)),
        ("'install.chart' is missing",),
    ),
    "profile env visibility without env": (profile(_set(_ENV, {})), ("'claims.visibility.env' is empty",)),
    "profile not YAML": (
        raw_file("p.yaml", "name: [x\n", "--cluster=sim", "--driver-profile={f}"),
        ("not valid YAML (line",),
    ),
    "profile not a mapping": (
        raw_file("p.yaml", "- a\n", "--cluster=sim", "--driver-profile={f}"),
        ("must be a mapping",),
    ),
    "profile missing": (flags("--cluster=sim", "--driver-profile=/nonexistent/vendor.yaml"), ("not found",)),
    "profile that cannot run on sim": (
        flags("--cluster=sim", "--driver-profile=dra-example"),
        ("has no 'sim' section, so the sim cannot run its driver",),
    ),
    "gpus unknown profile name": (flags("--cluster=sim", "--gpus=nosuch"), ("GPU profile 'nosuch'",)),
    "gpus invalid YAML": (
        raw_file("g.yaml", "gpus: [\n", "--cluster=sim", "--gpus={f}"),
        ("not valid YAML",),
    ),
    "gpus memory not a quantity": (gpus(_set("gpus.0.memory", "lots")), ("gpus[0].memory",)),
    "gpus unknown key": (gpus(_set("gpus.0.colour", "green")), ("unknown key 'colour'",)),
    "gpus names a node not in --nodes": (
        flags("--cluster=sim", "--gpus=node-9=rtx3090x2"),
        ("'node-9'", "not in --nodes"),
    ),
    "claim templates dir missing": (
        flags("--cluster=sim", "--claim-templates=/nonexistent"),
        ("--claim-templates /nonexistent does not exist",),
    ),
    "claim templates dir empty": (claims(), ("holds no *.yaml",)),
    "claim template with requests: []": (
        claims(claim(_set("spec.spec.devices.requests", []))),
        ("spec.spec.devices.requests is empty",),
    ),
    "claim template not YAML": (claims("kind: [\n"), ("is not valid YAML (line",)),
    "claim template of another kind": (
        claims({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}),
        ("not a ResourceClaimTemplate",),
    ),
    "claim template with an unknown field": (
        claims(claim(_set("spec.spec.devices.requests.0.exactly.capacity.request", {"memory": "6Gi"}))),
        ("exactly.capacity", "'request' was unexpected"),
    ),
    "claim template without exactly": (
        claims(
            claim(
                _set(
                    "spec.spec.devices.requests",
                    [{"name": "gpu", "firstAvailable": [{"name": "a", "deviceClassName": "gpu.nvidia.com"}]}],
                )
            )
        ),
        ("requests[0] has no 'exactly'",),
    ),
    "kubeconfig missing": (flags("--cluster=existing", "--kubeconfig=/nonexistent/kc"), ("does not exist",)),
    "kubeconfig malformed": (kubeconfig("clusters: [\n"), ("is not valid YAML",)),
    "kubeconfig not a mapping": (kubeconfig("just text\n"), ("does not hold a Config mapping",)),
    "kubeconfig without current-context": (kubeconfig(kc_doc(current=None)), ("has no current-context",)),
    "kubeconfig current-context unknown": (
        kubeconfig(kc_doc(current="other")),
        ("current-context 'other' is not in its contexts",),
    ),
    "kubeconfig context names no cluster": (kubeconfig(kc_doc(cluster="gone")), ("names cluster 'gone'",)),
    "kubeconfig without server": (kubeconfig(kc_doc(server="")), ("has no server",)),
    "kubeconfig unreachable": (
        lambda tmp: kubeconfig(kc_doc(server=f"http://127.0.0.1:{_closed_port()}"))(tmp),
        ("cannot reach the cluster in",),
    ),
    "existing without kubeconfig": (flags("--cluster=existing"), ("needs --kubeconfig",)),
    "nodes with an invalid name": (
        flags("--cluster=sim", "--nodes=Node_1"),
        ("'Node_1' is not a valid node",),
    ),
    "nodes named twice": (flags("--cluster=sim", "--nodes=node-1,node-1"), ("'node-1' twice",)),
    "nodes empty": (flags("--cluster=sim", "--nodes=,"), ("names no node",)),
    "feature gate unknown": (
        flags("--cluster=sim", "--sim-feature-gates=Nope=true"),
        ("unknown feature gate 'Nope'",),
    ),
    "feature gate value": (
        flags("--cluster=sim", "--sim-feature-gates=DRAConsumableCapacity=maybe"),
        ("must be true or false",),
    ),
    "kube version not emulated": (flags("--cluster=sim", "--sim-kube-version=1.20"), ("not emulated",)),
    "local release not built by the provider": (
        flags("--cluster=local", "--kube-version=1.33"),
        ("--kube-version '1.33' is not one the local provider builds",),
    ),
    "local release given to sim": (
        flags("--cluster=sim", "--kube-version=1.36"),
        ("--kube-version is for --cluster local",),
    ),
    "keep a local cluster": (
        flags("--cluster=local", "--keep-cluster"),
        ("--keep-cluster cannot keep a --cluster local cluster",),
    ),
    "real nodes asked of sim": (
        flags("--cluster=sim", "--nodes=real"),
        ("--nodes real is for --cluster local",),
    ),
    "driver command missing": (
        flags("--cluster=sim", "--sim-driver-command=/nonexistent/driver"),
        ("the driver command /nonexistent/driver (--sim-driver-command) does not exist",),
    ),
    "driver command quoting": (
        flags("--cluster=sim", "--sim-driver-command='unterminated"),
        ("does not parse",),
    ),
    "wait timeout zero": (
        flags("--cluster=sim", "--wait-timeout=0"),
        ("--wait-timeout 0.0 must be more than 0",),
    ),
    "settle seconds negative": (flags("--cluster=sim", "--settle-seconds=-1"), ("negative",)),
    "run timeout not finite": (flags("--cluster=sim", "--run-timeout=nan"), ("not a finite number",)),
    "cluster kind unknown": (flags("--cluster=nope"), ("invalid choice: 'nope'",)),
    "report dir is a file": (raw_file("r", "x", "--cluster=sim", "--report-dir={f}"), ("is a file",)),
    "TMPDIR too deep for the sim's sockets": (flags("--cluster=sim", "--nodes=node-1"), ("is too deep",)),
}


def _children() -> set[int]:
    me = str(os.getpid())
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[1] == me:
                    out.add(int(entry.name))
            except (OSError, IndexError):
                pass
    return out


@pytest.fixture
def private_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    run_tmp = tmp_path / "tmpdir"
    run_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(run_tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    return run_tmp


def test_the_catalogue_holds_at_least_thirty_bad_inputs() -> None:
    assert len(CATALOGUE) >= 30


@pytest.mark.parametrize("case", sorted(CATALOGUE))
def test_bad_input_is_one_sentence_exit_4_and_leaves_nothing(
    case: str, tmp_path: Path, private_tmpdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build, fragments = CATALOGUE[case]
    if case.startswith("TMPDIR too deep"):
        deep = private_tmpdir / ("d" * 60)
        os.environ["TMPDIR"] = str(deep)  # restored by the fixture's monkeypatch
        private_tmpdir = deep
        deep.mkdir()
    scratch = tmp_path / "inputs"
    scratch.mkdir()
    args = build(scratch)
    if not any(a.startswith("--report-dir") for a in args):
        args.append(f"--report-dir={tmp_path / 'reports'}")
    before = _children()
    code = validate.main(args)
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert code == 4, out
    assert len(lines) == 1, lines
    sentence = lines[0]
    assert sentence.endswith("."), sentence
    for fragment in fragments:
        assert fragment in sentence, sentence
    assert _children() == before
    assert list(private_tmpdir.iterdir()) == []
    assert not (tmp_path / "reports").exists()


def test_good_inputs_pass_the_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert validate.main(["--cluster=sim"]) == 0
    assert "inputs OK: provider sim, driver profile reference, 3 claim template(s)" in capsys.readouterr().out


# ---- through the real command lines ------------------------------------------------------------------
def _run(args: list[str], tmp: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TMPDIR": str(tmp)}
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("case", ["claim templates dir missing", "gpus invalid YAML"])
def test_the_suite_stops_on_bad_input_before_anything_starts(case: str, tmp_path: Path) -> None:
    build, fragments = CATALOGUE[case]
    scratch, run_tmp = tmp_path / "inputs", tmp_path / "tmpdir"
    scratch.mkdir()
    run_tmp.mkdir()
    proc = _run(
        [
            sys.executable,
            "-m",
            "pytest",
            "conformance/scenarios",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--report-dir={tmp_path / 'r'}",
            *build(scratch),
        ],
        run_tmp,
    )
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr[-2000:]
    [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("ERROR: ")]
    assert all(f in line for f in fragments), line
    assert "sim: serving" not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
    assert list(run_tmp.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--nodes", "Node_1"], "'Node_1' is not a valid node name"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--nodes", "node-1", "--gpus", "{bad_yaml}"], "not valid YAML"),
    ],
)
def test_sim_bad_flags_exit_2_with_one_line(args: list[str], fragment: str, tmp_path: Path) -> None:
    bad = tmp_path / "gpus.yaml"
    bad.write_text("gpus: [\n")  # a GPU profile the driver cannot parse: named now, no crash-looping driver
    args = [a.replace("{bad_yaml}", str(bad)) for a in args]
    proc = _run([sys.executable, "-m", "sim", "--kubeconfig", str(tmp_path / "kc"), *args], tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], lines
    assert not (tmp_path / "kc").exists()
