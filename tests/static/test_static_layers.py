"""The import contracts in pyproject.toml ([tool.importlinter], run by `make lint` as `lint-imports`) hold
for this tree, and they catch each kind of violation: the checker is run on small trees built here, one
that keeps every rule and one that breaks each of them once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
LINT_IMPORTS = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which(
    "lint-imports"
)
# Top-level folders that are not packages of the project (tests and scripts may import anything).
NOT_PACKAGES = {"tests", "benchmarks"}


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    assert LINT_IMPORTS, "lint-imports is not installed (pip install -e '.[test]')"
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [LINT_IMPORTS, "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def tree(root: Path, files: dict[str, str]) -> Path:
    """A tree with every root package of the contracts, the given modules and this repo's contracts."""
    for package in CONFIG["root_packages"]:
        (root / package).mkdir(parents=True, exist_ok=True)
        (root / package / "__init__.py").touch()
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.parent != root and not (path.parent / "__init__.py").exists():
            (path.parent / "__init__.py").touch()
        path.write_text(text)
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


# What the real tree does, one line each: every part builds on drakit; the sim provider and the local
# provider live in conformance/providers.
KEPT = {
    "drakit/quantity.py": "",
    "drakit/launch.py": "from drakit import quantity\n",
    "driver/plugin.py": "from drakit import launch\n",
    "sim/kubelet/kubelet.py": "from drakit import launch\nfrom sim.kubelet import podworker\n",
    "sim/kubelet/podworker.py": "from drakit import quantity\n",
    "conformance/profiles.py": "from drakit import launch\n",
    # The one allowed exception: the sim provider builds `python -m sim`'s command line with sim.launcher.
    "conformance/providers/sim.py": "from conformance import profiles\nfrom sim import launcher\n",
    "sim/launcher.py": "",
    "conformance/providers/local.py": (
        "from conformance.providers import sim\nfrom localkube import controlplane\n"
    ),
    "localkube/controlplane.py": "from drakit import quantity\n",
}
# One violation per contract.
BROKEN = {
    **KEPT,
    "drakit/lifetime.py": "import sim.kubelet.kubelet\n",
    "driver/state.py": "from sim.kubelet import kubelet\n",
    "sim/kubelet/fleet.py": "from driver import plugin\n",
    "conformance/validate.py": "from sim.kubelet.kubelet import podworker\n",
    "conformance/plugin.py": "from localkube import controlplane\n",
    "localkube/kubelets.py": "import sim.kubelet.kubelet\n",
    # A circle between siblings, as sim/kubelet/kubelet.py and podworker.py were.
    "sim/kubelet/podworker.py": "from drakit import quantity\nfrom sim.kubelet import kubelet\n",
}


def contract_names() -> list[str]:
    return [c["name"] for c in CONFIG["contracts"]]


def test_every_top_level_package_is_under_the_contracts() -> None:
    packages = {
        p.name for p in REPO.iterdir() if (p / "__init__.py").is_file() and p.name not in NOT_PACKAGES
    }
    assert packages <= set(CONFIG["root_packages"]), (
        f"add {sorted(packages - set(CONFIG['root_packages']))} to [tool.importlinter] root_packages "
        "in pyproject.toml, with a contract saying what it may import"
    )


def test_every_folder_of_a_package_is_a_package() -> None:
    # The checker skips a folder without __init__.py (a namespace package) and everything in it.
    missing = sorted(
        str(d.relative_to(REPO))
        for package in CONFIG["root_packages"]
        for d in [REPO / package, *(REPO / package).rglob("*")]
        if d.is_dir() and d.name != "__pycache__" and any(d.glob("*.py")) and not (d / "__init__.py").exists()
    )
    assert not missing, f"add an __init__.py to {missing}: lint-imports does not see their imports"


def test_this_tree_keeps_the_contracts() -> None:
    done = lint_imports(REPO)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_tree_that_keeps_the_rules_passes(tmp_path: Path) -> None:
    done = lint_imports(tree(tmp_path, KEPT))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Contracts: {len(contract_names())} kept, 0 broken." in done.stdout, done.stdout


def test_each_contract_catches_its_violation(tmp_path: Path) -> None:
    done = lint_imports(tree(tmp_path, BROKEN))
    assert done.returncode == 1, done.stdout + done.stderr
    out = " ".join(done.stdout.split())
    for name in contract_names():
        assert f"{' '.join(name.split())} BROKEN" in out, (
            f"{name!r} did not catch its violation:\n{done.stdout}"
        )
    for importer, imported in [
        ("drakit.lifetime", "sim.kubelet.kubelet"),
        ("driver.state", "sim.kubelet.kubelet"),
        ("sim.kubelet.fleet", "driver.plugin"),
        ("conformance.validate", "sim.kubelet.kubelet"),
        ("conformance.plugin", "localkube.controlplane"),
        ("localkube.kubelets", "sim.kubelet.kubelet"),
    ]:
        assert f"{importer} -> {imported}" in out, f"{importer} -> {imported} not reported:\n{done.stdout}"
    assert ".podworker -> .kubelet" in out or ".kubelet -> .podworker" in out, done.stdout


@pytest.mark.parametrize("package", ["drakit", "driver", "sim", "conformance", "localkube"])
def test_the_contracts_name_each_part(package: str) -> None:
    sources = {m for c in CONFIG["contracts"] for m in c.get("source_modules", [])}
    assert package in sources, f"no contract says what {package} may import"
