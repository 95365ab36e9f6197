"""The sim's nodes as HTTPS clients of an API server they did not start (``--apiserver-kubeconfig``).

Hermetic: the API server here is the sim's own, run with its scheduler and claim controller but no
kubelets; the nodes run in a second ``python -m sim`` that reaches it only over HTTPS with the
kubeconfig, exactly as they reach a real kube-apiserver under ``--cluster local``.
"""

from __future__ import annotations

import base64
import datetime
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from localkube.pki import LOOPBACK_SANS, CertificateAuthority
from sim.apiserver.errors import ApiError
from sim.kubelet.remote import Connection, KubeconfigError, KubeletApi
from sim.testing import running_sim
from tests.support.pod_watch import PodWatch

REPO = Path(__file__).resolve().parents[2]
DRIVER = "gpu.sharing.example.dev"


class Nodes(PodWatch):
    default_timeout = 30

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.res = client.ResourceV1Api(api)


def start_nodes(kubeconfig: Path, state: Path, *extra: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sim",
            "--apiserver-kubeconfig",
            str(kubeconfig),
            "--nodes",
            "node-1",
            "--gpus",
            "rtx3090x2",
            "--state-dir",
            str(state),
            *extra,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # bounded by the registration, which the sim reports itself
        seen.append(line)
        if line.startswith("sim: driver registered: node-1"):
            return proc
        if "Traceback" in line or line.startswith("sim: driver exited"):
            break
    proc.kill()
    rest = proc.communicate()[0]
    raise AssertionError(f"the nodes-only sim did not register its driver: {''.join(seen)}{rest}"[-3000:])


def stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # faulthandler: every thread's stack, for the failure message
        out, _ = proc.communicate(timeout=30)
        raise AssertionError(f"the nodes-only sim did not stop in 30s of SIGTERM:\n{out[-6000:]}") from None
    return out


def test_remote_nodes_register_publish_and_run_a_sharer_through_the_api_server_only() -> None:
    state = Path(tempfile.mkdtemp(prefix="rn-", dir="/tmp"))  # short: unix socket paths live under it
    # The API server in its own process, as kube-apiserver is: nothing the test process does slows it.
    with running_sim(nodes=[], subprocess=True) as sim:
        nodes = start_nodes(sim.kubeconfig, state)
        api = sim.client()
        try:
            n = Nodes(api)
            node = n.plain(n.core.read_node("node-1"))
            ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}
            assert ready["Ready"] == "True"
            lease = client.CoordinationV1Api(api).read_namespaced_lease("node-1", "kube-node-lease")
            assert lease.spec.holder_identity == "node-1"
            slices = n.res.list_resource_slice(field_selector="spec.nodeName=node-1").items
            assert [s.spec.driver for s in slices] == [DRIVER]
            n.res.create_device_class(
                {
                    "metadata": {"name": DRIVER},
                    "spec": {"selectors": [{"cel": {"expression": f'device.driver == "{DRIVER}"'}}]},
                }
            )
            n.res.create_namespaced_resource_claim_template(
                "default",
                {
                    "metadata": {"name": "share6"},
                    "spec": {
                        "spec": {
                            "devices": {
                                "requests": [
                                    {
                                        "name": "gpu",
                                        "exactly": {
                                            "deviceClassName": DRIVER,
                                            "capacity": {"requests": {"memory": "6Gi"}},
                                        },
                                    }
                                ]
                            }
                        }
                    },
                },
            )
            n.core.create_namespaced_pod(
                "default",
                {
                    "metadata": {"name": "p1"},
                    "spec": {
                        "restartPolicy": "Never",
                        "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "share6"}],
                        "containers": [
                            {
                                "name": "c",
                                "image": "busybox",
                                "command": [sys.executable, "-c", "import time; time.sleep(600)"],
                                "resources": {"claims": [{"name": "gpu"}]},
                            }
                        ],
                    },
                },
            )
            pod = n.wait_pod("p1", lambda p: p["status"].get("phase") == "Running", what="Running")
            assert pod["spec"]["nodeName"] == "node-1"
            events = n.core.list_namespaced_event("default", field_selector="involvedObject.name=p1").items
            assert {"Created", "Started"} <= {e.reason for e in events}, [e.reason for e in events]
            n.core.delete_namespaced_pod("p1", "default")
            n.wait_gone("p1")
        finally:
            api.close()
            out = stop(nodes)
        assert nodes.returncode == 0, out[-2000:]
    # Nothing of the nodes outlives them: no process works under their state dir.
    from conformance.providers.sim import processes_using

    assert processes_using(state) == []
    shutil.rmtree(state)


def _kubeconfig(path: Path, server: str, user: dict[str, str]) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


@pytest.mark.parametrize(
    ("server", "user", "words"),
    [
        ("http://127.0.0.1:1", {"token": "t"}, "must be an https URL"),
        ("https://127.0.0.1:1", {}, "neither a client certificate nor a token"),
        ("https://127.0.0.1:1", {"client-certificate-data": "%%%", "client-key-data": "x"}, "not base64"),
        ("https://127.0.0.1:1", {"client-certificate": "missing.crt", "client-key": "k"}, "fix the path"),
    ],
    ids=["plain-http", "no-credentials", "bad-base64", "missing-cert-file"],
)
def test_a_kubeconfig_the_nodes_cannot_use_is_named_with_the_field_and_the_fix(
    tmp_path: Path, server: str, user: dict[str, str], words: str
) -> None:
    with pytest.raises(KubeconfigError, match=words):
        Connection.from_kubeconfig(_kubeconfig(tmp_path / "kc", server, user))


def test_nodes_only_flags_are_checked_before_anything_starts(tmp_path: Path) -> None:
    bad = _kubeconfig(tmp_path / "kc", "http://127.0.0.1:1", {"token": "t"})
    cases = [
        (["--apiserver-kubeconfig", str(bad), "--nodes", "n1"], "must be an https URL"),
        (
            ["--apiserver-kubeconfig", str(bad), "--port", "6443"],
            "--port, --feature-gates and --kube-version",
        ),
        (["--node-kubeconfig-dir", str(tmp_path), "--kubeconfig", str(tmp_path / "k")], "need --apiserver"),
        (
            ["--apiserver-kubeconfig", str(bad), "--kubelet-tls", "a,b"],
            "--kubelet-tls wants CERT,KEY,CLIENT_CA",
        ),
        ([], "--kubeconfig is required"),
    ]
    for argv, words in cases:
        proc = subprocess.run(
            [sys.executable, "-m", "sim", *argv], cwd=REPO, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 2, (argv, proc.stderr)
        assert words in proc.stderr, (argv, proc.stderr)
        assert "Traceback" not in proc.stderr


def test_kubelet_api_serves_logs_only_to_a_client_with_a_certificate_from_the_ca(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "pki")
    serving = ca.issue("serving", "sim-kubelet", sans=LOOPBACK_SANS, server=True)
    apiserver = ca.issue("apiserver", "kube-apiserver-kubelet-client", client=True)
    other = CertificateAuthority(tmp_path / "other").issue("x", "stranger", client=True)
    seen = []

    def read_log(ns: str, pod: str, container: str | None, previous: bool) -> bytes:
        seen.append((ns, pod, container, previous))
        if pod == "gone":
            raise ApiError(404, "NotFound", 'pods "gone" not found')
        return b"one\ntwo\nthree\n"

    api = KubeletApi(serving.cert, serving.key, ca.cert_path, read_log)
    api.start()
    try:

        def get(path: str, client_pair: object | None) -> tuple[int, bytes]:
            ctx = ssl.create_default_context(cafile=str(ca.cert_path))
            if client_pair is not None:
                ctx.load_cert_chain(str(client_pair.cert), str(client_pair.key))  # type: ignore[attr-defined]
            try:
                with urllib.request.urlopen(
                    f"https://127.0.0.1:{api.port}{path}", context=ctx, timeout=10
                ) as r:
                    return r.status, r.read()
            except urllib.error.HTTPError as e:
                return e.code, e.read()

        assert get("/containerLogs/ns/p/c", apiserver) == (200, b"one\ntwo\nthree\n")
        assert get("/containerLogs/ns/p/c?tailLines=1&previous=true", apiserver) == (200, b"three\n")
        assert seen[-1] == ("ns", "p", "c", True)
        assert get("/containerLogs/ns/gone/c", apiserver)[0] == 404
        assert get("/exec/ns/p/c", apiserver)[0] == 404
        for stranger in (None, other):
            with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
                get("/containerLogs/ns/p/c", stranger)
    finally:
        api.stop()


def test_certificates_chain_to_the_run_ca_with_the_names_clients_dial(tmp_path: Path) -> None:
    from cryptography import x509

    ca = CertificateAuthority(tmp_path)
    pair = ca.issue("apiserver", "kube-apiserver", sans=("127.0.0.1", "localhost"), server=True)
    node = ca.issue("node-a", "system:node:a", organizations=("system:nodes",), client=True)
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.cert_pem))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert cert.not_valid_after_utc > datetime.datetime.now(datetime.UTC)
    subject = x509.load_pem_x509_certificate(node.cert.read_bytes()).subject.rfc4514_string()
    assert subject == "CN=system:node:a,O=system:nodes"
    assert os.stat(node.key).st_mode & 0o077 == 0, "private keys are 0600"
    assert base64.b64encode(b"x")  # the module imports stay used
    assert time.monotonic() > 0
