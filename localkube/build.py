"""``make kube-bin``: build etcd and the Kubernetes control-plane binaries of one release, once.

Kubernetes is not meant to be required as a Go module, so a throwaway module in the cache requires
``k8s.io/kubernetes`` at the release and replaces every staging module (k8s.io/api, apimachinery, ...;
the list is read from k8s.io/kubernetes' own go.mod as the proxy serves it) with the published
``v0.<minor>.<patch>`` of the same name. etcd's server comes from its own module at the version the
release is tested with. Everything lands in ``~/.cache/gpu-share-conformance/kube/v<release>/bin``
(``$GSC_CACHE_DIR`` moves it), outside any work tree; a complete build is reused, an interrupted one is
not (binaries are moved into place only when all of them built).

Exit codes: 0 built or reused; 4 Go or the module proxy is missing (one sentence says how to fix it);
1 the build itself failed (its last lines are printed).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from localkube import versions

EXIT_BAD_INPUT = 4
EXIT_FAILED = 1
_STAGING = re.compile(r"^\s*(k8s\.io/[a-z0-9-]+)\s*=>\s*\./staging/", re.M)
# Published staging modules the binaries never import; the proxy may not serve them at every patch.
_UNPUBLISHED = {"k8s.io/sample-cli-plugin"}
CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
KUBE_COMMANDS = (*CONTROL_PLANE, *versions.NODE_COMPONENTS)


class BuildError(RuntimeError):
    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def _say(line: str) -> None:
    print(f"kube-bin: {line}", flush=True)


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "Go is not installed (no `go` on PATH); install Go 1.26 or newer and run make kube-bin again",
            EXIT_BAD_INPUT,
        )
    return go


def _run(argv: list[str], cwd: Path, what: str, env: dict[str, str] | None = None) -> str:
    """Run a go command, printing a line every 30 s so a long build is visibly alive."""
    t0 = time.monotonic()
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(30):
            _say(f"  ... {what}: {time.monotonic() - t0:.0f}s")

    threading.Thread(target=heartbeat, daemon=True).start()
    try:
        proc = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False
        )
    finally:
        done.set()
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        if re.search(
            r"proxy|dial tcp|no such host|connection refused|410 gone|404 not found|not found", tail, re.I
        ):
            proxy = os.environ.get("GOPROXY") or "the default proxy"
            raise BuildError(
                f"{what} failed: the Go module proxy ({proxy}) did not serve what the build needs; check "
                f"GOPROXY and the network, then run make kube-bin again. Go said:\n{tail}",
                EXIT_BAD_INPUT,
            )
        raise BuildError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    _say(f"  {what}: {time.monotonic() - t0:.0f}s")
    return proc.stdout


def _staging_modules(go: str, release: str, work: Path) -> list[str]:
    out = _run(
        [go, "mod", "download", "-json", f"k8s.io/kubernetes@v{release}"],
        work,
        f"fetch k8s.io/kubernetes@v{release}",
        env={"GOFLAGS": "-mod=mod"},
    )
    info = json.loads(out)
    text = Path(info["GoMod"]).read_text()
    return sorted(set(_STAGING.findall(text)) - _UNPUBLISHED)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _ldflags(release: str) -> str:
    major, minor, _ = release.split(".")
    # The binaries' own idea of their version: the API server's /version, its emulation version and
    # the feature gates' defaults follow it, so it must be the release's, not v0.0.0-master.
    pairs = {
        "gitVersion": f"v{release}",
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
    }
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {pkg}.{k}={v}" for k, v in pairs.items()]
    return " ".join(flags)


def build(release: str, *, force: bool = False) -> Path:
    target = versions.bin_dir(release)
    if not force and not versions.missing_binaries(release) and not versions.missing_node_binaries(release):
        _say(f"Kubernetes v{release} binaries already in {target} (reused)")
        return target
    go = _go()
    if (
        force
        or versions.missing_binaries(release)
        or any(b in versions.NODE_COMPONENTS for b in versions.missing_node_binaries(release))
    ):
        _build_kubernetes(go, release, target)
    if force or versions.missing_node_binaries(release):
        _build_node_runtime(go)
    return target


def _build_kubernetes(go: str, release: str, target: Path) -> None:
    root = versions.cache_root()
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    _say(
        f"building Kubernetes v{release} and etcd v{versions.ETCD[versions.minor_of(release)]} into {target}"
    )
    _say("  (a cold build fetches several hundred MB of modules and takes many minutes on 2 cores)")
    staging_version = "v0." + ".".join(release.split(".")[1:])
    src = root / f"src-v{release}"
    mods = _staging_modules(go, release, root)
    replaces = "\n".join(f"\t{m} => {m} {staging_version}" for m in mods)
    _write(
        src / "go.mod",
        f"module localkube\n\ngo 1.24.0\n\nrequire k8s.io/kubernetes v{release}\n\n"
        f"replace (\n{replaces}\n)\n",
    )
    imports = "\n".join(f'\t_ "k8s.io/kubernetes/cmd/{c}"' for c in KUBE_COMMANDS)
    _write(src / "tools.go", f"//go:build tools\n\npackage localkube\n\nimport (\n{imports}\n)\n")
    etcd_version = versions.ETCD[versions.minor_of(release)]
    etcd_src = root / f"src-etcd-v{etcd_version}"
    _write(
        etcd_src / "go.mod",
        f"module localetcd\n\ngo 1.24.0\n\nrequire go.etcd.io/etcd/server/v3 v{etcd_version}\n",
    )
    _write(
        etcd_src / "main.go",
        'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\n'
        "func main() { etcdmain.Main(os.Args) }\n",
    )
    env = {"GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    _run([go, "mod", "tidy"], src, "resolve Kubernetes modules", env)
    _run([go, "mod", "tidy"], etcd_src, "resolve etcd modules", env)
    staging = Path(tempfile.mkdtemp(prefix=f".v{release}-", dir=root))
    try:
        _run(
            [go, "build", "-trimpath", "-ldflags", _ldflags(release), "-o", str(staging) + "/"]
            + [f"k8s.io/kubernetes/cmd/{c}" for c in KUBE_COMMANDS],
            src,
            f"build {', '.join(KUBE_COMMANDS)}",
            env,
        )
        _run(
            [go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(staging / "etcd"), "."],
            etcd_src,
            "build etcd",
            env,
        )
        target.mkdir(parents=True, exist_ok=True)
        for b in ("etcd", *KUBE_COMMANDS):
            os.replace(staging / b, target / b)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _say(f"done in {time.monotonic() - t0:.0f}s: {target}")


def _build_node_runtime(go: str) -> None:
    """containerd v2 (daemon, runc shim, ctr) and the pause process, for real nodes. The snapshotters that
    need cgo or kernel features the nodes do not use are left out, so the build needs no C toolchain."""
    target = versions.node_bin_dir()
    root = target.parent
    t0 = time.monotonic()
    _say(
        f"building containerd v{versions.CONTAINERD}, Helm v{versions.HELM} and the pause process "
        f"into {target}"
    )
    src = root / "src-containerd"
    module = "github.com/containerd/containerd/v2"
    cmds = [f"{module}/cmd/{b}" for b in versions.CONTAINERD_BINARIES]
    _write(src / "go.mod", f"module localnode\n\ngo 1.24.0\n\nrequire {module} v{versions.CONTAINERD}\n")
    imports = "\n".join(f'\t_ "{c}"' for c in cmds)
    _write(src / "tools.go", f"//go:build tools\n\npackage localnode\n\nimport (\n{imports}\n)\n")
    helm_src = root / "src-helm"
    helm_module = "helm.sh/helm/v3"
    _write(helm_src / "go.mod", f"module localhelm\n\ngo 1.24.0\n\nrequire {helm_module} v{versions.HELM}\n")
    _write(
        helm_src / "tools.go", f'//go:build tools\n\npackage localhelm\n\nimport _ "{helm_module}/cmd/helm"\n'
    )
    pause_src = root / "src-pause"
    _write(pause_src / "go.mod", "module pause\n\ngo 1.24.0\n")
    _write(pause_src / "pause.go", (Path(__file__).parent / "pause" / "pause.go").read_text())
    env = {"GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    _run([go, "mod", "tidy"], src, "resolve containerd modules", env)
    _run([go, "mod", "tidy"], helm_src, "resolve Helm modules", env)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".containerd-", dir=root))
    try:
        version_pkg = f"{module}/version"
        ldflags = f"-s -w -X {version_pkg}.Version=v{versions.CONTAINERD} -X {version_pkg}.Revision=localkube"
        tags = "no_btrfs no_devmapper no_zfs"
        _run(
            [go, "build", "-trimpath", "-tags", tags, "-ldflags", ldflags, "-o", str(staging) + "/", *cmds],
            src,
            f"build {', '.join(versions.CONTAINERD_BINARIES)}",
            env,
        )
        helm_ldflags = f"-s -w -X {helm_module}/internal/version.version=v{versions.HELM}"
        helm_cmd = f"{helm_module}/cmd/helm"
        _run(
            [go, "build", "-trimpath", "-ldflags", helm_ldflags, "-o", str(staging / "helm"), helm_cmd],
            helm_src,
            "build helm",
            env,
        )
        _run(
            [go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(staging / versions.PAUSE), "."],
            pause_src,
            "build pause",
            env,
        )
        target.mkdir(parents=True, exist_ok=True)
        for b in versions.NODE_RUNTIME_BINARIES:
            os.replace(staging / b, target / b)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _say(f"done in {time.monotonic() - t0:.0f}s: {target}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m localkube.build", description=__doc__.split("\n\n")[0])
    p.add_argument("--kube-version", default=None, help="1.34 to 1.37 (default 1.36), or a pinned release")
    p.add_argument("--force", action="store_true", help="build again even when the cache is complete")
    args = p.parse_args(argv)
    try:
        release = versions.resolve(args.kube_version or None)
        build(release, force=args.force)
    except versions.VersionError as exc:
        print(f"kube-bin: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BuildError as exc:
        print(f"kube-bin: {exc}", file=sys.stderr)
        return exc.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
