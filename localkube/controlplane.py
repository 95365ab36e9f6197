"""etcd, kube-apiserver, kube-controller-manager and kube-scheduler as local processes, on loopback.

The components run exactly as a kubeadm or kind control plane runs them, minus the containers: client
certificates from the run's CA everywhere (etcd included), RBAC and the Node authorizer, service-account
tokens, leader election. Every process is in its own session and gets SIGKILL when the supervisor that
started it dies (PR_SET_PDEATHSIG), so none outlives the run however it ends.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drakit.kubeconfig import client_certificate_user, write_kubeconfig
from localkube import versions
from localkube.pki import APISERVER_SANS, LOOPBACK_SANS, CertificateAuthority, Pair

log = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0
STOP_GRACE_S = 10.0
SERVICE_CIDR = "10.96.0.0/16"


class ControlPlaneError(RuntimeError):
    """A component could not start; one sentence naming it, what it said and how to fix it."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _with_parent_death_signal(argv: list[str]) -> list[str]:
    """``argv`` run so that the kernel SIGKILLs it when the thread that started it ends (the suite died,
    however). util-linux's setpriv sets the signal and execs: no Python code between fork and exec, which
    a process running gRPC threads cannot afford (preexec_fn)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        log.warning("setpriv not found: %s will not die with the suite if it is killed", argv[0])
        return argv
    return [setpriv, "--pdeathsig", "KILL", "--", *argv]


@dataclass
class Process:
    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            try:
                self.proc = subprocess.Popen(
                    _with_parent_death_signal(self.argv),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env=self.env,
                )
            except OSError as e:
                raise ControlPlaneError(
                    f"{self.name} did not start ({self.argv[0]}: {e.strerror}); rebuild it with make kube-bin"
                ) from None

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def last_words(self, lines: int = 3) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no output)"
        kept = [ln.strip() for ln in text.splitlines() if ln.strip()]
        return " | ".join(kept[-lines:]) or "(no output)"

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


@dataclass
class Endpoints:
    apiserver: str = ""
    etcd: str = ""
    admin_kubeconfig: Path = Path()
    ports: dict[str, int] = field(default_factory=dict)


class ControlPlane:
    """One local control plane in ``work_dir`` (certificates, etcd data, logs, kubeconfigs)."""

    def __init__(
        self,
        release: str,
        work_dir: Path,
        *,
        feature_gates: dict[str, bool] | None = None,
        nodes: tuple[str, ...] = (),
        progress: Callable[[str], None] = lambda _line: None,
        start_timeout: float = START_TIMEOUT_S,
        address: str = "127.0.0.1",
    ) -> None:
        self.release = release
        # Where the API server listens and what it advertises (the ``kubernetes`` Service's endpoint).
        # Loopback unless pods must reach it (real nodes: an address on a bridge of the run's own).
        self.address = address
        self.bin = versions.bin_dir(release)
        self.dir = work_dir
        self.gates = {**versions.feature_gates(release), **(feature_gates or {})}
        self.nodes = nodes
        self.progress = progress
        self.start_timeout = start_timeout
        self.processes: list[Process] = []
        self.endpoints = Endpoints()

    # -- certificates and kubeconfigs ---------------------------------------------------------------
    def _pki(self) -> None:
        pki = self.dir / "pki"
        self.ca = CertificateAuthority(pki)
        ca = self.ca
        self.etcd_server = ca.issue("etcd-server", "etcd", sans=LOOPBACK_SANS, server=True, client=True)
        self.etcd_client = ca.issue("apiserver-etcd-client", "kube-apiserver-etcd-client", client=True)
        sans = APISERVER_SANS if self.address in APISERVER_SANS else (*APISERVER_SANS, self.address)
        self.apiserver_tls = ca.issue("apiserver", "kube-apiserver", sans=sans, server=True)
        self.kubelet_client = ca.issue(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            organizations=("kubeadm:cluster-admins",),
            client=True,
        )
        self.sa = ca.service_account_keys()
        self.admin = ca.issue("admin", "kubernetes-admin", organizations=("system:masters",), client=True)
        self.kcm = ca.issue("controller-manager", "system:kube-controller-manager", client=True)
        self.scheduler = ca.issue("scheduler", "system:kube-scheduler", client=True)
        # Bound to the bootstrap role system:node-proxier by name (RBAC's bootstrap policy).
        self.kube_proxy = ca.issue("kube-proxy", "system:kube-proxy", client=True)
        # The simulated nodes: a kubelet identity each (Node authorizer, NodeRestriction) and one serving
        # certificate for the kubelet API (logs) they share on loopback.
        self.node_certs = {
            n: ca.issue(f"node-{n}", f"system:node:{n}", organizations=("system:nodes",), client=True)
            for n in self.nodes
        }
        self.kubelet_serving = ca.issue("kubelet-serving", "sim-kubelet", sans=LOOPBACK_SANS, server=True)

    def _kubeconfig(self, name: str, pair: Pair) -> Path:
        path = self.dir / f"{name}.kubeconfig"
        creds = client_certificate_user(pair.cert.read_bytes(), pair.key.read_bytes())
        write_kubeconfig(path, self.endpoints.apiserver, None, self.ca.cert_pem, "local", user=creds)
        return path

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> Endpoints:
        missing = versions.missing_binaries(self.release)
        if missing:
            raise ControlPlaneError(
                f"Kubernetes v{self.release} binaries missing in {self.bin} ({', '.join(missing)}); "
                f"build them with: make kube-bin KUBE_VERSION={versions.minor_of(self.release)}"
            )
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.progress(f"localkube: certificates for Kubernetes v{self.release}")
        self._pki()
        ports = {k: free_port() for k in ("etcd", "etcd-peer", "apiserver")}
        self.endpoints.ports = ports
        self.endpoints.etcd = f"https://127.0.0.1:{ports['etcd']}"
        self.endpoints.apiserver = f"https://{self.address}:{ports['apiserver']}"
        try:
            self._start_etcd(ports)
            self._start_apiserver(ports)
            self.endpoints.admin_kubeconfig = self._kubeconfig("admin", self.admin)
            self._authorize_kubelet_client()
            self._start_controllers()
        except BaseException:
            self.stop()
            raise
        return self.endpoints

    def stop(self) -> None:
        for p in reversed(self.processes):
            p.stop()
        self.processes.clear()

    def kubelet_serving_for(self, node: str, ip: str) -> Pair:
        """A real kubelet's serving certificate: its node name and IP, which the API server dials."""
        return self.ca.issue(
            f"kubelet-{node}",
            f"system:node:{node}",
            organizations=("system:nodes",),
            sans=(node, ip),
            server=True,
        )

    def _authorize_kubelet_client(self) -> None:
        """Let the API server's kubelet client use the kubelet API (logs, exec): a real kubelet authorizes
        it by webhook, i.e. by RBAC, as kubeadm arranges with a binding of its own."""
        body = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "localkube:apiserver-kubelet-api-admin"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:kubelet-api-admin",
            },
            "subjects": [
                {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "User",
                    "name": "kube-apiserver-kubelet-client",
                }
            ],
        }
        host, port = self.endpoints.apiserver.removeprefix("https://").split(":")
        conn = http.client.HTTPSConnection(host, int(port), context=self._context(self.admin), timeout=10)
        try:
            conn.request(
                "POST",
                "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                body=json.dumps(body),
                headers={"Content-Type": "application/json"},
            )
            resp = conn.getresponse()
            said = resp.read()[:300].decode(errors="replace")
        finally:
            conn.close()
        if resp.status not in (201, 409):
            raise ControlPlaneError(
                f"kube-apiserver refused the kubelet-client binding: HTTP {resp.status} {said}"
            )

    def kube_proxy_kubeconfig(self) -> Path:
        return self._kubeconfig("kube-proxy", self.kube_proxy)

    def node_kubeconfig(self, node: str) -> Path:
        return self._kubeconfig(f"node-{node}", self.node_certs[node])

    # -- components ---------------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> Process:
        p = Process(name, argv, self.dir / "logs" / f"{name}.log")
        p.log_path.parent.mkdir(exist_ok=True)
        self.processes.append(p)
        p.start()
        return p

    def _gates_flag(self) -> list[str]:
        if not self.gates:
            return []
        return ["--feature-gates=" + ",".join(f"{k}={str(v).lower()}" for k, v in sorted(self.gates.items()))]

    def _start_etcd(self, ports: dict[str, int]) -> None:
        self.progress("localkube: starting etcd")
        ca, srv = self.ca.cert_path, self.etcd_server
        peer = f"https://127.0.0.1:{ports['etcd-peer']}"
        p = self._spawn(
            "etcd",
            [
                str(self.bin / "etcd"),
                "--name=local",
                f"--data-dir={self.dir / 'etcd'}",
                f"--listen-client-urls={self.endpoints.etcd}",
                f"--advertise-client-urls={self.endpoints.etcd}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=local={peer}",
                "--listen-metrics-urls=",
                f"--cert-file={srv.cert}",
                f"--key-file={srv.key}",
                f"--trusted-ca-file={ca}",
                "--client-cert-auth=true",
                f"--peer-cert-file={srv.cert}",
                f"--peer-key-file={srv.key}",
                f"--peer-trusted-ca-file={ca}",
                "--peer-client-cert-auth=true",
                # A throwaway test store: durability costs seconds per run and buys nothing here.
                "--unsafe-no-fsync=true",
                "--quota-backend-bytes=1073741824",
                "--log-level=warn",
            ],
        )
        self._wait_https(p, self.endpoints.etcd, "/health", self.etcd_client, lambda b: b"true" in b)

    def _start_apiserver(self, ports: dict[str, int]) -> None:
        self.progress(f"localkube: starting kube-apiserver v{self.release}")
        d = self.dir
        p = self._spawn(
            "kube-apiserver",
            [
                str(self.bin / "kube-apiserver"),
                f"--bind-address={self.address}",
                f"--advertise-address={self.address}",
                f"--secure-port={ports['apiserver']}",
                f"--etcd-servers={self.endpoints.etcd}",
                f"--etcd-cafile={self.ca.cert_path}",
                f"--etcd-certfile={self.etcd_client.cert}",
                f"--etcd-keyfile={self.etcd_client.key}",
                f"--tls-cert-file={self.apiserver_tls.cert}",
                f"--tls-private-key-file={self.apiserver_tls.key}",
                f"--client-ca-file={self.ca.cert_path}",
                "--anonymous-auth=false",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={self.sa.cert}",
                f"--service-account-signing-key-file={self.sa.key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--kubelet-client-certificate={self.kubelet_client.cert}",
                f"--kubelet-client-key={self.kubelet_client.key}",
                f"--kubelet-certificate-authority={self.ca.cert_path}",
                "--kubelet-preferred-address-types=InternalIP",
                "--allow-privileged=true",
                "--profiling=false",
                f"--cert-dir={d / 'apiserver-certs'}",
                *self._gates_flag(),
            ],
        )
        self._wait_https(p, self.endpoints.apiserver, "/readyz", self.admin, lambda b: b.strip() == b"ok")

    def _start_controllers(self) -> None:
        self.progress("localkube: starting kube-controller-manager and kube-scheduler")
        kcm_cfg = self._kubeconfig("controller-manager", self.kcm)
        sched_cfg = self._kubeconfig("scheduler", self.scheduler)
        kcm = self._spawn(
            "kube-controller-manager",
            [
                str(self.bin / "kube-controller-manager"),
                f"--kubeconfig={kcm_cfg}",
                f"--authentication-kubeconfig={kcm_cfg}",
                f"--authorization-kubeconfig={kcm_cfg}",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--leader-elect=true",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={self.sa.key}",
                f"--root-ca-file={self.ca.cert_path}",
                f"--cluster-signing-cert-file={self.ca.cert_path}",
                f"--cluster-signing-key-file={self.ca.key_path}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--profiling=false",
                *self._gates_flag(),
            ],
        )
        sched = self._spawn(
            "kube-scheduler",
            [
                str(self.bin / "kube-scheduler"),
                f"--kubeconfig={sched_cfg}",
                f"--authentication-kubeconfig={sched_cfg}",
                f"--authorization-kubeconfig={sched_cfg}",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--leader-elect=true",
                "--profiling=false",
                *self._gates_flag(),
            ],
        )
        # Ready when each holds its leader lease and the service-account controller made the default
        # namespace's account (pods cannot be created before it exists).
        checks = [
            (kcm, "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-controller-manager"),
            (sched, "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-scheduler"),
            (kcm, "/api/v1/namespaces/default/serviceaccounts/default"),
        ]
        for proc, path in checks:
            self._wait_https(proc, self.endpoints.apiserver, path, self.admin, _holds_lease_or_exists)

    # -- readiness ----------------------------------------------------------------------------------
    def _context(self, client: Pair) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca.cert_path))
        ctx.load_cert_chain(str(client.cert), str(client.key))
        return ctx

    def _wait_https(
        self, proc: Process, base: str, path: str, client: Pair, ready: Callable[[bytes], bool]
    ) -> None:
        """Until ``base+path`` answers 200 with a body ``ready`` accepts; the component exiting ends the
        wait at once with its own last words. Backs off from 50 ms to 1 s: a component's readiness
        endpoint is the only signal it gives."""
        host, port = base.removeprefix("https://").split(":")
        ctx = self._context(client)
        deadline = time.monotonic() + self.start_timeout
        delay, last = 0.05, ""
        while True:
            code = proc.exited()
            if code is not None:
                raise ControlPlaneError(
                    f"{proc.name} exited with code {code} while starting: {proc.last_words()} "
                    f"(log {proc.log_path})"
                )
            try:
                conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=5)
                try:
                    conn.request("GET", path)
                    resp = conn.getresponse()
                    body = resp.read()
                finally:
                    conn.close()
                if resp.status == 200 and ready(body):
                    return
                last = f"HTTP {resp.status} {body[:200].decode(errors='replace').strip()}"
            except (OSError, http.client.HTTPException) as e:
                last = str(e)
            if time.monotonic() >= deadline:
                raise ControlPlaneError(
                    f"{proc.name} did not become ready within {self.start_timeout:.0f}s "
                    f"(GET {path}: {last}); its last output: {proc.last_words()} (log {proc.log_path})"
                )
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def _holds_lease_or_exists(body: bytes) -> bool:
    try:
        obj: dict[str, Any] = json.loads(body)
    except ValueError:
        return False
    if obj.get("kind") == "Lease":
        return bool((obj.get("spec") or {}).get("holderIdentity"))
    return True
