"""Kubeconfig files for a loopback API server (the sim's; localkube's): one cluster, one token user."""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path

import yaml


def kubeconfig_text(url: str, token: str, ca_pem: bytes, name: str = "sim") -> str:
    """A kubeconfig for one API server: its URL, the certificate it serves and the bearer token every
    request must carry; cluster, user and context are all called ``name``."""
    cluster = {"server": url, "certificate-authority-data": base64.b64encode(ca_pem).decode()}
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": "default"}}],
        "current-context": name,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def write_kubeconfig(
    path: str | os.PathLike[str], url: str, token: str, ca_pem: bytes, name: str = "sim"
) -> Path:
    """Atomic write, so a reader that sees the file sees a whole kubeconfig; mode 0600 (mkstemp's), as
    the token in it is all a caller needs to run commands through the sim."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".kubeconfig-", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(kubeconfig_text(url, token, ca_pem, name))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
