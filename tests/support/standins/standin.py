"""Recording stand-in for docker, kind, helm, kubectl and nvidia-smi (tests only).

Each shim in this directory runs ``$STANDIN_PYTHON standin.py <tool> <args...>``. The stand-in appends
``{"tool": ..., "argv": [...]}`` as one JSON line to ``$STANDIN_LOG`` and emulates just enough of the
tool's behaviour and output for the kind provider: kind keeps its clusters in ``$STANDIN_STATE/clusters``
and writes a real kubeconfig; ``helm install`` renders the chart offline with helm-python-sdk so that
values.schema.json really rejects wrong values. ``$STANDIN_FAIL`` holds comma-separated command prefixes
(``"docker build"``, ``"helm install"``) that fail with exit 1 and an error on stderr;
``$STANDIN_DOCKER_DOWN=1`` makes ``docker info`` fail like a stopped daemon; ``$STANDIN_GPUS`` is the GPU
count ``nvidia-smi -L`` lists; ``$STANDIN_KIND_VERSION`` overrides ``kind version``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import yaml

KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- cluster: {{server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}
  name: kind-{name}
contexts:
- context: {{cluster: kind-{name}, user: kind-{name}}}
  name: kind-{name}
current-context: kind-{name}
users:
- name: kind-{name}
  user: {{token: standin}}
"""


def fail(message: str, code: int = 1) -> None:
    sys.stderr.write(message + "\n")
    sys.exit(code)


def option(argv: list[str], name: str) -> str | None:
    """Value of --name=value or --name value."""
    for i, arg in enumerate(argv):
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
    return None


def clusters_file() -> Path:
    return Path(os.environ["STANDIN_STATE"]) / "clusters"


def clusters() -> list[str]:
    path = clusters_file()
    return path.read_text().split() if path.exists() else []


def kind(argv: list[str]) -> None:
    command = argv[:2]
    if argv[:1] == ["version"]:
        print(os.environ.get("STANDIN_KIND_VERSION", "kind v0.31.0 go1.24.6 linux/amd64"))
    elif command == ["get", "clusters"]:
        names = clusters()
        if names:
            print("\n".join(names))
        else:
            sys.stderr.write("No kind clusters found.\n")
    elif command == ["create", "cluster"]:
        name = option(argv, "--name") or "kind"
        if name in clusters():
            fail(
                f'ERROR: failed to create cluster: node(s) already exist for a cluster with the name "{name}"'
            )
        config = option(argv, "--config")
        if config:
            yaml.safe_load(Path(config).read_text())  # a broken config fails like kind would
        clusters_file().write_text("\n".join([*clusters(), name]) + "\n")
        kubeconfig = option(argv, "--kubeconfig")
        if kubeconfig:
            Path(kubeconfig).write_text(KUBECONFIG.format(name=name))
        print(f'Creating cluster "{name}" ...')
    elif command == ["delete", "cluster"]:
        name = option(argv, "--name") or "kind"
        clusters_file().write_text("".join(f"{c}\n" for c in clusters() if c != name))
        print(f'Deleting cluster "{name}" ...')
    elif command == ["get", "nodes"]:
        name = option(argv, "--name") or "kind"
        if name not in clusters():
            fail(f'ERROR: no nodes found for cluster "{name}"')
        print(f"{name}-control-plane\n{name}-worker2\n{name}-worker")
    elif command == ["load", "docker-image"]:
        print(f'Image: "{argv[-1]}" with ID "sha256:0" not yet present on node, loading...')
    elif command == ["export", "logs"]:
        Path(argv[2]).mkdir(parents=True, exist_ok=True)
        print(f"Exported logs for cluster to:\n{argv[2]}")
    else:
        fail(f"standin kind: unsupported command {argv}")


def docker(argv: list[str]) -> None:
    if argv[:1] == ["info"]:
        if os.environ.get("STANDIN_DOCKER_DOWN") == "1":
            fail(
                "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
                "Is the docker daemon running?"
            )
        print("27.3.1")
    elif argv[:1] in (["build"], ["push"], ["exec"]) or argv[:2] == ["buildx", "build"]:
        if argv[:1] == ["exec"]:
            sys.stdin.read()
        print(f"standin docker {argv[0]}: ok")
    elif argv[:2] == ["image", "inspect"]:
        local = os.environ.get("STANDIN_LOCAL_IMAGES", "").split(",")
        if argv[2] not in local:
            fail(f"Error response from daemon: No such image: {argv[2]}")
        print("[{}]")
    else:
        fail(f"standin docker: unsupported command {argv}")


def helm(argv: list[str]) -> None:
    if argv[:1] == ["install"]:
        chart = Path(argv[2])
        values: dict = {}
        values_file = option(argv, "--values")
        if values_file:
            values = yaml.safe_load(Path(values_file).read_text()) or {}
        try:
            import helm_python as hp  # the test extra; where it has no wheel, installs are not rendered
        except ImportError:
            hp = None
        if chart.is_dir() and hp is not None:
            try:
                with hp.Chart.load(chart) as loaded:
                    loaded.render(values, name=argv[1], namespace=option(argv, "--namespace") or "default")
            except hp.HelmError as exc:
                fail(f"Error: INSTALLATION FAILED: {' '.join(str(exc).split())}")
        print(f"NAME: {argv[1]}\nSTATUS: deployed\nREVISION: 1")
    elif argv[:1] == ["uninstall"]:
        print(f'release "{argv[1]}" uninstalled')
    elif argv[:1] == ["version"]:
        print("v3.18.1+g1")
    else:
        fail(f"standin helm: unsupported command {argv}")


def kubectl(argv: list[str]) -> None:
    args = list(argv)
    if args[:1] == ["--kubeconfig"]:
        args = args[2:]
    if args[:1] == ["version"]:
        print(
            json.dumps(
                {"clientVersion": {"gitVersion": "v1.37.1"}, "serverVersion": {"gitVersion": "v1.35.1"}}
            )
        )
    elif args[:1] == ["wait"]:
        print("node/standin-control-plane condition met")
    elif args[:2] == ["delete", "pod"]:
        node = (option(args, "--field-selector") or "=").split("=", 1)[1]
        print(f'pod "driver-{node}" deleted')
    elif args[:2] == ["get", "pods"]:
        names = [n for n in os.environ.get("STANDIN_DRIVER_NODES", "").split(",") if n]
        print(
            json.dumps(
                {"items": [{"metadata": {"name": f"driver-{n}"}, "spec": {"nodeName": n}} for n in names]}
            )
        )
    elif args[:1] == ["logs"]:
        print(f"log of {args[3]}")
    else:
        fail(f"standin kubectl: unsupported command {argv}")


def nvidia_smi(argv: list[str]) -> None:
    count = int(os.environ.get("STANDIN_GPUS", "0"))
    for i in range(count):
        print(f"GPU {i}: NVIDIA GeForce RTX 3090 (UUID: GPU-0000000{i}-0000-0000-0000-000000000000)")
    if count == 0:
        fail("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.", 9)


TOOLS = {"kind": kind, "docker": docker, "helm": helm, "kubectl": kubectl, "nvidia-smi": nvidia_smi}


def main() -> None:
    tool, argv = sys.argv[1], sys.argv[2:]
    with open(os.environ["STANDIN_LOG"], "a") as log:
        log.write(json.dumps({"tool": tool, "argv": argv}) + "\n")
    prefixes = [p.strip() for p in os.environ.get("STANDIN_FAIL", "").split(",") if p.strip()]
    # Match kubectl/helm commands without their --kubeconfig option, whose path differs per test.
    shown = list(argv)
    if "--kubeconfig" in shown:
        at = shown.index("--kubeconfig")
        del shown[at : at + 2]
    line = " ".join([tool, *shown])
    for prefix in prefixes:
        if line.startswith(prefix):
            fail(f"standin {tool}: injected failure for '{prefix}'")
    TOOLS[tool](argv)


if __name__ == "__main__":
    main()
