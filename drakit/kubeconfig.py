"""Kubeconfig files for a loopback API server (the sim's; localkube's): one cluster, one user (a bearer
token, or a client certificate)."""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path

import yaml


def kubeconfig_text(
    url: str, token: str | None, ca_pem: bytes, name: str = "sim", *, user: dict[str, str] | None = None
) -> str:
    """A kubeconfig for one API server: its URL, the certificate it serves and the credentials every
    request must carry (``token``, or ``user``: kubeconfig user fields such as client-certificate-data);
    cluster, user and context are all called ``name``."""
    cluster = {"server": url, "certificate-authority-data": base64.b64encode(ca_pem).decode()}
    credentials = user if user is not None else {"token": token}
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": credentials}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": "default"}}],
        "current-context": name,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def client_certificate_user(cert_pem: bytes, key_pem: bytes) -> dict[str, str]:
    """The kubeconfig user fields of a client certificate, embedded."""
    return {
        "client-certificate-data": base64.b64encode(cert_pem).decode(),
        "client-key-data": base64.b64encode(key_pem).decode(),
    }


def write_kubeconfig(
    path: str | os.PathLike[str],
    url: str,
    token: str | None,
    ca_pem: bytes,
    name: str = "sim",
    *,
    user: dict[str, str] | None = None,
) -> Path:
    """Atomic write, so a reader that sees the file sees a whole kubeconfig; mode 0600 (mkstemp's), as
    the credentials in it are all a caller needs to run commands through the API server."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".kubeconfig-", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(kubeconfig_text(url, token, ca_pem, name, user=user))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
