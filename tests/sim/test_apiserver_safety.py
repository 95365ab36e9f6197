"""The sim's API as a hostile local caller or a browser page meets it: each attack is refused with the
right status, and afterwards the server still answers /version to its own client.

The server here is in-process with short deadlines and few connection slots, so slow-client attacks
finish in about a second; the defaults (sim/apiserver/http_limits.py) differ only in the numbers.
"""

from __future__ import annotations

import json
import socket
import ssl
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3

from drakit.kubeconfig import write_kubeconfig
from sim.apiserver.http_limits import Limits
from sim.apiserver.server import ApiServer
from sim.apiserver.store import Store
from sim.config import SimConfig
from sim.testing import kubeconfig_credentials

LIMITS = Limits(
    max_body=1024 * 1024,
    header_timeout=1.0,
    request_timeout=2.0,
    idle_timeout=1.0,
    write_timeout=2.0,
    max_connections=12,
    queue_wait=0.2,
)
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


@pytest.fixture(scope="module")
def server() -> Iterator[ApiServer]:
    srv = ApiServer(Store(SimConfig()), limits=LIMITS)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture()
def api(server: ApiServer) -> Iterator[Raw]:
    raw = Raw(server)
    yield raw
    # Whatever the test threw at it, the server still serves its own client.
    assert raw.version_ok(), "the server stopped answering /version after the attack"


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def body_of(response: bytes) -> dict[str, Any]:
    return json.loads(response.split(b"\r\n\r\n", 1)[1] or b"{}")


class Raw:
    """Hand-made HTTP/1.1 requests over TLS to the server, to send what well-behaved clients never do."""

    def __init__(self, server: ApiServer) -> None:
        self.server = server
        self.port = server.port
        self.token = server.token
        self.context = ssl.create_default_context(cadata=server.ca_pem.decode())

    def connect(self) -> ssl.SSLSocket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return self.context.wrap_socket(sock, server_hostname="127.0.0.1")

    def head(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        auth: bool = True,
        host: str | None = None,
    ) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {f'127.0.0.1:{self.port}' if host is None else host}"]
        if auth:
            lines.append(f"Authorization: Bearer {self.token}")
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def exchange(self, data: bytes, sock: ssl.SSLSocket | None = None) -> bytes:
        """Send `data`, return the whole response (the server closes or says how long it is)."""
        own = sock is None
        sock = sock or self.connect()
        try:
            sock.sendall(data)
            return read_response(sock)
        finally:
            if own:
                sock.close()

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None, **kw: Any
    ) -> bytes:
        hdrs = {"Content-Length": str(len(body)), **(headers or {})}
        return self.exchange(self.head(method, path, hdrs, **kw) + body)

    def version_ok(self) -> bool:
        return status_of(self.request("GET", "/version")) == 200


def read_response(sock: ssl.SSLSocket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head + b"\r\n\r\n" + rest


def closed_by_server(sock: ssl.SSLSocket, within: float) -> bool:
    """True when the server closes `sock` (EOF or reset) within `within` seconds."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
        return True
    except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


# ---- who may talk ----------------------------------------------------------------------------------


def test_it_listens_on_loopback_only(server: ApiServer) -> None:
    assert server._httpd.server_address[0] == "127.0.0.1"
    assert server.url.startswith("https://127.0.0.1:")


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", "Basic c2ltOnNpbQ==", "Bearer"])
def test_a_request_without_this_runs_token_is_401(api: Raw, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    for method, path in (("GET", "/version"), ("GET", "/healthz"), ("GET", CONFIGMAPS)):
        response = api.request(method, path, headers=headers, auth=False)
        assert status_of(response) == 401, response
        assert body_of(response) == {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "Unauthorized",
            "reason": "Unauthorized",
            "code": 401,
        }


def test_a_pod_posted_without_the_token_is_not_created(api: Raw, server: ApiServer) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "evil"},
        "spec": {"containers": [{"name": "c", "image": "x", "command": ["touch", "/tmp/pwned"]}]},
    }
    response = api.request(
        "POST",
        "/api/v1/namespaces/default/pods",
        json.dumps(pod).encode(),
        {"Content-Type": "application/json"},
        auth=False,
    )
    assert status_of(response) == 401
    assert server.store.list("pods")[0] == []


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "localhost:{port}",
        "[::1]",
        "[::1]:{port}",
        "127.0.0.1:{port}",
        "127.8.9.10:{port}",
        "LOCALHOST",
    ],
)
def test_loopback_host_names_are_served(api: Raw, host: str) -> None:
    assert status_of(api.request("GET", "/version", host=host.format(port=api.port))) == 200


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:{port}",
        "10.0.0.1:{port}",
        "0.0.0.0",
        "localhost.evil.example",
        "[::ffff:1.2.3.4]",
        "127.0.0.1:x",
        "",
    ],
)
def test_a_host_that_is_not_loopback_is_421(api: Raw, host: str) -> None:
    response = api.request("GET", "/version", host=host.format(port=api.port))
    assert status_of(response) in (400, 421), response
    if host:
        assert status_of(response) == 421


def test_a_request_without_host_is_400(api: Raw) -> None:
    data = f"GET /version HTTP/1.1\r\nAuthorization: Bearer {api.token}\r\n\r\n".encode()
    assert status_of(api.exchange(data)) == 400


@pytest.mark.parametrize(
    "origin",
    ["https://evil.example", "null", "http://127.0.0.1:8080", "http://localhost.evil.example:{port}"],
)
def test_a_cross_site_origin_is_403(api: Raw, origin: str) -> None:
    response = api.request(
        "POST",
        CONFIGMAPS,
        json.dumps({"metadata": {"name": "o"}}).encode(),
        {"Content-Type": "application/json", "Origin": origin.format(port=api.port)},
    )
    assert status_of(response) == 403, response


def test_the_servers_own_origin_is_allowed(api: Raw) -> None:
    response = api.request("GET", "/version", headers={"Origin": f"https://127.0.0.1:{api.port}"})
    assert status_of(response) == 200


def test_the_token_is_random_per_run_and_the_kubeconfig_is_private(tmp_path: Path) -> None:
    a, b = ApiServer(Store(SimConfig())), ApiServer(Store(SimConfig()))
    try:
        assert a.token != b.token and len(a.token) >= 40
        path = write_kubeconfig(tmp_path / "kc", a.url, a.token, a.ca_pem)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert kubeconfig_credentials(path) == (a.token, a.ca_pem)
    finally:
        a._httpd.server_close()
        b._httpd.server_close()


# ---- bodies ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/cbor",
        "application/xml",
    ],
)
def test_a_body_in_a_type_the_api_does_not_define_is_415(
    api: Raw, server: ApiServer, content_type: str
) -> None:
    body = json.dumps({"metadata": {"name": "form"}}).encode()
    response = api.request("POST", CONFIGMAPS, body, {"Content-Type": content_type})
    assert status_of(response) == 415, response
    assert body_of(response)["reason"] == "UnsupportedMediaType"
    with pytest.raises(Exception, match="not found"):
        server.store.get("configmaps", "form", "default")


def test_a_patch_in_a_non_patch_type_is_415(api: Raw) -> None:
    api.request("POST", CONFIGMAPS, b'{"metadata":{"name":"p"}}', {"Content-Type": "application/json"})
    for ctype in ("application/json", "text/plain", "application/yaml"):
        response = api.request("PATCH", CONFIGMAPS + "/p", b'{"data":{"a":"b"}}', {"Content-Type": ctype})
        assert status_of(response) == 415, response
    ok = api.request(
        "PATCH", CONFIGMAPS + "/p", b'{"data":{"a":"b"}}', {"Content-Type": "application/merge-patch+json"}
    )
    assert status_of(ok) == 200


def test_json_yaml_and_protobuf_bodies_are_accepted(api: Raw) -> None:
    ok = api.request(
        "POST", CONFIGMAPS, b'{"metadata":{"name":"j"}}', {"Content-Type": "application/json; charset=utf-8"}
    )
    assert status_of(ok) == 201
    ok = api.request(
        "POST", CONFIGMAPS, b"metadata: {name: y}\ndata: {k: v}\n", {"Content-Type": "application/yaml"}
    )
    assert status_of(ok) == 201
    # protobuf is a defined type: a broken body is a 400 from its decoder, never a 415
    response = api.request(
        "POST", CONFIGMAPS, b"\x00\x01\x02", {"Content-Type": "application/vnd.kubernetes.protobuf"}
    )
    assert status_of(response) == 400, response


def alias_bomb(levels: int = 9) -> bytes:
    doc = b'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    prev = "a"
    for name in "bcdefghijklmnop"[: levels - 1]:
        doc += f"{name}: &{name} [{','.join(['*' + prev] * 9)}]\n".encode()
        prev = name
    return doc


def test_a_yaml_alias_bomb_is_refused_before_it_expands(api: Raw) -> None:
    bomb = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb}\nbinaryData: {}\nx:\n" + b"".join(
        b"  " + line + b"\n" for line in alias_bomb().splitlines()
    )
    assert len(bomb) < 600
    response = api.request("POST", CONFIGMAPS, bomb, {"Content-Type": "application/yaml"})
    assert status_of(response) == 400, response
    assert "aliases expand" in body_of(response)["message"]
    # and as a server-side apply body
    response = api.request(
        "PATCH", CONFIGMAPS + "/bomb?fieldManager=m", bomb, {"Content-Type": "application/apply-patch+yaml"}
    )
    assert status_of(response) == 400, response


def test_a_few_yaml_aliases_still_work(api: Raw, server: ApiServer) -> None:
    doc = b"metadata: {name: anchors, labels: &l {app: x}, annotations: *l}\n"
    assert status_of(api.request("POST", CONFIGMAPS, doc, {"Content-Type": "application/yaml"})) == 201
    stored = server.store.get("configmaps", "anchors", "default")["metadata"]
    assert stored["labels"] == stored["annotations"] == {"app": "x"}


@pytest.mark.parametrize(
    ("ctype", "body"),
    [
        ("application/json", b"[" * 1_000_000),
        ("application/json", b'{"metadata":{"name":"d"},"data":' + b'{"a":' * 150 + b"1" + b"}" * 151),
        ("application/yaml", b"[" * 500_000),
        (
            "application/yaml",
            b"x: &a " + b"[" * 60 + b"1" + b"]" * 60 + b"\ny: " + b"[" * 50 + b"*a" + b"]" * 50,
        ),
    ],
)
def test_deep_nesting_is_400(api: Raw, ctype: str, body: bytes) -> None:
    response = api.request("POST", CONFIGMAPS, body, {"Content-Type": ctype})
    assert status_of(response) == 400, response
    assert "nest" in body_of(response)["message"]  # ours, or libyaml's own "exceeded maximum nesting depth"


# ---- framing and size ------------------------------------------------------------------------------


def test_a_body_over_the_limit_is_413_before_it_is_read(api: Raw) -> None:
    sock = api.connect()
    try:
        head = api.head(
            "POST", CONFIGMAPS, {"Content-Type": "application/json", "Content-Length": str(50 * 1024 * 1024)}
        )
        response = api.exchange(head, sock)  # no body sent at all: the answer comes from the headers
    finally:
        sock.close()
    assert status_of(response) == 413 and body_of(response)["reason"] == "RequestEntityTooLarge"


def test_a_chunked_body_has_the_same_limit(api: Raw, server: ApiServer) -> None:
    # one chunk announcing 50 MB: refused from its size line
    head = api.head("POST", CONFIGMAPS, {"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    assert status_of(api.exchange(head + b"3200000\r\n")) == 413
    # many small chunks adding up to more than the limit
    piece = b" " * 65536
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(LIMITS.max_body // len(piece) + 1))
    response = api.exchange(head + b"%x\r\n{\r\n" % 1 + chunks)
    assert status_of(response) == 413, response[:200]
    # within the limit, chunked works
    body = json.dumps({"metadata": {"name": "chunked"}, "data": {"k": "v" * 1000}}).encode()
    ok = api.exchange(head + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    assert status_of(ok) == 201, ok
    assert server.store.get("configmaps", "chunked", "default")["data"]["k"] == "v" * 1000


@pytest.mark.parametrize(
    "framing",
    [
        {"Content-Length": "abc"},
        {"Content-Length": "-1"},
        {"Content-Length": "+5"},
        {"Content-Length": "1e3"},
        {"Content-Length": "5, 6"},
        {"Transfer-Encoding": "gzip"},
        {"Transfer-Encoding": "chunked, gzip"},
        {"Transfer-Encoding": "chunked", "Content-Length": "5"},
    ],
)
def test_malformed_framing_is_400(api: Raw, framing: dict[str, str]) -> None:
    head = api.head("POST", CONFIGMAPS, {"Content-Type": "application/json", **framing})
    sock = api.connect()
    try:
        response = api.exchange(head + b'{"a":1}', sock)
        assert status_of(response) == 400, response
        assert "framing" in body_of(response)["message"]
        assert closed_by_server(sock, 5)
    finally:
        sock.close()


@pytest.mark.parametrize("chunk", [b"zz\r\n", b"-1\r\n", b"5\r\n{}\r\n", b"2\r\n{}XX", b"1" * 5000 + b"\r\n"])
def test_a_bad_chunk_is_400(api: Raw, chunk: bytes) -> None:
    head = api.head("POST", CONFIGMAPS, {"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    response = api.exchange(head + chunk + b"0\r\n\r\n")
    assert status_of(response) == 400, response


def test_request_headers_over_the_size_limit_are_refused(api: Raw) -> None:
    filler = "".join(f"X-Filler-{i}: {'y' * 8000}\r\n" for i in range(40))
    data = f"GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\n{filler}\r\n".encode()
    assert status_of(api.exchange(data)) == 431


# ---- time and threads ------------------------------------------------------------------------------


def test_a_half_sent_request_is_dropped_at_its_deadline(api: Raw) -> None:
    sock = api.connect()
    try:
        sock.sendall(b"GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finishes its headers
        assert closed_by_server(sock, LIMITS.header_timeout + 5)
    finally:
        sock.close()


def test_a_slowly_dripped_request_is_dropped_at_its_deadline(api: Raw) -> None:
    sock = api.connect()
    stop = threading.Event()

    def drip() -> None:  # one byte every 0.2 s: each read is quick, the request never completes
        for byte in b"GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"z" * 1000:
            if stop.wait(0.2):
                return
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                return

    sender = threading.Thread(target=drip, daemon=True)
    sender.start()
    try:
        started = time.monotonic()
        assert closed_by_server(sock, LIMITS.header_timeout + 5)
        assert time.monotonic() - started < LIMITS.header_timeout + 5
    finally:
        stop.set()
        sender.join(timeout=5)
        sock.close()


def test_a_slow_body_is_dropped_at_the_request_deadline(api: Raw) -> None:
    sock = api.connect()
    try:
        sock.sendall(
            api.head("POST", CONFIGMAPS, {"Content-Type": "application/json", "Content-Length": "100"}) + b"{"
        )
        response = read_response(sock)
        assert status_of(response) == 408, response
    finally:
        sock.close()


def test_an_idle_keep_alive_connection_is_closed(api: Raw) -> None:
    sock = api.connect()
    try:
        assert status_of(api.exchange(api.head("GET", "/version"), sock)) == 200
        assert closed_by_server(sock, LIMITS.idle_timeout + 5)
    finally:
        sock.close()


def test_connections_beyond_the_bound_get_no_thread(api: Raw, server: ApiServer) -> None:
    def workers() -> int:
        return sum("process_request_thread" in t.name for t in threading.enumerate())

    before = workers()  # other servers in this process have theirs
    held = []
    try:
        extra = 4
        for _ in range(LIMITS.max_connections + extra):  # TCP only: never even a TLS hello
            held.append(socket.create_connection(("127.0.0.1", api.port)))
        assert workers() - before <= LIMITS.max_connections
        # the last one waits for a slot and is closed unanswered (or, if a slot freed up meanwhile, at
        # the handshake deadline); never a thread beyond the bound
        assert closed_by_server_tcp(held[-1], (extra + 1) * LIMITS.queue_wait + 2 * LIMITS.header_timeout + 5)
        assert workers() - before <= LIMITS.max_connections
    finally:
        for s in held:
            s.close()
    # The held ones are dropped at the handshake deadline; then the server is usable again.
    deadline = time.monotonic() + LIMITS.header_timeout + 10
    while True:
        try:
            if api.version_ok():
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "the server did not recover after the connection flood"
        time.sleep(0.1)  # polling a TCP service that has no event to wait on


def closed_by_server_tcp(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


# ---- list and watch parameters ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "resourceVersion=abc",
        "resourceVersion=-1",
        "limit=abc",
        "limit=-1",
        "limit=1.5",
        "resourceVersionMatch=Bogus&resourceVersion=1",
        "resourceVersionMatch=NotOlderThan",
        "resourceVersionMatch=Exact&resourceVersion=0",
        "sendInitialEvents=true",
        "watch=1&timeoutSeconds=abc",
        "watch=1&timeoutSeconds=-5",
        "watch=1&resourceVersion=abc",
        "watch=1&resourceVersionMatch=Exact&sendInitialEvents=true",
        "watch=1&resourceVersionMatch=NotOlderThan",
        "watch=1&sendInitialEvents=true",
    ],
)
def test_invalid_list_and_watch_parameters_are_400(api: Raw, query: str) -> None:
    response = api.request("GET", f"{CONFIGMAPS}?{query}")
    assert status_of(response) == 400, response
    assert body_of(response)["reason"] == "BadRequest"


@pytest.mark.parametrize(
    "query",
    [
        "resourceVersion=0",
        "resourceVersion=",
        "limit=2",
        "resourceVersion=1&resourceVersionMatch=NotOlderThan",
    ],
)
def test_valid_list_parameters_are_served(api: Raw, query: str) -> None:
    assert status_of(api.request("GET", f"{CONFIGMAPS}?{query}")) == 200


# ---- watches ---------------------------------------------------------------------------------------


def test_watchers_of_one_big_object_share_one_encoding(api: Raw, server: ApiServer) -> None:
    server.store.create("configmaps", {"metadata": {"name": "big"}, "data": {"k": "x" * 500_000}}, "default")
    http = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_cert_data=server.ca_pem.decode())
    streams = [
        http.request(
            "GET",
            f"{server.url}{CONFIGMAPS}?watch=1&fieldSelector=metadata.name%3Dbig&timeoutSeconds=10",
            headers={"Authorization": f"Bearer {server.token}"},
            preload_content=False,
        )
        for _ in range(3)
    ]
    events = []
    try:
        for r in streams:
            data = b""
            for piece in r.stream(1 << 20):
                data += piece
                if data.endswith(b"\n"):
                    break
            events.append(json.loads(data))
    finally:
        for r in streams:
            r.release_conn()
    assert [e["object"]["data"]["k"] for e in events] == ["x" * 500_000] * 3
    obj = server.store.get_raw("configmaps", "big", "default")
    assert server._httpd.encoded.get(obj) is server._httpd.encoded.get(obj)
