"""The guides stay true to the code: every driver-profile key is documented, links resolve, and the
commands they show use make targets and chart paths that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conformance import profiles

REPO = Path(__file__).resolve().parents[2]
GUIDES = [
    REPO / "docs" / name
    for name in ("validate-your-fork.md", "driver-profiles.md", "reading-the-report.md", "troubleshooting.md")
]


def _keys(spec: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, (_, _, sub) in spec.items():
        out.add(key)
        if isinstance(sub, dict):
            out |= _keys(sub)
    return out


def test_every_profile_key_is_documented() -> None:
    text = (REPO / "docs" / "driver-profiles.md").read_text()
    documented = set(re.findall(r"`([A-Za-z]+)(?:\.[A-Za-z]+)*`", text)) | set(
        re.findall(r"`[a-z]+\.([A-Za-z]+)`", text)
    )
    missing = sorted(_keys(profiles._PROFILE) - documented)
    assert not missing, f"docs/driver-profiles.md does not document profile keys {missing}"


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: p.name)
def test_relative_links_resolve(guide: Path) -> None:
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", guide.read_text()):
        assert (guide.parent / target).exists(), f"{guide.name} links to missing {target}"


def code_of(text: str) -> str:
    """Fenced blocks and inline code spans: the commands a reader will copy."""
    fenced = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
    inline = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return "\n".join(fenced + inline)


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: p.name)
def test_make_targets_and_repository_paths_exist(guide: Path) -> None:
    code = code_of(guide.read_text())
    targets = set(re.findall(r"^([a-z][a-z-]*):", (REPO / "Makefile").read_text(), re.M))
    for target in re.findall(r"\bmake (?!-C)([a-z][a-z-]*)\b", code):
        assert target in targets, f"{guide.name} shows `make {target}`, which the Makefile lacks"
    for directory in re.findall(r"\bmake -C (\S+)", code):
        assert (REPO / directory / "Makefile").exists(), f"{guide.name} shows `make -C {directory}`"
    for path in re.findall(
        r"(?<![\w/.-])\.?/?((?:deployments|kind-config|fixtures|conformance|\.github)/[\w./-]+\w)", code
    ):
        assert (REPO / path).exists() or "<" in path, f"{guide.name} names {path}, which does not exist"


# Diagnoses the suite prints (key phrase, where it is printed): troubleshooting.md must explain each one.
DIAGNOSES = [
    ("was not found on PATH", "conformance/providers/kind.py"),
    ("is the Docker daemon running?", "conformance/providers/kind.py"),
    ("node images with Kubernetes 1.34+ need", "conformance/providers/kind.py"),
    ("already exists", "conformance/providers/kind.py"),
    ("building the driver image", "conformance/providers/kind.py"),
    ("kind create cluster failed", "conformance/providers/kind.py"),
    ("for every kind node to be Ready", "conformance/providers/kind.py"),
    ("nvidia-smi -L (listing this machine's GPUs)", "conformance/providers/kind.py"),
    ("listed no GPU", "conformance/providers/kind.py"),
    ("installing the nvidia runtime in", "conformance/providers/kind.py"),
    ("kind load docker-image", "conformance/providers/kind.py"),
    ("helm install of", "conformance/providers/helm.py"),
    ("says the driver is already installed", "conformance/providers/kind.py"),
    (
        "memoryPolicy.min/memoryPolicy.step need sharing=true",
        "deployments/helm/gpu-sharing-dra-driver/templates/_helpers.tpl",
    ),
    ("kube-apiserver dropped allowMultipleAllocations/requestPolicy", "conformance/preflight.py"),
    ("the cluster does not serve the DRA API (resource.k8s.io/v1)", "conformance/preflight.py"),
    ("no ResourceSlice of driver", "conformance/preflight.py"),
    ("GPUs under test already hold allocations", "conformance/bringup.py"),
    ("cannot reach the cluster at", "conformance/bringup.py"),
    (
        "devices without allowMultipleAllocations: true although the profile says",
        "conformance/scenarios/test_publish.py",
    ),
    ("shareIDs are not distinct", "conformance/scenarios/checks.py"),
    ("has no request in the sharer's claim and defaults to", "conformance/scenarios/checks.py"),
    ("that no device of driver", "conformance/preflight.py"),
    ("the driver refused to prepare it", "conformance/podfate.py"),
    ("instead of running", "conformance/podfate.py"),
    ("could not be created", "conformance/podfate.py"),
]


@pytest.mark.parametrize("phrase, source", DIAGNOSES, ids=[p for p, _ in DIAGNOSES])
def test_troubleshooting_explains_each_diagnosis_the_suite_prints(phrase: str, source: str) -> None:
    printed = " ".join((REPO / source).read_text().split())
    assert phrase in printed.replace('" "', "").replace("' '", ""), f"{source} no longer prints {phrase!r}"
    assert phrase in (REPO / "docs" / "troubleshooting.md").read_text(), (
        f"troubleshooting.md misses {phrase!r}"
    )
