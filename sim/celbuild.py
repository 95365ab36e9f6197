"""Builds the sim's CEL library: upstream's DRA CEL environment compiled from Go (sim/celgo).

`make setup` runs `python -m sim.celbuild`. The library is built once per version of the Go sources
into a cache outside the work tree (`$XDG_CACHE_HOME/gpu-share-conformance/`, else
`~/.cache/gpu-share-conformance/`), so a rebuild only happens when sim/celgo changes. Building needs Go
(the version sim/celgo/go.mod names, or newer), a C compiler for cgo, and the Go module proxy the first
time (Go keeps the modules in its own cache); evaluating selectors later needs neither Go nor network.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent / "celgo"
SOURCES = ("go.mod", "go.sum", "main.go")
EXIT_BAD_INPUT = 4


class CelBuildError(Exception):
    """One sentence saying what is missing and how to fix it."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gpu-share-conformance"


def source_digest() -> str:
    h = hashlib.sha256(f"{sys.platform}-{platform.machine()}".encode())
    for name in SOURCES:
        h.update(name.encode() + b"\0" + (SOURCE_DIR / name).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def library_path() -> Path:
    """Where the library for the current Go sources lives (it may not be built yet)."""
    return cache_dir() / f"libdracel-{source_digest()}.so"


def required_go_version() -> tuple[int, int]:
    m = re.search(r"^go (\d+)\.(\d+)", (SOURCE_DIR / "go.mod").read_text(), re.MULTILINE)
    assert m, "sim/celgo/go.mod names no go version"
    return int(m[1]), int(m[2])


def _go_binary() -> str:
    go = os.environ.get("GO") or shutil.which("go")
    want = "{}.{}".format(*required_go_version())
    if not go:
        raise CelBuildError(
            f"building the sim's CEL library needs Go {want} or newer, and `go` is not on PATH: "
            "install Go from https://go.dev/dl/ or set GO=/path/to/go"
        )
    try:
        out = subprocess.run(
            [go, "env", "GOVERSION"], capture_output=True, text=True, timeout=60, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise CelBuildError(
            f"building the sim's CEL library needs a working Go: `{go} env GOVERSION` "
            f"failed ({exc}); reinstall Go {want} or newer or set GO=/path/to/go"
        ) from None
    m = re.match(r"go(\d+)\.(\d+)", out)
    if not m or (int(m[1]), int(m[2])) < required_go_version():
        raise CelBuildError(
            f"building the sim's CEL library needs Go {want} or newer, found {out or '?'} "
            f"at {go}: install a newer Go from https://go.dev/dl/ or set GO=/path/to/go"
        )
    return go


def build(force: bool = False) -> Path:
    """Build the library unless the cache already holds it; returns its path."""
    target = library_path()
    if target.is_file() and not force:
        return target
    go = _go_binary()
    cc = os.environ.get("CC") or "cc"
    if not shutil.which(cc.split()[0]):
        raise CelBuildError(
            f"building the sim's CEL library needs a C compiler for cgo, and `{cc}` is "
            "not on PATH: install gcc (Debian: apt-get install gcc) or set CC"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CGO_ENABLED": "1", "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly"}
    # A temporary name in the same folder, then a rename: concurrent builds never expose half a file.
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        proc = subprocess.run(
            [go, "build", "-trimpath", "-buildmode=c-shared", "-ldflags=-s -w", "-o", tmp, "."],
            cwd=SOURCE_DIR,
            env=env,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise CelBuildError(
                "building the sim's CEL library failed (`go build` in sim/celgo): "
                + (proc.stderr.strip() or proc.stdout.strip())
            )
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
        Path(tmp).with_suffix(".h").unlink(missing_ok=True)
    return target


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        path = build(force="--force" in args)
    except CelBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"sim CEL library: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
