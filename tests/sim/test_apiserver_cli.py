"""`python -m sim` as a real process: kubeconfig, nodes, flags, clean shutdown."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from kubernetes import client

from sim.testing import REPO_ROOT, running_sim


def test_subprocess_serves_nodes_and_exits_cleanly_on_sigterm() -> None:
    with running_sim(nodes=["node-a", "node-b"], subprocess=True, kube_version="1.35") as sim:
        assert sim.kubeconfig.exists()  # written before "sim: serving" was printed
        api = sim.client()
        names = [n.metadata.name for n in client.CoreV1Api(api).list_node().items]
        assert names == ["node-a", "node-b"]
        assert client.VersionApi(api).get_code().minor == "35"
        api.close()
        proc = sim.process
    assert proc is not None and proc.returncode == 0
    assert sim.output[-1] == "sim: stopped"


def run_sim(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sim", "--kubeconfig", str(tmp / "kc"), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_flags_exit_2_naming_the_flag(tmp_path: Path) -> None:
    out = run_sim("--feature-gates", "DRAConsumableCapacity=maybe", tmp=tmp_path)
    assert out.returncode == 2 and "DRAConsumableCapacity must be true or false" in out.stderr
    out = run_sim("--kube-version", "1.20", tmp=tmp_path)
    assert out.returncode == 2 and "--kube-version" in out.stderr
    assert not (tmp_path / "kc").exists()


def test_port_in_use_fails_without_writing_a_kubeconfig(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        out = run_sim("--port", str(busy.getsockname()[1]), tmp=tmp_path)
    assert out.returncode == 1 and "cannot start the API server" in out.stderr
    assert not (tmp_path / "kc").exists()
