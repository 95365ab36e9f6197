"""The sim's API under attack, and what authentication costs (prints figures; asserts nothing).

Each memory figure is the peak RSS (VmHWM) of a fresh `python -m sim` process after one attack:
- a ~400-byte YAML alias bomb (a billion "lol"s if it were expanded);
- a 50 MB ConfigMap sent with chunked transfer encoding;
- 200 watches of one ConfigMap as big as a body may be, which is then modified once (every watcher
  gets the big object twice: the initial ADDED and the MODIFIED).
Goal: bounded, under 300 MB each. Then requests per second of the official client (read a ConfigMap,
one keep-alive connection) against the same API server without TLS and token ("before") and as the sim
serves it now ("after"); goal: after no more than 10% slower.

    .venv/bin/python benchmarks/bench_sim_safety.py [--requests 3000] [--watches 200]
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.apiserver.http_limits import Limits
from sim.testing import SimHandle, running_sim

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
GOAL_MB = 300


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/<pid>/status")


class Raw:
    def __init__(self, sim: SimHandle) -> None:
        self.host, port = sim.url.removeprefix("https://").split(":")
        self.port = int(port)
        self.token = sim.token
        self.context = ssl.create_default_context(cadata=sim.ca_pem.decode())

    def connect(self) -> ssl.SSLSocket:
        sock = socket.create_connection((self.host, self.port), timeout=120)
        return self.context.wrap_socket(sock, server_hostname=self.host)

    def head(self, method: str, path: str, extra: str = "") -> bytes:
        return (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {self.token}\r\n{extra}\r\n"
        ).encode()

    def status(self, sock: ssl.SSLSocket) -> int:
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return 0
            data += chunk
        return int(data.split(b" ", 2)[1])


def alias_bomb(levels: int = 9) -> bytes:
    doc = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb}\nx:\n"
    doc += b'  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    prev = "a"
    for name in "bcdefghijklmnop"[: levels - 1]:
        doc += f"  {name}: &{name} [{','.join(['*' + prev] * 9)}]\n".encode()
        prev = name
    return doc


def attack_alias_bomb(sim: SimHandle, raw: Raw, _args: Any) -> str:
    bomb = alias_bomb()
    with raw.connect() as s:
        s.sendall(
            raw.head("POST", CONFIGMAPS, f"Content-Type: application/yaml\r\nContent-Length: {len(bomb)}\r\n")
            + bomb
        )
        code = raw.status(s)
    return f"{len(bomb)}-byte bomb -> HTTP {code}"


def attack_chunked_body(sim: SimHandle, raw: Raw, _args: Any) -> str:
    piece = b"x" * (1 << 20)
    sent = 0
    code = 0
    with raw.connect() as s:
        start = b'{"metadata":{"name":"huge"},"data":{"k":"'
        s.sendall(
            raw.head("POST", CONFIGMAPS, "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n")
            + b"%x\r\n%s\r\n" % (len(start), start)
        )
        try:
            while sent < 50 * (1 << 20):
                s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                sent += len(piece)
            s.sendall(b'3\r\n"}}\r\n0\r\n\r\n')
        except OSError:
            pass  # the server closed the connection after its answer
        try:
            code = raw.status(s)
        except OSError:
            code = 0
    return f"sent {sent / 1e6:.0f} MB chunked before the server closed -> HTTP {code or 'closed'}"


def attack_many_watches(sim: SimHandle, raw: Raw, args: Any) -> str:
    from kubernetes import client

    api = sim.client()
    core = client.CoreV1Api(api)
    size = Limits().max_body - 4096
    core.create_namespaced_config_map(
        "default", {"metadata": {"name": "big"}, "data": {"k": "x" * size}}, _preload_content=False
    )
    received: list[int] = []
    lock = threading.Lock()
    ready = threading.Barrier(args.watches + 1)

    def watcher() -> None:
        total = 0
        with raw.connect() as s:
            s.sendall(
                raw.head("GET", f"{CONFIGMAPS}?watch=1&fieldSelector=metadata.name%3Dbig&timeoutSeconds=60")
            )
            ready.wait()
            s.settimeout(120)
            while total < 2 * size:  # the ADDED and the MODIFIED event
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                total += len(chunk)
        with lock:
            received.append(total)

    threads = [threading.Thread(target=watcher, daemon=True) for _ in range(args.watches)]
    for t in threads:
        t.start()
    ready.wait()
    core.patch_namespaced_config_map("big", "default", {"data": {"k": "y" * size}}, _preload_content=False)
    for t in threads:
        t.join(timeout=300)
    api.close()
    done = sum(r >= 2 * size for r in received)
    return (
        f"{args.watches} watches of a {size / 1e6:.1f} MB ConfigMap, modified once: "
        f"{done} got both events ({sum(received) / 1e9:.2f} GB streamed)"
    )


def measure_attack(name: str, attack: Callable[[SimHandle, Raw, Any], str], args: Any) -> None:
    with running_sim(nodes=["node-1"], subprocess=True) as sim:
        assert sim.process is not None
        base = peak_rss_mb(sim.process.pid)
        what = attack(sim, Raw(sim), args)
        peak = peak_rss_mb(sim.process.pid)
        alive = sim.process.poll() is None
    verdict = "within" if peak < GOAL_MB else "OVER"
    print(
        f"{name:<18} peak RSS {peak:7.1f} MB (idle {base:5.1f} MB; {verdict} the {GOAL_MB} MB goal); "
        f"{what}; sim {'still serving' if alive else 'DIED'}"
    )


# The sim's API server alone (no control plane), as it is ("secure": https + token) or with TLS and the
# token check taken out ("plain": the server as it was before authentication). Benchmark only.
_SERVER = """
import sys, threading
from sim.apiserver import guards, server
from sim.apiserver.store import Store
from sim.apiserver.tls import server_tls
secure = sys.argv[1] == "secure"
if not secure:
    guards.check_caller = lambda headers, token, port: None
httpd = server.ApiHTTPServer(Store(), 0, None, None, server_tls() if secure else None)
print(httpd.url, httpd.token, flush=True)
if secure:
    print(httpd.tls.ca_pem.decode().replace(chr(10), "|"), flush=True)
threading.Thread(target=httpd.serve_forever, daemon=True).start()
sys.stdin.read()
"""


def serve_and_measure(mode: str, requests: int) -> tuple[float, float]:
    from kubernetes import client

    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER, mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert proc.stdout is not None
        url, token = proc.stdout.readline().split()
        cfg = client.Configuration()
        cfg.host = url
        if mode == "secure":  # what load_kube_config makes of the sim's kubeconfig
            cfg.api_key = {"authorization": f"Bearer {token}"}
            cfg.ca_cert_data = proc.stdout.readline().strip().replace("|", "\n")
        api = client.ApiClient(cfg)
        try:
            return client_rps(api, requests, proc.pid)
        finally:
            api.close()
    finally:
        proc.kill()
        proc.wait()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_rps(api: Any, requests: int, server_pid: int) -> tuple[float, float]:
    """(requests per second, CPU microseconds per request of client and server together). CPU time is
    the steadier figure on a busy machine; wall time is what a user sees."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    core.create_namespaced_config_map("default", {"metadata": {"name": "rps"}, "data": {"a": "b"}})
    for _ in range(50):  # warm up the connection and the client
        core.read_namespaced_config_map("rps", "default")
    cpu0, server0, t0 = time.process_time(), cpu_seconds(server_pid), time.perf_counter()
    for _ in range(requests):
        core.read_namespaced_config_map("rps", "default")
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0 + cpu_seconds(server_pid) - server0
    return requests / wall, cpu / requests * 1e6


def measure_auth_cost(requests: int, rounds: int) -> None:
    runs: dict[str, list[tuple[float, float]]] = {"plain": [], "secure": []}
    for _ in range(rounds):
        for mode, results in runs.items():
            results.append(serve_and_measure(mode, requests))
    rps = {m: statistics.median(r[0] for r in v) for m, v in runs.items()}
    cpu = {m: statistics.median(r[1] for r in v) for m, v in runs.items()}
    print(f"official client, GET a ConfigMap x{requests} on one keep-alive connection, median of {rounds}:")
    for mode, label in (("plain", "before (http, no token)"), ("secure", "after  (https + token) ")):
        print(
            f"  {label}: {rps[mode]:6.0f} req/s, {cpu[mode]:6.0f} us CPU/request (client + server)   "
            f"runs: {[round(r[0]) for r in runs[mode]]}"
        )
    print(
        f"  after vs before: {100 * (rps['plain'] - rps['secure']) / rps['plain']:+.1f}% slower by req/s, "
        f"{100 * (cpu['secure'] - cpu['plain']) / cpu['plain']:+.1f}% more CPU (goal: at most 10% slower)"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--watches", type=int, default=200)
    args = ap.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    measure_attack("YAML alias bomb", attack_alias_bomb, args)
    measure_attack("chunked 50 MB", attack_chunked_body, args)
    measure_attack(f"{args.watches} watches", attack_many_watches, args)
    measure_auth_cost(args.requests, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
