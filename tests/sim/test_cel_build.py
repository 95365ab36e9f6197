"""sim/celbuild.py: the CEL library's build step says what is missing and how to fix it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sim import celbuild

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("GO", raising=False)
    return tmp_path


def test_building_without_go_names_the_fix_and_exits_4(
    empty_cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(empty_cache))
    assert celbuild.main([]) == 4
    err = capsys.readouterr().err
    want = "{}.{}".format(*celbuild.required_go_version())
    assert err.startswith(
        f"error: building the sim's CEL library needs Go {want} or newer, and `go` is not "
        "on PATH: install Go from https://go.dev/dl/ or set GO=/path/to/go"
    )
    assert not (empty_cache / "cache" / "gpu-share-conformance").exists()


def test_building_with_a_too_old_go_names_the_version_found(
    empty_cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    old_go = empty_cache / "go"
    old_go.write_text("#!/bin/sh\necho go1.20.1\n")
    old_go.chmod(0o755)
    monkeypatch.setenv("GO", str(old_go))
    assert celbuild.main([]) == 4
    assert f"found go1.20.1 at {old_go}" in capsys.readouterr().err


def test_the_library_is_named_after_its_sources() -> None:
    path = celbuild.library_path()
    assert path.name == f"libdracel-{celbuild.source_digest()}.so"
    assert REPO not in path.parents, "the build lives outside the work tree"


def test_a_missing_library_is_reported_with_the_command_that_builds_it(empty_cache: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "from sim.cel import compile_selector; compile_selector('true')"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "sim.cel.CelLibraryError: the sim's CEL library" in proc.stderr
    assert "is not built: run `make setup` (or `python -m sim.celbuild`)" in proc.stderr
