"""The sim's kubelets as clients of any Kubernetes API server, over HTTPS with a kubeconfig.

``python -m sim --apiserver-kubeconfig FILE`` runs only nodes: no in-process store, scheduler or claim
controller. Each kubelet talks to the API server the kubeconfig names, as its own node identity where
the caller gives one (``--node-kubeconfig-dir``: the Node authorizer and NodeRestriction then judge what
it does, as on a real cluster), registers its Node, renews its Lease, and serves the kubelet API's
container logs to the API server over mutual TLS. The store-shaped surface (get, list, watch, create,
patch, delete) is the one the kubelet already uses against the in-process store, so the kubelet code is
the same in both modes.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import logging
import queue
import socket
import ssl
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from sim.apiserver.errors import ApiError
from sim.kubelet.nodeobject import node_object

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 30.0
WATCH_TIMEOUT_S = 300  # the server ends a watch after this; the kubelet lists again and resumes
LEASE_DURATION_S = 40
LEASE_RENEW_S = 10.0
STATUS_EVERY_S = 60.0
MAX_BODY = 64 << 20  # a response larger than this is refused, not buffered

# Resource name (as the kubelet names it) -> (API path prefix, plural, namespaced).
_RESOURCES: dict[str, tuple[str, str, bool]] = {
    "pods": ("/api/v1", "pods", True),
    "events": ("/api/v1", "events", True),
    "configmaps": ("/api/v1", "configmaps", True),
    "secrets": ("/api/v1", "secrets", True),
    "nodes": ("/api/v1", "nodes", False),
    "leases.coordination.k8s.io": ("/apis/coordination.k8s.io/v1", "leases", True),
    "resourceslices.resource.k8s.io": ("/apis/resource.k8s.io/v1", "resourceslices", False),
    "resourceclaims.resource.k8s.io": ("/apis/resource.k8s.io/v1", "resourceclaims", True),
}


class KubeconfigError(ValueError):
    """The kubeconfig cannot be used; the message names the field and the fix."""


class Event(NamedTuple):
    type: str
    resource: str
    object: dict[str, Any]


def _data(user_or_cluster: dict[str, Any], key: str, base: Path, what: str) -> bytes | None:
    """``key-data`` (base64) or ``key`` (a path, relative to the kubeconfig's directory)."""
    if user_or_cluster.get(f"{key}-data"):
        try:
            return base64.b64decode(user_or_cluster[f"{key}-data"], validate=True)
        except ValueError:
            raise KubeconfigError(f"{what}.{key}-data is not base64; re-create the kubeconfig") from None
    if user_or_cluster.get(key):
        path = base / str(user_or_cluster[key])
        try:
            return path.read_bytes()
        except OSError as e:
            raise KubeconfigError(f"{what}.{key} {path}: {e.strerror}; fix the path") from None
    return None


class Connection:
    """Where and as whom to talk: server URL, TLS context (CA, client certificate) and bearer token."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext, token: str | None) -> None:
        self.host, self.port, self.context, self.token = host, port, context, token

    @classmethod
    def from_kubeconfig(cls, path: Path) -> Connection:
        try:
            doc = yaml.safe_load(path.read_text())
        except OSError as e:
            raise KubeconfigError(f"kubeconfig {path}: {e.strerror}; give a readable file") from None
        except yaml.YAMLError as e:
            raise KubeconfigError(f"kubeconfig {path}: not YAML ({e})") from None
        if not isinstance(doc, dict):
            raise KubeconfigError(f"kubeconfig {path}: not a kubeconfig mapping")
        current = doc.get("current-context")
        contexts = {c.get("name"): c.get("context") or {} for c in doc.get("contexts") or []}
        if current not in contexts:
            raise KubeconfigError(f"kubeconfig {path}: current-context {current!r} is not in contexts")
        ctx = contexts[current]
        clusters = {c.get("name"): c.get("cluster") or {} for c in doc.get("clusters") or []}
        users = {u.get("name"): u.get("user") or {} for u in doc.get("users") or []}
        cluster = clusters.get(ctx.get("cluster"))
        if cluster is None:
            raise KubeconfigError(f"kubeconfig {path}: context {current} names no known cluster")
        user = users.get(ctx.get("user"), {})
        url = urllib.parse.urlsplit(str(cluster.get("server", "")))
        if url.scheme != "https" or not url.hostname:
            raise KubeconfigError(f"kubeconfig {path}: clusters[].cluster.server must be an https URL")
        base = path.parent
        tls = ssl.create_default_context()
        ca = _data(cluster, "certificate-authority", base, "cluster")
        if ca:
            tls.load_verify_locations(cadata=ca.decode())
        cert = _data(user, "client-certificate", base, "user")
        key = _data(user, "client-key", base, "user")
        if cert and key:
            # ssl loads a key only from a file: a private directory that is gone once it is loaded.
            with tempfile.TemporaryDirectory(prefix="sim-kc-") as tmp:
                (Path(tmp) / "c.pem").write_bytes(cert)
                (Path(tmp) / "k.pem").write_bytes(key)
                (Path(tmp) / "k.pem").chmod(0o600)
                tls.load_cert_chain(Path(tmp) / "c.pem", Path(tmp) / "k.pem")
        token = user.get("token")
        if not (cert and key) and not token:
            raise KubeconfigError(f"kubeconfig {path}: the user has neither a client certificate nor a token")
        return cls(url.hostname, url.port or 443, tls, token)

    def open(self, timeout: float | None) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=timeout)

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"


def _error(status: int, body: bytes) -> ApiError:
    try:
        s = json.loads(body)
        return ApiError(
            s.get("code") or status,
            s.get("reason") or "",
            s.get("message") or "",
            s.get("details", {}).get("causes"),
        )
    except (ValueError, AttributeError):
        return ApiError(status, "", body[:500].decode(errors="replace"))


class RemoteWatch:
    """One HTTP watch stream read by a thread into a queue; get() -> Event | None (the stream ended)."""

    def __init__(
        self,
        conn: http.client.HTTPSConnection,
        sock: socket.socket,
        resp: http.client.HTTPResponse,
        resource: str,
    ):
        # The socket itself, kept from before the request: http.client drops conn.sock once a response
        # that will close is read, and close() must still be able to end a read blocked in it.
        self._conn, self._sock, self._resp, self.resource = conn, sock, resp, resource
        self._queue: queue.SimpleQueue[Event | None] = queue.SimpleQueue()
        self.closed = False
        self.ended = False  # the stream is over (server timeout, error, close): list again to go on
        self._thread = threading.Thread(target=self._read, name=f"watch:{resource}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while not self.closed:
                line = self._resp.readline(MAX_BODY)
                if not line:
                    break
                ev = json.loads(line)
                kind, obj = ev.get("type"), ev.get("object") or {}
                if kind == "BOOKMARK":
                    continue
                if kind == "ERROR":  # e.g. 410 Expired: the caller lists again
                    break
                self._queue.put(Event(kind, self.resource, obj))
        except Exception as e:  # a close() from another thread surfaces as any of several errors
            if not self.closed:
                log.info("watch of %s ended: %s", self.resource, e)
        finally:
            self.ended = True
            self._queue.put(None)

    def get(self, timeout: float | None = None) -> Event | None:
        try:
            return self._queue.get(timeout=timeout) if timeout != 0 else self._queue.get_nowait()
        except queue.Empty:
            return None

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._conn.close()


class RemoteStore:
    """The kubelet's view of the API over HTTPS: the in-process store's methods, as HTTP calls."""

    def __init__(self, connection: Connection, node: str | None = None) -> None:
        self.connection = connection
        self.node = node
        self._local = threading.local()
        self._heartbeat: NodeHeartbeat | None = None
        self.kubelet_port = 0  # the kubelet API's port, put in the Node's daemonEndpoints
        self.server_version = ""

    # -- requests -----------------------------------------------------------------------------------
    def _path(self, resource: str, name: str | None, namespace: str | None, sub: str | None = None) -> str:
        try:
            prefix, plural, namespaced = _RESOURCES[resource]
        except KeyError:
            raise ApiError(404, "NotFound", f"the sim kubelet does not know resource {resource}") from None
        path = prefix
        if namespaced and namespace:
            path += f"/namespaces/{urllib.parse.quote(namespace)}"
        path += f"/{plural}"
        if name:
            path += f"/{urllib.parse.quote(name)}"
        if sub:
            path += f"/{sub}"
        return path

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": f"sim-kubelet/{self.node or 'nodes'}"}
        if self.connection.token:
            headers["Authorization"] = f"Bearer {self.connection.token}"
        return headers

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> dict[str, Any]:
        conn: http.client.HTTPSConnection | None = getattr(self._local, "conn", None)
        headers = self._headers()
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        for attempt in (1, 2):  # a kept-alive connection the server closed meanwhile is opened again once
            if conn is None:
                conn = self.connection.open(REQUEST_TIMEOUT_S)
                self._local.conn = conn
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read(MAX_BODY + 1)
                break
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = self._local.conn = None
                if attempt == 2:
                    raise
        if len(raw) > MAX_BODY:
            raise ApiError(500, "InternalError", f"{method} {path}: response larger than {MAX_BODY} bytes")
        if resp.status >= 400:
            raise _error(resp.status, raw)
        return json.loads(raw) if raw else {}

    # -- the store's surface ------------------------------------------------------------------------
    def get(self, resource: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        return self.request("GET", self._path(resource, name, namespace))

    def list(
        self,
        resource: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        q = {k: v for k, v in (("labelSelector", label_selector), ("fieldSelector", field_selector)) if v}
        path = self._path(resource, None, namespace)
        out = self.request("GET", path + ("?" + urllib.parse.urlencode(q) if q else ""))
        return list(out.get("items") or []), int(out.get("metadata", {}).get("resourceVersion") or 0)

    def watch(
        self,
        resources: list[str] | str,
        since: int | None = None,
        *,
        namespace: str | None = None,
        field_selector: str | None = None,
        timeout_s: int = WATCH_TIMEOUT_S,
    ) -> RemoteWatch:
        resource = resources if isinstance(resources, str) else resources[0]
        q: dict[str, str] = {"watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": str(timeout_s)}
        if since is not None:
            q["resourceVersion"] = str(since)
        if field_selector:
            q["fieldSelector"] = field_selector
        conn = self.connection.open(timeout=None)
        conn.connect()
        sock = conn.sock
        assert sock is not None
        path = self._path(resource, None, namespace) + "?" + urllib.parse.urlencode(q)
        conn.request("GET", path, headers=self._headers())
        resp = conn.getresponse()
        if resp.status >= 400:
            raw = resp.read(MAX_BODY)
            conn.close()
            raise _error(resp.status, raw)
        return RemoteWatch(conn, sock, resp, resource)

    def history(self, resource: str, since: int, field_selector: str | None = None) -> list[Event]:
        """Events after ``since``: a watch from there that the server ends after a second."""
        w = self.watch(resource, since, field_selector=field_selector, timeout_s=1)
        out = []
        try:
            while (ev := w.get(timeout=5)) is not None:
                out.append(ev)
        finally:
            w.close()
        return out

    def create(self, resource: str, obj: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        ns = namespace or obj.get("metadata", {}).get("namespace")
        return self.request("POST", self._path(resource, None, ns), obj)

    def patch(
        self,
        resource: str,
        name: str,
        patch: dict[str, Any],
        patch_type: str = "merge",
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        types = {
            "merge": "application/merge-patch+json",
            "strategic": "application/strategic-merge-patch+json",
        }
        return self.request(
            "PATCH", self._path(resource, name, namespace, subresource), patch, types[patch_type]
        )

    def update(self, resource: str, obj: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        meta = obj["metadata"]
        return self.request(
            "PUT", self._path(resource, meta["name"], namespace or meta.get("namespace")), obj
        )

    def delete(
        self,
        resource: str,
        name: str,
        namespace: str | None = None,
        grace_period_seconds: int | None = None,
        uid: str | None = None,
    ) -> dict[str, Any]:
        opts: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if grace_period_seconds is not None:
            opts["gracePeriodSeconds"] = grace_period_seconds
        if uid:
            opts["preconditions"] = {"uid": uid}
        return self.request("DELETE", self._path(resource, name, namespace), opts)

    # -- the node -----------------------------------------------------------------------------------
    def register_kubelet(self, node_name: str) -> None:
        """Register the Node (or take over an existing one), mark it Ready and keep its Lease fresh."""
        if self.node and node_name != self.node:
            raise ValueError(f"this connection belongs to node {self.node}, not {node_name}")
        self._heartbeat = NodeHeartbeat(self, node_name)
        self._heartbeat.register()

    def unregister_kubelet(self, node_name: str) -> None:
        hb, self._heartbeat = self._heartbeat, None
        if hb is not None:
            hb.stop()


def now_micro() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class NodeHeartbeat:
    """What a kubelet does for its Node: create it, post a Ready status, renew the node Lease."""

    def __init__(self, store: RemoteStore, node: str) -> None:
        self.store, self.node = store, node
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat:{node}", daemon=True)

    def _node(self) -> dict[str, Any]:
        return node_object(self.node, self.store.server_version or "v0.0.0-sim", self.store.kubelet_port)

    def _post_status(self) -> None:
        self.store.patch("nodes", self.node, {"status": self._node()["status"]}, subresource="status")

    def register(self) -> None:
        try:
            self.store.create("nodes", {k: v for k, v in self._node().items() if k != "status"})
        except ApiError as e:
            if e.code != 409:
                raise
        self._post_status()
        self._renew()
        self._thread.start()

    def _renew(self) -> None:
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.node, "namespace": "kube-node-lease"},
            "spec": {
                "holderIdentity": self.node,
                "leaseDurationSeconds": LEASE_DURATION_S,
                "renewTime": now_micro(),
            },
        }
        try:
            self.store.patch(
                "leases.coordination.k8s.io", self.node, {"spec": lease["spec"]}, namespace="kube-node-lease"
            )
        except ApiError as e:
            if e.code != 404:
                raise
            self.store.create("leases.coordination.k8s.io", lease, namespace="kube-node-lease")

    def _run(self) -> None:
        last_status = time.monotonic()
        while not self._stop.wait(LEASE_RENEW_S):
            try:
                self._renew()
                if time.monotonic() - last_status >= STATUS_EVERY_S:
                    self._post_status()
                    last_status = time.monotonic()
            except (ApiError, OSError, http.client.HTTPException) as e:
                log.warning("heartbeat of node %s failed: %s", self.node, e)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


LogReader = Callable[[str, str, str | None, bool], bytes]


class KubeletApi:
    """The kubelet API's containerLogs on loopback, for the API server only (mutual TLS with the run's
    CA): GET /containerLogs/<namespace>/<pod>/<container>[?previous=true&tailLines=N&limitBytes=N]."""

    def __init__(self, cert: Path, key: Path, client_ca: Path, read_log: LogReader) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(cert), str(key))
        ctx.load_verify_locations(cafile=str(client_ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("kubelet api: " + fmt, *args)

            def do_GET(self) -> None:
                api._serve(self)

        self.read_log = read_log
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, name="kubelet-api", daemon=True)

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(h.path)
        parts = [urllib.parse.unquote(p) for p in url.path.split("/") if p]
        q = urllib.parse.parse_qs(url.query)
        if len(parts) != 4 or parts[0] != "containerLogs":
            return self._reply(h, 404, b"only /containerLogs/<namespace>/<pod>/<container> is served\n")
        _, ns, pod, container = parts
        try:
            data = self.read_log(ns, pod, container, q.get("previous", ["false"])[0] == "true")
        except ApiError as e:
            return self._reply(h, e.code, e.message.encode() + b"\n")
        if "tailLines" in q:
            with contextlib.suppress(ValueError):
                n = int(q["tailLines"][0])
                data = b"".join(data.splitlines(keepends=True)[-n:]) if n > 0 else b""
        if "limitBytes" in q:
            with contextlib.suppress(ValueError):
                data = data[: max(0, int(q["limitBytes"][0]))]
        self._reply(h, 200, data)

    @staticmethod
    def _reply(h: BaseHTTPRequestHandler, code: int, body: bytes) -> None:
        h.send_response(code)
        h.send_header("Content-Type", "text/plain; charset=utf-8")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
