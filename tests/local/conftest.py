"""Tests against a real Kubernetes control plane (``--cluster local``): ``make test-local`` runs them
after ``make kube-bin``. ``make test`` stays hermetic, so without GSC_TEST_LOCAL=1 they are skipped with
that reason; with it, missing binaries are a failure, never a skip."""

from __future__ import annotations

import os

import pytest

from localkube import versions

ENABLED = os.environ.get("GSC_TEST_LOCAL") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if ENABLED:
        return
    skip = pytest.mark.skip(reason="real control plane: run with make test-local (GSC_TEST_LOCAL=1)")
    for item in items:
        if "tests/local/" in item.nodeid.replace("\\", "/") or item.nodeid.startswith("local/"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def local_release() -> str:
    release = versions.resolve(os.environ.get("KUBE_VERSION") or None)
    missing = versions.missing_binaries(release)
    assert not missing, (
        f"Kubernetes v{release} binaries missing in {versions.bin_dir(release)} ({', '.join(missing)}); "
        "run make kube-bin first"
    )
    return release
