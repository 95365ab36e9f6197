"""Bad input stops the run early with one sentence naming the problem and the fix; nothing is created."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from sim.testing import running_sim
from tests.support.suite import run_suite as support_run_suite

REPO = Path(__file__).resolve().parents[2]
EXIT_BAD_INPUT = 4


def run_suite(tmp_path: Path, *args: str, timeout: float = 90) -> tuple[int, str, dict]:
    run = support_run_suite(tmp_path, *args, timeout=timeout)
    return run.code, run.output, run.report


def write_kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
            }
        )
    )
    return path


def test_unknown_profile_key_stops_before_any_cluster(tmp_path: Path) -> None:
    profile = yaml.safe_load((REPO / "conformance/data/drivers/reference.yaml").read_text())
    profile["claims"]["sharingMode"] = "memory"
    path = tmp_path / "vendor.yaml"
    path.write_text(yaml.safe_dump(profile))
    code, out, _ = run_suite(tmp_path, f"--driver-profile={path}", "--cluster=sim")
    assert code == EXIT_BAD_INPUT, out
    assert (
        "unknown key 'sharingMode' under 'claims'; valid keys are: enforcement, requestPolicy, sharing, "
        "visibility" in out
    )
    assert "sim: serving" not in out


def test_missing_kubeconfig_is_named(tmp_path: Path) -> None:
    code, out, report = run_suite(tmp_path, "--cluster=existing", f"--kubeconfig={tmp_path / 'nope'}")
    assert code == EXIT_BAD_INPUT, out
    assert f"kubeconfig {tmp_path / 'nope'} does not exist" in out
    assert report["verdict"] == "error" and "does not exist" in report["error"]


def test_unreachable_cluster_is_named(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kc = write_kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{port}")
    code, out, report = run_suite(tmp_path, "--cluster=existing", f"--kubeconfig={kc}")
    assert code == EXIT_BAD_INPUT, out
    assert report["error"].startswith(f"cannot reach the cluster in {kc}")


class _NoDraHandler(BaseHTTPRequestHandler):
    """An API server of a cluster without DRA: core API only. Records every write."""

    writes: list[str] = []

    def _json(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.startswith("/version"):
            self._json({"major": "1", "minor": "33", "gitVersion": "v1.33.4"})
        elif self.path.startswith("/apis"):
            self._json(
                {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [{"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}]}],
                }
            )
        elif self.path.startswith("/api/v1/nodes"):
            self._json(
                {
                    "kind": "NodeList",
                    "apiVersion": "v1",
                    "metadata": {},
                    "items": [{"metadata": {"name": "worker-1"}, "spec": {}}],
                }
            )
        else:
            self.send_error(404)

    def do_POST(self) -> None:
        self.writes.append(self.path)
        self.send_error(405)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def no_dra_cluster() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NoDraHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_cluster_without_dra_api_is_named(tmp_path: Path) -> None:
    _NoDraHandler.writes = []
    with no_dra_cluster() as url:
        kc = write_kubeconfig(tmp_path / "kc", url)
        code, out, report = run_suite(tmp_path, "--cluster=existing", f"--kubeconfig={kc}")
    assert code == EXIT_BAD_INPUT, out
    assert report["error"].startswith(
        "the cluster does not serve the DRA API (resource.k8s.io/v1); use Kubernetes 1.34 or later"
    )
    assert _NoDraHandler.writes == []


def test_invalid_claim_template_stops_before_anything_is_created(tmp_path: Path) -> None:
    templates = tmp_path / "claims"
    templates.mkdir()
    body = yaml.safe_load((REPO / "conformance/data/claims/gpu-6gi-any.yaml").read_text())
    body["spec"]["spec"]["devices"]["requests"][0]["exactly"]["capacity"]["request"] = {"memory": "6Gi"}
    (templates / "broken.yaml").write_text(yaml.safe_dump(body))
    with running_sim(nodes=["node-1"]) as sim:
        from kubernetes import client

        core = client.CoreV1Api(sim.client())
        before = sorted(n.metadata.name for n in core.list_namespace().items)
        code, out, report = run_suite(
            tmp_path, "--cluster=existing", f"--kubeconfig={sim.kubeconfig}", f"--claim-templates={templates}"
        )
        after = sorted(n.metadata.name for n in core.list_namespace().items)
    assert code == EXIT_BAD_INPUT, out
    assert (
        "broken.yaml" in report["error"]
        and "exactly.capacity" in report["error"]
        and "'request' was unexpected" in report["error"]
    )
    assert before == after


def test_unknown_cluster_kind_is_a_usage_error(tmp_path: Path) -> None:
    code, out, _ = run_suite(tmp_path, "--cluster=nope")
    assert code == EXIT_BAD_INPUT and "invalid choice: 'nope'" in out
