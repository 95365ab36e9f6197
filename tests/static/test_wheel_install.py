"""The suite as a vendor runs it: a wheel installed outside the repository, the console script run from an
empty directory (issue 12, step 1).

The wheel is built from a copy of the source tree (pip wheel --no-deps --no-build-isolation: nothing is
fetched), installed with --no-deps into a fresh virtualenv whose only other packages are the dev venv's
(through a .pth line, which adds that directory to sys.path but runs none of its .pth files, so the
editable install of this checkout is not active there), and ``gpu-share-conformance --cluster sim`` runs
from an empty directory. Everything it imports must come from the wheel; the report must appear there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# What the copy leaves out: build outputs and caches of this checkout, which must not reach the wheel.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache", "reports"
)
SHIPPED_DATA = (
    "conformance/data/drivers/reference.yaml",
    "conformance/data/claims/gpu-6gi-any.yaml",
    "conformance/data/kind-config/mock-gpus.yaml",
    "conformance/data/kind-config/gpu-node-setup.sh",
    "conformance/scenarios/conftest.py",
)

pytestmark = pytest.mark.wheel


def _run(argv: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (
        f"{argv} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of this checkout (an in-tree build would leave build/ behind)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    shutil.copytree(REPO, src, ignore=_NOT_SOURCE)
    dist = root / "dist"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            ".",
        ],
        cwd=src,
        timeout=300,
    )
    (built,) = dist.glob("gpu_share_conformance-*.whl")
    return built


def test_the_wheel_ships_the_suites_data_and_its_console_script(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = zf.read(entry_points).decode()
    missing = [p for p in SHIPPED_DATA if p not in names]
    assert not missing, f"the wheel lacks {missing}"
    assert not [n for n in names if n.startswith("tests/")], "the project's own tests must not ship"
    assert "gpu-share-conformance = conformance.cli:main" in scripts


def test_the_installed_console_script_runs_the_suite_from_an_empty_directory(
    wheel: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path, timeout=120)
    python = venv / "bin" / "python"
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            cwd=tmp_path,
            timeout=60,
        ).strip()
    )
    # The dependencies (kubernetes, grpcio, ...) come from the dev venv, after the fresh venv's own
    # site-packages, so the wheel's packages win over anything of this checkout.
    (site / "dev-venv-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
        cwd=tmp_path,
        timeout=300,
    )
    script = venv / "bin" / "gpu-share-conformance"
    assert script.is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONFORMANCE_", "PYTHON"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    where = _run(
        [str(python), "-c", "import conformance, sim, driver; print(conformance.__file__, sim.__file__)"],
        cwd=empty,
        timeout=60,
        env=env,
    )
    assert str(REPO) not in where and all(str(site) in p for p in where.split()), where
    done = subprocess.run(
        [str(script), "--cluster", "sim"], cwd=empty, env=env, capture_output=True, text=True, timeout=300
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "Overall: PASS (exit code 0)" in out, out[-4000:]
    report = json.loads((empty / "reports" / "report.json").read_text())
    assert report["verdict"] == "pass"
    assert (empty / "reports" / "report.md").is_file()
    # Node ids read the same as from the checkout: the rootdir is the directory holding the package.
    checks = [c for cap in report["capabilities"].values() for c in cap["checks"]]
    assert checks and all(c["test"].startswith("conformance/scenarios/") for c in checks), checks
    # Nothing was written beside the installed package (no .pytest_cache, no reports).
    assert not (site / ".pytest_cache").exists() and not (site / "reports").exists()
    assert sorted(p.name for p in empty.iterdir()) == ["reports"]
