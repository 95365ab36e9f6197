"""The HTTP front end: Kubernetes REST paths over a threaded HTTP/1.1 server on 127.0.0.1.

Every request maps onto the Store; errors become metav1.Status bodies. Watches stream one JSON
WatchEvent per line with chunked transfer encoding, as kube-apiserver does.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import ssl
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from . import bodies, discovery, guards, listoptions, openapi, protobuf, tables
from .encoded import EncodedObjects
from .errors import ApiError, bad_request
from .http_limits import (
    ConnectionSlots,
    DeadlineReader,
    HeaderTooLarge,
    Limits,
    content_length,
    header_lists,
    read_body,
)
from .patch import APPLY
from .resources import BY_GROUP_VERSION_PLURAL, ResourceType
from .store import Store, bind_pod
from .tls import ServerTLS, server_tls

log = logging.getLogger("sim.apiserver")

DEFAULT_WATCH_TIMEOUT = 1800.0
# How long a quiet watch waits before checking that its client is still connected.
IDLE_CHECK_SECONDS = 5.0
_HEADER_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
)


def paginate(items: list[dict[str, Any]], limit: int | None, token: str | None) -> tuple[list[Any], str, int]:
    """limit/continue over the key-sorted list. The continue token names the last key served; a later
    page shows the current state after that key (a real apiserver serves the original snapshot)."""
    if limit is not None and limit < 0:
        raise bad_request(f"limit={limit} must not be negative")
    if token:
        try:
            after = tuple(json.loads(base64.urlsafe_b64decode(token.encode()))["after"])
        except (ValueError, KeyError, TypeError):
            raise bad_request(
                "the continue parameter is not a token this server issued; list again without it"
            ) from None

        def key(o: dict[str, Any]) -> tuple[str, str]:
            return (o["metadata"].get("namespace", ""), o["metadata"]["name"])

        items = [o for o in items if key(o) > after]
    if not limit or len(items) <= limit:
        return items, "", 0
    page = items[:limit]
    last = page[-1]["metadata"]
    next_token = base64.urlsafe_b64encode(
        json.dumps({"after": [last.get("namespace", ""), last["name"]]}).encode()
    ).decode()
    return page, next_token, len(items) - limit


class _Request:
    __slots__ = ("name", "namespace", "query", "rt", "subresource", "watch_path")

    def __init__(self) -> None:
        self.query: dict[str, str] = {}
        self.rt: ResourceType | None = None
        self.namespace: str | None = None
        self.name: str | None = None
        self.subresource: str | None = None
        self.watch_path = False


def _bool(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


def _int(query: dict[str, str], key: str) -> int | None:
    raw = query.get(key)
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise bad_request(f"query parameter {key}={raw!r} must be an integer") from None


class ApiHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        store: Store,
        port: int = 0,
        token: str | None = None,
        limits: Limits | None = None,
        tls: ServerTLS | None = None,
    ) -> None:
        self.store = store
        self.stopping = threading.Event()
        self.token = token or guards.new_token()
        self.limits = limits or Limits()
        self.tls = tls
        self.slots = ConnectionSlots(self.limits)
        self.encoded = EncodedObjects()
        super().__init__(("127.0.0.1", port), _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        conn = request
        if self.tls is not None:
            try:
                conn = self._handshake(request)
            except (OSError, ValueError):  # a failed or too slow handshake: nothing to answer
                return
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            if conn is not request:
                self.shutdown_request(conn)

    def _handshake(self, sock: socket.socket) -> ssl.SSLSocket:
        """TLS handshake in the connection's own thread. The socket timeout bounds the handshake as a
        whole (CPython applies it as one deadline), however slowly the client sends its hello."""
        assert self.tls is not None
        conn = self.tls.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        try:
            conn.settimeout(self.limits.header_timeout)
            conn.do_handshake()
        except BaseException:
            conn.close()
            raise
        return conn

    def process_request(self, request: Any, client_address: Any) -> None:
        # One thread per connection, but never more than max_connections of them.
        if not self.slots.acquire():
            log.warning(
                "closed a new connection: %d connections are served already", self.limits.max_connections
            )
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ApiHTTPServer
    server_version = "sim-apiserver"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    rfile: Any  # a DeadlineReader once set up

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile.close()
        self.rfile = DeadlineReader(self.connection)
        self._requests = 0
        self._started = 0.0
        self._header_lists: dict[str, list[str]] = {}

    def handle_one_request(self) -> None:
        limits = self.server.limits
        try:
            # A new connection must start its request soon; a kept-alive one may idle for longer.
            wait = limits.idle_timeout if self._requests else limits.header_timeout
            self.rfile.set_deadline(time.monotonic() + wait)
            if not self.rfile.peek():
                self.close_connection = True
                return
            self._requests += 1
            self._started = time.monotonic()
            self.rfile.set_deadline(self._started + limits.header_timeout, limits.max_header_bytes)
            super().handle_one_request()
        except TimeoutError:
            self.close_connection = True
        except HeaderTooLarge:
            self.close_connection = True
            try:
                self.connection.settimeout(limits.write_timeout)
                self.wfile.write(_HEADER_TOO_LARGE)
            except OSError:
                return
            self._linger()

    def handle_expect_100(self) -> bool:
        # Refuse before inviting the body, so a refused body is never sent.
        try:
            self._check_request()
        except ApiError as e:
            self.close_connection = True
            self._send_json(e.code, e.status())
            return False
        return super().handle_expect_100()

    def _check_request(self) -> None:
        self._header_lists = header_lists(self.headers)
        guards.check_caller(self._header_lists, self.server.token, self.server.port)
        content_length(self._header_lists, self.server.limits.max_body)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # ---- plumbing ----

    def _send(
        self,
        code: int,
        body: bytes,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache, private")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.command != "HEAD" and len(body) <= 65536:
            # Head and body in one write: one TLS record and one syscall for a typical response.
            self._headers_buffer.extend((b"\r\n", body))
            self.flush_headers()
            return
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, code: int, obj: Any, warnings: list[str] | None = None) -> None:
        headers = {}
        if warnings:
            headers["Warning"] = ", ".join(f'299 - "{w}"' for w in warnings)
        accept = self.headers.get("Accept", "")
        if protobuf.protobuf_only(accept):  # a client-go client that reads protobuf only
            code, body = protobuf.encode_response(code, obj)
            self._send(code, body, protobuf.CONTENT_TYPE, headers=headers)
            return
        self._send(code, json.dumps(obj, separators=(",", ":")).encode(), headers=headers)

    def _read_body(self) -> bytes:
        limits = self.server.limits
        self.rfile.set_deadline(self._started + limits.request_timeout)
        try:
            return read_body(self.rfile, self._header_lists, limits.max_body)
        except TimeoutError:
            raise ApiError(408, "Timeout", "the request body did not arrive in time") from None
        finally:
            self.rfile.set_deadline(None)
            self.connection.settimeout(limits.write_timeout)

    def _linger(self) -> None:
        """After refusing a request whose body is unread: read a little of what is in flight, so closing
        does not reset the connection before the client has read the answer (as Go's server does)."""
        self.rfile.set_deadline(time.monotonic() + 1.0)
        self.rfile.discard(self.server.limits.linger_bytes, quiet=0.1)
        self.rfile.set_deadline(None)

    def _parse_body(self, raw: bytes, content_type: str) -> Any:
        """A body in one of the media types the API defines (bodies.OBJECT_TYPES / PATCH_TYPES, as the
        caller has already checked), decoded within the nesting and alias limits."""
        if not raw.strip():
            raise bad_request("the request needs a body")
        limits = self.server.limits
        ctype = bodies.media_type(content_type) or bodies.JSON
        if protobuf.is_protobuf(ctype):
            value = protobuf.decode(raw)
            bodies.check_depth(value, limits.max_depth)
            return value
        if ctype in (bodies.YAML, APPLY):
            return bodies.decode_yaml(raw, limits.max_depth, limits.yaml_alias_budget)
        return bodies.decode_json(raw, limits.max_depth)

    def _parse_object(self, raw: bytes) -> Any:
        return self._parse_body(raw, bodies.object_media_type(self.headers.get("Content-Type")))

    def _dispatch(self, method: str) -> None:
        body_read = False
        try:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            path = unquote(url.path)
            self._check_request()
            # Any method may carry a body; it is read (within the limits) so the next request on this
            # connection starts where this one ends.
            raw = self._read_body()
            body_read = True
            self._route(method, path, query, raw)
        except ApiError as e:
            if not body_read:
                self.close_connection = True
                self.connection.settimeout(self.server.limits.write_timeout)
            self._send_json(e.code, e.status())
            if not body_read and (
                self.headers["Transfer-Encoding"] or (self.headers["Content-Length"] or "0").strip() != "0"
            ):
                self._linger()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # a bug must not take the server down: report it as a 500 Status
            log.error("internal error on %s %s\n%s", method, self.path, traceback.format_exc())
            err = ApiError(500, "InternalError", f"Internal error occurred: {type(e).__name__}: {e}")
            try:
                self._send_json(500, err.status())
            except OSError:
                self.close_connection = True

    def _route(self, method: str, path: str, query: dict[str, str], raw: bytes) -> None:
        store = self.server.store
        parts = [p for p in path.split("/") if p]
        if not parts:
            self._send_json(
                200,
                {
                    "paths": [
                        "/api",
                        "/api/v1",
                        "/apis",
                        "/openapi/v2",
                        "/openapi/v3",
                        "/version",
                        "/healthz",
                        "/readyz",
                        "/livez",
                    ]
                },
            )
            return
        head = parts[0]
        if head in ("healthz", "readyz", "livez"):
            self._send(200, b"ok", "text/plain")
            return
        if head == "version":
            self._send_json(200, discovery.version_info(store.config))
            return
        if head == "openapi":
            code, body, ctype = openapi.serve(store, parts[1:], query, self.headers.get("Accept", ""))
            self._send(code, body, ctype)
            return
        if head == "api":
            if len(parts) == 1:
                self._send_json(200, discovery.api_versions(f"127.0.0.1:{self.server.port}"))
                return
            group, version, rest = "", parts[1], parts[2:]
        elif head == "apis":
            if len(parts) == 1:
                self._send_json(200, discovery.api_group_list())
                return
            if len(parts) == 2:
                doc = discovery.api_group(parts[1])
                if doc is None:
                    raise ApiError(
                        404, "NotFound", f"the server could not find the requested resource ({path})"
                    )
                self._send_json(200, doc)
                return
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
        if not rest:
            doc = discovery.api_resource_list(group, version)
            if doc is None:
                raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
            if method != "GET":
                raise ApiError(
                    405, "MethodNotAllowed", f"the server does not allow this method ({method}) on {path}"
                )
            self._send_json(200, doc)
            return
        req = self._resolve(group, version, rest, path)
        req.query = query
        self._serve_resource(method, req, raw)

    def _resolve(self, group: str, version: str, rest: list[str], path: str) -> _Request:
        req = _Request()
        if rest[0] == "watch":
            req.watch_path = True
            rest = rest[1:]
        if (
            len(rest) >= 3
            and rest[0] == "namespaces"
            and (group, version, rest[2]) in BY_GROUP_VERSION_PLURAL
        ) or (group == "" and len(rest) >= 3 and rest[0] == "namespaces" and rest[2] == "bindings"):
            req.namespace = rest[1]
            rest = rest[2:]
        if not rest:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
        if group == "" and rest[0] == "bindings" and req.namespace:
            req.rt = BY_GROUP_VERSION_PLURAL[("", "v1", "pods")]
            req.subresource = "bindings"
            return req
        rt = BY_GROUP_VERSION_PLURAL.get((group, version, rest[0]))
        if rt is None:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
        req.rt = rt
        if len(rest) > 1:
            req.name = rest[1]
        if len(rest) > 2:
            req.subresource = "/".join(rest[2:])
        if rt.namespaced and req.name is not None and req.namespace is None:
            raise ApiError(
                404,
                "NotFound",
                f"the server could not find the requested resource ({path}): "
                f"{rt.name} is namespaced, use /namespaces/<namespace>/{rt.plural}/{req.name}",
            )
        if not rt.namespaced and req.namespace is not None:
            raise ApiError(
                404,
                "NotFound",
                f"the server could not find the requested resource ({path}): {rt.name} is cluster-scoped",
            )
        if req.subresource and req.subresource not in rt.subresources:
            raise ApiError(
                404,
                "NotFound",
                f"the server could not find the requested resource ({path}): "
                f"{rt.name} has no subresource {req.subresource!r}",
            )
        return req

    # ---- resources ----

    def _write_opts(self, q: dict[str, str]) -> dict[str, Any]:
        validation = q.get("fieldValidation") or "Strict"
        if validation not in ("Strict", "Warn", "Ignore"):
            raise bad_request(f"fieldValidation={validation!r} must be Strict, Warn or Ignore")
        dry = q.get("dryRun")
        if dry not in (None, "", "All"):
            raise bad_request(f"dryRun={dry!r}: the only supported value is All")
        return {
            "dry_run": dry == "All",
            "field_validation": validation,
            "field_manager": q.get("fieldManager"),
        }

    def _serve_resource(self, method: str, req: _Request, raw: bytes) -> None:
        store = self.server.store
        rt = req.rt
        assert rt is not None
        q = req.query
        if req.subresource == "bindings" or req.subresource == "binding":
            if method != "POST":
                raise ApiError(
                    405, "MethodNotAllowed", f"{method} is not allowed on pods/binding; POST a Binding"
                )
            self._bind(req, self._parse_object(raw))
            return
        if req.name is None:
            if method == "GET":
                if req.watch_path or _bool(q.get("watch")):
                    self._watch(req)
                else:
                    self._list(req)
            elif method == "POST":
                body = self._parse_object(raw)
                if not isinstance(body, dict):
                    raise bad_request("the body of a create must be a JSON object")
                res = store.create_ex(rt.name, body, req.namespace, **self._write_opts(q))
                self._send_json(201, res.object, res.warnings)
            elif method == "DELETE":
                opts = self._delete_opts(q, raw)
                items = store.delete_collection(
                    rt.name, req.namespace, q.get("labelSelector"), q.get("fieldSelector"), **opts
                )
                self._send_json(
                    200,
                    {
                        "apiVersion": rt.api_version,
                        "kind": rt.list_kind,
                        "metadata": {"resourceVersion": str(store.resource_version)},
                        "items": items,
                    },
                )
            else:
                raise ApiError(
                    405, "MethodNotAllowed", f"{method} is not allowed on a collection of {rt.name}"
                )
            return
        if method == "GET" and req.subresource == "log":
            self._log(req)
            return
        if method == "GET":
            if req.watch_path or _bool(q.get("watch")):
                q.setdefault("fieldSelector", "")
                q["fieldSelector"] = ",".join(
                    x for x in (q["fieldSelector"], f"metadata.name={req.name}") if x
                )
                req.name = None
                self._watch(req)
                return
            obj = store.get_raw(rt.name, req.name, req.namespace)
            self._send_json(200, self._maybe_table(rt, [obj], single=True))
            return
        if req.subresource == "log":
            raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed on pods/log")
        if method == "PUT":
            body = self._parse_object(raw)
            if not isinstance(body, dict):
                raise bad_request("the body of an update must be a JSON object")
            body_name = (body.get("metadata") or {}).get("name")
            if body_name and body_name != req.name:
                raise bad_request(
                    f"the name of the object ({body_name}) does not match the name on the URL ({req.name})"
                )
            body.setdefault("metadata", {})["name"] = req.name
            res = store.update_ex(rt.name, body, req.subresource, req.namespace, **self._write_opts(q))
            self._send_json(200, res.object, res.warnings)
        elif method == "PATCH":
            ctype = bodies.patch_media_type(self.headers.get("Content-Type"))
            patch_body = self._parse_body(raw, ctype)
            opts = self._write_opts(q)
            if ctype == APPLY and not q.get("fieldManager"):
                raise bad_request(
                    "PATCH with application/apply-patch+yaml needs a fieldManager query parameter"
                )
            res = store.patch_ex(
                rt.name,
                req.name,
                patch_body,
                ctype,
                req.namespace,
                req.subresource,
                force=_bool(q.get("force")),
                **opts,
            )
            self._send_json(201 if res.created else 200, res.object, res.warnings)
        elif method == "DELETE":
            if req.subresource:
                raise ApiError(
                    405, "MethodNotAllowed", f"DELETE is not allowed on {rt.plural}/{req.subresource}"
                )
            opts = self._delete_opts(q, raw)
            obj = store.delete_ex(rt.name, req.name, req.namespace, **opts)
            self._send_json(200, obj)
        else:
            raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed on {rt.name}")

    def _delete_opts(self, q: dict[str, str], raw: bytes) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if raw.strip():
            parsed = self._parse_object(raw)
            if not isinstance(parsed, dict):
                raise bad_request("the body of a delete must be a DeleteOptions object")
            body = parsed
        grace = body.get("gracePeriodSeconds")
        if grace is None:
            grace = _int(q, "gracePeriodSeconds")
        if grace is not None and (not isinstance(grace, int) or grace < 0):
            raise bad_request(f"gracePeriodSeconds={grace!r} must be a non-negative integer")
        dry = body.get("dryRun") or ([q["dryRun"]] if q.get("dryRun") else [])
        return {
            "grace_period_seconds": grace,
            "propagation_policy": body.get("propagationPolicy") or q.get("propagationPolicy"),
            "preconditions": body.get("preconditions"),
            "dry_run": "All" in dry,
        }

    def _maybe_table(
        self, rt: ResourceType, items: list[dict[str, Any]], single: bool = False, rv: int | None = None
    ) -> Any:
        if "as=Table" in self.headers.get("Accept", ""):
            return tables.table(rt, items, rv)
        if single:
            return items[0]
        return {
            "apiVersion": rt.api_version,
            "kind": rt.list_kind,
            "metadata": {"resourceVersion": str(rv)},
            "items": items,
        }

    def _list(self, req: _Request) -> None:
        rt = req.rt
        assert rt is not None
        q = req.query
        limit = listoptions.list_options(q, watch=False).limit
        items, rv = self.server.store.list_raw(
            rt.name, req.namespace, q.get("labelSelector"), q.get("fieldSelector")
        )
        token = q.get("continue")
        if not limit and not token:
            self._send_json(200, self._maybe_table(rt, items, rv=rv))
            return
        page, next_token, remaining = paginate(items, limit, token)
        body = self._maybe_table(rt, page, rv=rv)
        if next_token:
            body["metadata"]["continue"] = next_token
            body["metadata"]["remainingItemCount"] = remaining
        self._send_json(200, body)

    def _bind(self, req: _Request, body: Any) -> None:
        if not isinstance(body, dict) or body.get("kind") not in (None, "Binding"):
            raise bad_request("the body of pods/binding must be a v1 Binding object")
        name = req.name or (body.get("metadata") or {}).get("name")
        if not name:
            raise bad_request("Binding needs metadata.name (the pod's name)")
        if req.name and (body.get("metadata") or {}).get("name") not in (None, req.name):
            raise bad_request("the name of the Binding does not match the pod name on the URL")
        target = body.get("target") or {}
        bind_pod(
            self.server.store,
            name,
            req.namespace or "",
            target.get("name") or "",
            dry_run=self._write_opts(req.query)["dry_run"],
        )
        out = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "namespace": req.namespace},
            "target": target,
        }
        self._send_json(201, out)

    def _log(self, req: _Request) -> None:
        store = self.server.store
        pod = store.get_raw("pods", req.name or "", req.namespace)
        containers = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
        container = req.query.get("container")
        if not container:
            if len(containers) != 1:
                raise bad_request(
                    f"a container name must be specified for pod {req.name}, choose one of: {containers}"
                )
            container = containers[0]
        elif container not in containers:
            raise bad_request(f"container {container} is not valid for pod {req.name}")
        provider = store.log_provider
        node = (pod.get("spec") or {}).get("nodeName")
        if provider is None or not node:
            raise bad_request(
                f'container "{container}" in pod "{req.name}" is waiting to start: '
                "no kubelet serves logs for this pod"
            )
        if _bool(req.query.get("previous")):  # the last terminated run of the container
            data = provider(req.namespace or "", req.name or "", container, previous=True)
        else:
            data = provider(req.namespace or "", req.name or "", container)
        tail = _int(req.query, "tailLines")
        if tail is not None:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-tail:]) if tail > 0 else b""
        limit = _int(req.query, "limitBytes")
        if limit is not None:
            data = data[:limit]
        self._send(200, data, "text/plain")

    # ---- watch ----

    def _watch(self, req: _Request) -> None:
        store = self.server.store
        rt = req.rt
        assert rt is not None
        q = req.query
        opts = listoptions.list_options(q, watch=True)
        send_initial_events = _bool(q.get("sendInitialEvents"))
        bookmarks = _bool(q.get("allowWatchBookmarks"))
        timeout = opts.timeout_seconds
        deadline = time.monotonic() + (timeout if timeout is not None else DEFAULT_WATCH_TIMEOUT)
        protobuf.check_acceptable(self.headers.get("Accept", ""), rt.api_version, rt.kind)
        since = opts.resource_version or None  # unset or "0": start with the current state
        initial = since is None or send_initial_events
        try:
            w = store.watch(
                [rt.name],
                None if initial else since,
                namespace=req.namespace if rt.namespaced else None,
                label_selector=q.get("labelSelector"),
                field_selector=q.get("fieldSelector"),
                send_initial=initial,
            )
        except ApiError as e:
            if e.code != 410:
                raise
            self._start_stream()
            self._chunk({"type": "ERROR", "object": e.status()})
            self._end_stream()
            return
        self._start_stream()
        try:
            start_rv = w.last_rv
            # the initial ADDED events are already queued; the "initial-events-end" bookmark follows them
            initial_pending = send_initial_events and bookmarks
            while not self.server.stopping.is_set():
                if initial_pending and w._queue.empty():
                    self._bookmark(rt, start_rv, initial_end=True)
                    initial_pending = False
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                ev = w.get_raw(timeout=min(remaining, IDLE_CHECK_SECONDS))
                if ev is None:
                    if w.closed or self._client_gone():
                        break
                    if bookmarks:
                        self._bookmark(rt, store.resource_version)
                    continue
                self._send_event(ev.type, ev.object)
            self._end_stream()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True
        finally:
            w.close()

    def _bookmark(self, rt: ResourceType, rv: int, initial_end: bool = False) -> None:
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        self._chunk(
            {"type": "BOOKMARK", "object": {"apiVersion": rt.api_version, "kind": rt.kind, "metadata": meta}}
        )

    def _client_gone(self) -> bool:
        return self.rfile.peer_closed(self.server.limits.max_header_bytes)

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", protobuf.stream_content_type(self.headers.get("Accept", "")))
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.flush()

    def _chunk(self, event: dict[str, Any]) -> None:
        if protobuf.protobuf_only(self.headers.get("Accept", "")):
            data = protobuf.watch_frame_or_error(event["type"], event["object"])
        else:
            data = json.dumps(event, separators=(",", ":")).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _send_event(self, kind: str, obj: dict[str, Any]) -> None:
        """One WatchEvent; in JSON the object's bytes are encoded once and shared with every other
        watcher."""
        if protobuf.protobuf_only(self.headers.get("Accept", "")):
            self._chunk({"type": kind, "object": obj})
            return
        encoded = self.server.encoded.get(obj)
        head = b'{"type":"%s","object":' % kind.encode()
        size = len(head) + len(encoded) + 2
        if len(encoded) < 65536:
            self.wfile.write(b"%x\r\n%s%s}\n\r\n" % (size, head, encoded))
        else:  # no per-watcher copy of a big object: write its shared bytes as they are
            self.wfile.write(b"%x\r\n%s" % (size, head))
            self.wfile.write(encoded)
            self.wfile.write(b"}\n\r\n")
        self.wfile.flush()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class ApiServer:
    """Owns the HTTP server thread. start() returns once the socket is listening.

    It serves https with a per-run certificate, and every request must carry `Authorization: Bearer
    <token>` (random per server unless given); the kubeconfig the cluster writes holds both."""

    def __init__(
        self, store: Store, port: int = 0, token: str | None = None, limits: Limits | None = None
    ) -> None:
        self.store = store
        self._httpd = ApiHTTPServer(store, port, token, limits, server_tls())
        self._thread: threading.Thread | None = None

    @property
    def token(self) -> str:
        return self._httpd.token

    @property
    def ca_pem(self) -> bytes:
        """The server's self-signed certificate, which clients trust (kubeconfig's CA data)."""
        assert self._httpd.tls is not None
        return self._httpd.tls.ca_pem

    @property
    def url(self) -> str:
        return self._httpd.url

    @property
    def port(self) -> int:
        return self._httpd.port

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="sim-apiserver",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        self._httpd.stopping.set()
        self.store.close_watches()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __repr__(self) -> str:
        return f"ApiServer({self.url})"
