"""The driver image's build context is complete and the container Makefile honours the seed's knobs.

No container engine runs here, so the Dockerfile is checked by construction: every COPY source exists and
survives Dockerfile.dockerignore, the files it copies are enough to import and start the driver on their
own, and every third-party module the driver imports is pinned in requirements.txt. The Makefile is run
for real against a recording `docker` stand-in.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
CONTAINER = REPO / "deployments" / "container"
DOCKERFILE = CONTAINER / "Dockerfile"
DOCKERIGNORE = CONTAINER / "Dockerfile.dockerignore"
REQUIREMENTS = CONTAINER / "requirements.txt"
STANDINS = Path(__file__).resolve().parent.parent / "support" / "standins"
FIRST_PARTY = {"driver", "drakit", "sim", "conformance", "localkube"}


def dockerfile_instructions() -> list[list[str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY from the build context (not from another stage)."""
    out = []
    for words in dockerfile_instructions():
        if words[0] != "COPY" or any(w.startswith("--from=") for w in words):
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        out.append((args[:-1], args[-1]))
    return out


def ignore_patterns() -> list[tuple[bool, str]]:
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    return [
        (line.startswith("!"), line.lstrip("!").rstrip("/"))
        for line in lines
        if line and not line.startswith("#")
    ]


def excluded(relpath: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories decides."""
    parts = relpath.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for include, pattern in ignore_patterns():
        regex = fnmatch.translate(pattern).replace(".*", "[^/]*").replace("[^/]*[^/]*", ".*")
        if pattern.startswith("**/"):
            regex = "(.*/)?" + fnmatch.translate(pattern[3:])
        if any(re.fullmatch(regex, p) for p in prefixes):
            verdict = not include
    return verdict


def context_files() -> dict[str, Path]:
    """Context-relative path -> destination in the image, for every file the Dockerfile copies."""
    files: dict[str, Path] = {}
    for sources, dest in copies():
        for source in sources:
            src = REPO / source
            assert src.exists(), f"Dockerfile copies {source}, which is not in the repository"
            found = [src] if src.is_file() else [p for p in src.rglob("*") if p.is_file()]
            for path in found:
                rel = path.relative_to(REPO).as_posix()
                if excluded(rel):
                    continue
                if src.is_file():
                    target = Path(dest) / path.name if dest.endswith("/") else Path(dest)
                else:
                    target = Path(dest) / path.relative_to(src)
                files[rel] = target
    return files


def test_every_copy_source_exists_and_survives_dockerignore() -> None:
    for sources, _ in copies():
        for source in sources:
            assert (REPO / source).exists(), source
            assert not excluded(source.rstrip("/")), f"Dockerfile.dockerignore excludes {source}"
    assert "deployments/container/requirements.txt" in context_files()


def test_the_image_holds_only_the_driver_and_drakit() -> None:
    # The layering contract (docs/architecture.md): the driver builds on drakit alone, so nothing of the
    # sim or the suite may ride along in its image.
    tops = {Path(rel).parts[0] for rel, _ in context_files().items() if not rel.startswith("deployments/")}
    assert tops == {"driver", "drakit"}, tops


def test_dockerignore_keeps_bytecode_and_unrelated_files_out() -> None:
    assert excluded("driver/__pycache__/config.cpython-311.pyc")
    assert excluded("tests/static/test_static_image.py") and excluded(".venv/bin/python")
    assert not excluded("driver/config.py") and not excluded("drakit/gpus/rtx3090x2.yaml")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            # `from pkg import mod` imports the module pkg.mod when there is one.
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def driver_imports() -> tuple[set[str], set[str]]:
    """(first-party modules, third-party top-level packages) reachable from `python -m driver`."""
    seen: set[str] = set()
    third: set[str] = set()
    todo = ["driver.__main__", "driver.inventory.nvml", "drakit.gpuprofiles"]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        base = REPO / Path(*module.split("."))
        path = base.with_suffix(".py") if base.with_suffix(".py").exists() else base / "__init__.py"
        if not path.exists():
            continue
        for name in _imports(path):
            top = name.split(".")[0]
            if top in FIRST_PARTY:
                parts = name.split(".")
                todo.extend(".".join(parts[: i + 1]) for i in range(len(parts)))
            elif top not in sys.stdlib_module_names and top != "__future__":
                third.add(top)
    return {
        m
        for m in seen
        if (REPO / Path(*m.split("."))).with_suffix(".py").exists()
        or (REPO / Path(*m.split(".")) / "__init__.py").exists()
    }, third


def pinned() -> dict[str, str]:
    out = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"{line}: pin an exact version"
            out[req.name.lower().replace("_", "-")] = spec.version
    return out


def test_every_first_party_module_the_driver_imports_is_copied() -> None:
    modules, _ = driver_imports()
    assert "driver.config" in modules
    copied = context_files()
    for module in modules:
        base = Path(*module.split("."))
        candidates = {base.with_suffix(".py").as_posix(), (base / "__init__.py").as_posix()}
        assert candidates & set(copied), f"the driver imports {module}, which the Dockerfile does not copy"


def test_requirements_pin_exactly_the_third_party_packages_the_driver_imports() -> None:
    _, third = driver_imports()
    dists = importlib.metadata.packages_distributions()
    imported = set()
    for top in third:
        assert top in dists, f"driver imports {top}, which no installed distribution provides"
        imported.update(d.lower().replace("_", "-") for d in dists[top])
    assert imported == set(pinned()), (
        f"deployments/container/requirements.txt must pin what driver/ imports: add "
        f"{sorted(imported - set(pinned()))}, remove {sorted(set(pinned()) - imported)}"
    )


def test_pins_satisfy_the_project_dependencies() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    declared = {Requirement(d).name.lower().replace("_", "-"): Requirement(d) for d in project}
    for name, version in pinned().items():
        if name in declared:
            assert declared[name].specifier.contains(version), f"{name}=={version} violates {declared[name]}"


def test_copied_files_alone_import_the_driver_and_find_mock_profiles(tmp_path: Path) -> None:
    app = tmp_path / "image"
    for rel, dest in context_files().items():
        target = app / str(dest).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    workdir = next(w[1] for w in dockerfile_instructions() if w[0] == "WORKDIR")
    entrypoint = json.loads(" ".join(next(w[1:] for w in dockerfile_instructions() if w[0] == "ENTRYPOINT")))
    assert entrypoint == ["python", "-m", "driver"]
    # Drop the editable install of this checkout, so only the copied files can satisfy first-party imports.
    probe = (
        "import sys, runpy\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n"
        f"sys.path.insert(0, {str(app / workdir.lstrip('/'))!r})\n"
        "from driver.inventory import load_inventory\n"
        "assert load_inventory('rtx3090x2', 'node-a').gpus\n"
        "import driver.__main__, driver.inventory.nvml\n"
        "for name in ('driver', 'drakit', 'sim', 'conformance'):\n"
        "    mod = sys.modules.get(name)\n"
        "    assert mod is None or mod.__file__.startswith(sys.path[0]), (name, mod and mod.__file__)\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-P", "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


# ----- the container Makefile, run for real against a recording docker -----


@pytest.fixture
def docker_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "docker").symlink_to(STANDINS / "docker")
    make = shutil.which("make")
    assert make
    monkeypatch.setenv("PATH", os.pathsep.join([str(bindir), str(Path(make).parent), "/bin"]))
    monkeypatch.setenv("STANDIN_PYTHON", sys.executable)
    monkeypatch.setenv("STANDIN_LOG", str(tmp_path / "docker.jsonl"))
    monkeypatch.setenv("STANDIN_STATE", str(tmp_path))
    for name in (
        "IMAGE_NAME",
        "IMAGE_TAG",
        "BUILD_MULTI_ARCH_IMAGES",
        "PUSH_ON_BUILD",
        "MAKEFLAGS",
        "STANDIN_FAIL",
    ):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "docker.jsonl"


def run_make(*args: str, directory: Path = CONTAINER) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(directory), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def docker_calls(log: Path) -> list[list[str]]:
    return [json.loads(line)["argv"] for line in log.read_text().splitlines()] if log.exists() else []


BUILD_ARGS = ["--build-arg", "PYTHON_IMAGE=python:3.11-slim-bookworm", "--build-arg", "VERSION=v0.1.0"]
SEED = ["IMAGE_NAME=ghcr.io/k3k8/k8s-dra-driver-gpu", "IMAGE_TAG=gpu-sharing-v1"]
REF = "ghcr.io/k3k8/k8s-dra-driver-gpu:gpu-sharing-v1"


def test_seed_single_arch_build(docker_log: Path) -> None:
    assert run_make("build", *SEED).returncode == 0
    assert docker_calls(docker_log) == [["build", *BUILD_ARGS, "-t", REF, "-f", str(DOCKERFILE), str(REPO)]]


def test_seed_multi_arch_build_pushes_both_platforms(docker_log: Path) -> None:
    done = run_make("build", "BUILD_MULTI_ARCH_IMAGES=true", "PUSH_ON_BUILD=true", *SEED)
    assert done.returncode == 0, done.stderr
    assert docker_calls(docker_log) == [
        [
            "buildx",
            "build",
            "--platform",
            "linux/amd64,linux/arm64",
            "--push",
            *BUILD_ARGS,
            "-t",
            REF,
            "-f",
            str(DOCKERFILE),
            str(REPO),
        ]
    ]


def test_single_arch_push_on_build_pushes_after_building(docker_log: Path) -> None:
    assert run_make("build", "PUSH_ON_BUILD=true", *SEED).returncode == 0
    assert [c[0] for c in docker_calls(docker_log)] == ["build", "push"]
    assert docker_calls(docker_log)[1] == ["push", REF]


def test_multi_arch_without_push_stops_with_the_fix(docker_log: Path) -> None:
    done = run_make("build", "BUILD_MULTI_ARCH_IMAGES=true", *SEED)
    assert done.returncode != 0
    assert (
        "BUILD_MULTI_ARCH_IMAGES=true needs PUSH_ON_BUILD=true" in done.stderr
        and "add PUSH_ON_BUILD=true" in done.stderr
    )
    assert docker_calls(docker_log) == []


def test_bad_switch_value_is_named(docker_log: Path) -> None:
    done = run_make("build", "PUSH_ON_BUILD=yes", *SEED)
    assert done.returncode != 0 and "PUSH_ON_BUILD must be true or false, got 'yes'" in done.stderr
    assert docker_calls(docker_log) == []


def test_missing_docker_is_named_with_the_fix(docker_log: Path) -> None:
    (docker_log.parent / "bin" / "docker").unlink()
    done = run_make("build", *SEED)
    assert done.returncode != 0 and "'docker' was not found on PATH: install Docker" in done.stderr


def test_root_make_image_forwards_the_knobs(docker_log: Path) -> None:
    done = run_make("image", *SEED, directory=REPO)
    assert done.returncode == 0, done.stderr
    assert docker_calls(docker_log) == [["build", *BUILD_ARGS, "-t", REF, "-f", str(DOCKERFILE), str(REPO)]]


def test_constraints_pin_the_whole_closure_consistently_with_the_requirements() -> None:
    constraints = {}
    for line in (CONTAINER / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"constraints.txt: {line} must pin an exact version"
            constraints[req.name.lower().replace("_", "-")] = spec.version
    for name, version in pinned().items():
        assert constraints.get(name) == version, (
            f"{name}: requirements.txt pins {version}, constraints.txt {constraints.get(name)}"
        )
    assert {"pydantic", "urllib3", "protobuf"} <= set(constraints)
