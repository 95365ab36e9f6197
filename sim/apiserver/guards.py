"""Who may talk to the sim's API: a local client that holds this run's bearer token.

The sim runs pods' commands as the user, so a request that reaches it is as good as a shell. Three
checks, in the order a hostile caller meets them, keep it to the one who started it:
- `Host` must name loopback: a page that rebinds its own DNS name to 127.0.0.1 sends its own name here;
- a browser's cross-site `Origin` is refused (no CORS either: a preflight gets no allow headers);
- `Authorization: Bearer <token>` must carry the random token written into this run's kubeconfig,
  compared in constant time.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import secrets
from collections.abc import Mapping
from urllib.parse import urlsplit

from .errors import ApiError

TOKEN_BYTES = 32


def new_token() -> str:
    """A fresh bearer token (random per run; 43 URL-safe characters)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def _split_host_port(value: str) -> tuple[str, str] | None:
    """(host, port) of a Host header value or URL authority; port may be ''. None when malformed."""
    value = value.strip()
    if not value:
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[1:end], value[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port = rest[1:]
    else:
        host, _, port = value.partition(":")
        if ":" in port:
            return None
    if port and not port.isdigit():
        return None
    return host, port


def is_loopback_host(host: str) -> bool:
    host = host.lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=256)  # clients send the same few Host values on every request
def host_is_loopback(value: str | None) -> bool:
    parsed = _split_host_port(value or "")
    return parsed is not None and is_loopback_host(parsed[0])


@functools.lru_cache(maxsize=256)
def origin_allowed(origin: str, port: int) -> bool:
    """Only this server's own origin (a page it served, which it never does) may send Origin."""
    try:
        url = urlsplit(origin.strip())
        origin_port = url.port or (443 if url.scheme == "https" else 80)
    except ValueError:
        return False
    return url.scheme in ("http", "https") and is_loopback_host(url.hostname or "") and origin_port == port


def token_matches(authorization: str | None, token: str) -> bool:
    scheme, _, given = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def check_caller(headers: Mapping[str, list[str]], token: str, port: int) -> None:
    """Raise the ApiError a request from this caller gets, or return when it may proceed. `headers`:
    lower-case name -> values (http_limits.header_lists)."""
    hosts = headers.get("host", [])
    if len(hosts) != 1:
        raise ApiError(400, "BadRequest", "the request needs exactly one Host header")
    if not host_is_loopback(hosts[0]):
        # 421 Misdirected Request; metav1 has no StatusReason of its own for it
        raise ApiError(
            421,
            "BadRequest",
            f"this server answers only for loopback hosts (127.0.0.1, localhost, [::1]), not {hosts[0]!r}",
        )
    for origin in headers.get("origin", []):
        if not origin_allowed(origin, port):
            raise ApiError(403, "Forbidden", f"cross-site requests are refused (Origin {origin!r})")
    authorization = headers.get("authorization", [])
    if len(authorization) != 1 or not token_matches(authorization[0], token):
        # Upstream's wording; the fix is the kubeconfig this run wrote, which holds the token.
        raise ApiError(401, "Unauthorized", "Unauthorized")
