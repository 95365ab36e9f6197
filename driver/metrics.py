"""Prometheus metrics: prepare and unprepare counts, errors and durations (as both anchor drivers export)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "dra_gpu_driver_requests",
            "gRPC calls by method and version",
            ["method", "version"],
            registry=self.registry,
        )
        self.claims = Counter(
            "dra_gpu_driver_claims", "claims handled by method", ["method"], registry=self.registry
        )
        self.claim_errors = Counter(
            "dra_gpu_driver_claim_errors", "claims that failed, by method", ["method"], registry=self.registry
        )
        self.duration = Histogram(
            "dra_gpu_driver_request_duration_seconds",
            "gRPC call duration by method",
            ["method"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.prepared = Gauge(
            "dra_gpu_driver_prepared_claims", "claims prepared on this node", registry=self.registry
        )
        self.inflight = Gauge(
            "dra_gpu_driver_requests_inflight", "gRPC calls in progress", ["method"], registry=self.registry
        )
        self._server: WSGIServer | None = None

    @contextmanager
    def observe(self, method: str, version: str) -> Iterator[None]:
        self.requests.labels(method, version).inc()
        self.inflight.labels(method).inc()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.duration.labels(method).observe(time.perf_counter() - start)
            self.inflight.labels(method).dec()

    def serve(self, address: str, port: int) -> int:
        """Start the /metrics endpoint; returns the bound port (useful with port 0 in tests)."""
        self._server, _thread = start_http_server(port, addr=address, registry=self.registry)
        bound = int(self._server.server_address[1])
        log.info("metrics on http://%s:%d/metrics", address, bound)
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
