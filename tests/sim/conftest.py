"""Fixtures of the simulated cluster's tests: a Store, a running sim and a client of it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sim.apiserver import Store
from sim.config import SimConfig
from sim.testing import SimHandle, running_sim


@pytest.fixture
def store() -> Store:
    """A fresh in-memory Store emulating the default Kubernetes version (1.36, DRAConsumableCapacity on)."""
    return Store(SimConfig())


@pytest.fixture
def sim() -> Iterator[SimHandle]:
    """A running in-process sim (API server on 127.0.0.1, nodes node-1 and node-2) and its kubeconfig."""
    with running_sim(nodes=["node-1", "node-2"]) as handle:
        yield handle


@pytest.fixture
def api_client(sim: SimHandle) -> Iterator[Any]:
    """A kubernetes.client.ApiClient connected to the `sim` fixture's server."""
    client = sim.client()
    try:
        yield client
    finally:
        client.close()
