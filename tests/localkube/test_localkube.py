"""The local control plane's parts that need no Kubernetes binaries: releases, the input check, and
what happens when a binary is missing, exits at once or never becomes ready (stand-ins in a private
cache). The real control plane runs under ``make test-local`` (tests/local/)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from conformance import validate
from localkube import versions
from localkube.build import _ldflags
from localkube.build import main as build_main
from localkube.controlplane import ControlPlane, ControlPlaneError


@pytest.mark.parametrize(
    ("given", "release"),
    [(None, "1.36.3"), ("1.34", "1.34.4"), ("v1.35.4", "1.35.4"), ("1.37", "1.37.2"), (" 1.36 ", "1.36.3")],
)
def test_a_minor_or_its_pinned_release_names_the_release_to_run(given: str | None, release: str) -> None:
    assert versions.resolve(given) == release


@pytest.mark.parametrize("given", ["1.33", "1.36.1", "2.0", "latest", "1.36.3.1"])
def test_an_unbuilt_release_is_refused_naming_the_ones_built(given: str) -> None:
    with pytest.raises(versions.VersionError, match=r"use one of 1\.34 \(v1\.34\.4\)"):
        versions.resolve(given)


def test_consumable_capacity_gate_is_turned_on_where_it_is_alpha() -> None:
    assert versions.feature_gates("1.34.4") == {"DRAConsumableCapacity": True}
    assert versions.feature_gates("1.35.4") == {"DRAConsumableCapacity": True}
    assert versions.feature_gates("1.36.3") == {}  # beta, on by default


def test_every_supported_minor_has_a_pinned_release_and_etcd() -> None:
    from drakit.gates import SUPPORTED_VERSIONS

    assert tuple(versions.PINNED) == SUPPORTED_VERSIONS == tuple(versions.ETCD)


def test_binaries_report_the_release_as_their_version() -> None:
    flags = _ldflags("1.36.3")
    assert "-X k8s.io/component-base/version.gitVersion=v1.36.3" in flags
    assert "-X k8s.io/component-base/version.gitMinor=36" in flags


def _stand_ins(root: Path, release: str, etcd_script: str) -> None:
    d = root / "kube" / f"v{release}" / "bin"
    d.mkdir(parents=True)
    for name in versions.BINARIES:
        body = etcd_script if name == "etcd" else "#!/bin/sh\nexit 0\n"
        (d / name).write_text(body)
        (d / name).chmod(stat.S_IRWXU)


def _node_stand_ins(root: Path, release: str) -> None:
    """What --nodes real needs beside the control plane: kubelet, kube-proxy, containerd, helm, pause."""
    node = root / "node" / f"containerd-v{versions.CONTAINERD}" / "bin"
    node.mkdir(parents=True)
    kube = root / "kube" / f"v{release}" / "bin"
    for path in [kube / b for b in versions.NODE_COMPONENTS] + [
        node / b for b in versions.NODE_RUNTIME_BINARIES
    ]:
        path.write_text("#!/bin/sh\nexit 0\n")
        path.chmod(stat.S_IRWXU)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_missing_binaries_name_make_kube_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GSC_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(ControlPlaneError, match=r"make kube-bin KUBE_VERSION=1\.36"):
        ControlPlane("1.36.3", tmp_path / "cp").start()
    with pytest.raises(
        validate.BadInput, match=r"lacks etcd, kube-apiserver.*make kube-bin KUBE_VERSION=1\.36"
    ):
        validate.check({"cluster": "local"})


def test_a_component_that_exits_at_start_is_quoted_and_nothing_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GSC_CACHE_DIR", str(tmp_path / "cache"))
    script = "#!/bin/sh\necho 'listen tcp 127.0.0.1:2379: bind: address already in use' >&2\nexit 1\n"
    _stand_ins(tmp_path / "cache", "1.36.3", script)
    cp = ControlPlane("1.36.3", tmp_path / "cp")
    with pytest.raises(ControlPlaneError, match=r"etcd exited with code 1 while starting: listen tcp.*use"):
        cp.start()
    assert cp.processes == []


def test_a_component_that_never_gets_ready_is_stopped_at_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GSC_CACHE_DIR", str(tmp_path / "cache"))
    pid_file = tmp_path / "etcd.pid"
    _stand_ins(tmp_path / "cache", "1.36.3", f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 600\n")
    cp = ControlPlane("1.36.3", tmp_path / "cp", start_timeout=1.0)
    with pytest.raises(ControlPlaneError, match=r"etcd did not become ready within 1s \(GET /health"):
        cp.start()
    assert not _alive(int(pid_file.read_text())), "the stand-in etcd outlived the failed start"


def test_kube_bin_without_go_says_how_to_fix_it_and_exits_4(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GSC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no go here
    assert build_main(["--kube-version", "1.36"]) == 4
    assert "Go is not installed" in capsys.readouterr().err
    assert build_main(["--kube-version", "1.20"]) == 4
    assert "is not one the local provider builds" in capsys.readouterr().err


def test_kube_bin_reuses_a_complete_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GSC_CACHE_DIR", str(tmp_path / "cache"))
    _stand_ins(tmp_path / "cache", "1.36.3", "#!/bin/sh\n")
    _node_stand_ins(tmp_path / "cache", "1.36.3")
    monkeypatch.setenv("PATH", str(tmp_path))  # reuse must not even need Go
    assert build_main([]) == 0
    assert "(reused)" in capsys.readouterr().out


def test_kube_bin_without_the_module_proxy_says_so_and_exits_4(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    if shutil.which("go") is None:
        pytest.skip("Go is not installed here (make kube-bin's other test covers that message)")
    monkeypatch.setenv("GSC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GOMODCACHE", str(tmp_path / "modcache"))  # nothing cached: the proxy must answer
    monkeypatch.setenv("GOPROXY", "off")
    assert build_main(["--kube-version", "1.36"]) == 4
    err = capsys.readouterr().err
    assert "the Go module proxy (off) did not serve what the build needs; check GOPROXY" in err
    assert not (tmp_path / "cache" / "kube" / "v1.36.3" / "bin").exists()


def test_the_suite_on_a_control_plane_that_cannot_start_exits_4_and_leaves_nothing(tmp_path: Path) -> None:
    import subprocess
    import sys
    import tempfile

    cache = tmp_path / "cache"
    tmp = Path(tempfile.mkdtemp(prefix="lk-", dir="/tmp"))  # short: the sim's sockets would live under it
    said = "listen tcp 127.0.0.1:2379: bind: address already in use"
    _stand_ins(cache, "1.36.3", f"#!/bin/sh\necho '{said}' >&2\nexit 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "conformance", "--cluster=local", f"--report-dir={tmp_path / 'r'}"],
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "GSC_CACHE_DIR": str(cache), "TMPDIR": str(tmp)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 4, out[-3000:]
    assert f"etcd exited with code 1 while starting: {said}" in out
    assert list(tmp.iterdir()) == [], "the run left its work dir (or more) behind"
    tmp.rmdir()
