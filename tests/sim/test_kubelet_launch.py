"""The driver launch contract (drakit/launch.py): any command, the node's paths as env and as
placeholders, nothing of the reference driver's added; bad specs are refused naming the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conformance.profiles import load_profile
from drakit.launch import LaunchError, LaunchSpec, reference_spec
from sim.kubelet.fleet import add_kubelets
from sim.kubelet.kubelet import DriverStartError
from sim.testing import running_sim

REPO = Path(__file__).resolve().parents[2]
RECORDER = REPO / "tests" / "support" / "drivers" / "env_recorder.sh"


def spec(**kw) -> LaunchSpec:
    return LaunchSpec.from_dict({"name": "gpu.other.example.org", "command": [str(RECORDER)], **kw})


def test_a_shell_driver_gets_its_nodes_paths_as_env_and_placeholders_and_nothing_else(tmp_path):
    launch = spec(
        args=[
            "--at",
            "{plugin_dir}",
            "{state_dir}",
            "{cdi_dir}",
            "{registrar_dir}",
            "{plugins_dir}",
            "{kubeconfig}",
            "{node}",
            "{{literal}}",
        ],
        env={"EXTRA": "x-{node}"},
        nodeEnv={
            "node-1": {"FINDINGS": str(tmp_path / "{node}.env")},
            "node-2": {"FINDINGS": str(tmp_path / "second.env")},
        },
    )
    with running_sim(nodes=["node-1", "node-2"], configure=lambda c: add_kubelets(c, launch=launch)) as sim:
        fleet_root = Path(sim.cluster.kubelets["node-1"].dirs.root).parent
        for node in ("node-1", "node-2"):
            with pytest.raises(DriverStartError) as err:
                sim.cluster.kubelets[node].wait_driver_started(30)
            # It registers nothing and exits: the error quotes what it printed last.
            assert f"exited with code 3 on {node} before it registered" in str(err.value)
            assert "env recorder: wrote " in str(err.value) and f"on {node}" in str(err.value)
    findings = {name: (tmp_path / name).read_text().splitlines() for name in ("node-1.env", "second.env")}
    root = fleet_root / "node-1"
    assert findings["node-1.env"] == [
        "NODE_NAME=node-1",
        f"KUBECONFIG={fleet_root / 'kubeconfig'}",
        f"KUBELET_REGISTRAR_DIRECTORY_PATH={root / 'plugins_registry'}",
        f"KUBELET_PLUGINS_DIRECTORY_PATH={root / 'plugins'}",
        f"CDI_ROOT={root / 'cdi'}",
        f"STATE_DIR={root / 'driver-state'}",
        "EXTRA=x-node-1",
        # exactly the spec's args, placeholders filled: no reference-driver flag was added
        "ARG=--at",
        f"ARG={root / 'plugins' / 'gpu.other.example.org'}",
        f"ARG={root / 'driver-state'}",
        f"ARG={root / 'cdi'}",
        f"ARG={root / 'plugins_registry'}",
        f"ARG={root / 'plugins'}",
        f"ARG={fleet_root / 'kubeconfig'}",
        "ARG=node-1",
        "ARG={literal}",
        "CHECK=registrar dir exists",
        "CHECK=state dir exists",
        "CHECK=cdi dir exists",
        "CHECK=kubeconfig is a kubeconfig",
    ]
    assert "NODE_NAME=node-2" in findings["second.env"] and "EXTRA=x-node-2" in findings["second.env"]


def test_the_reference_profile_runs_the_reference_driver_as_the_gpus_sugar_does():
    profile = load_profile("reference")
    from_profile = profile.sim.resolve(profile.driver, {}).to_dict()
    sugar = reference_spec(
        extra_args=["--driver-name", "gpu.sharing.example.dev", "--sharing", "on", "--memory-policy", "range"]
    ).to_dict()
    assert from_profile == sugar


@pytest.mark.parametrize(("data", "fragment"), [
    ({"args": ["--node={nodename}"]}, "'args[0]' uses unknown placeholder {nodename}"),
    ({"args": ["{node"]}, "'args[0]' has an unbalanced brace"),
    ({"env": {"X": "{gpu}"}}, "'env.X' uses unknown placeholder {gpu}"),
    ({"nodeEnv": {"node-1": {"X": "{kube}"}}}, "'nodeEnv.node-1.X' uses unknown placeholder {kube}"),
    ({"env": {"NODE_NAME": "n"}}, "'env.NODE_NAME' is set by the sim kubelet for every driver"),
    ({"env": {"1X": "n"}}, "not an environment variable name"),
    ({"command": ["{node}/driver"]}, "'command[0]' may use only {python}"),
    ({"command": []}, "'command' is empty"),
    ({"flags": []}, "unknown key 'flags'; valid keys are: name, command, args, env, nodeEnv"),
    ({"name": "Not_A_Name"}, "'name' must be the driver name"),
])  # fmt: skip
def test_bad_launch_spec_names_the_field(data, fragment):
    with pytest.raises(LaunchError) as err:
        LaunchSpec.from_dict({"name": "gpu.other.example.org", "command": ["/bin/true"], **data})
    assert fragment in str(err.value)


def test_a_command_that_is_missing_or_not_executable_is_named(tmp_path):
    (tmp_path / "plain").write_text("#!/bin/sh\n")
    for command, fragment in (
        (str(tmp_path / "nope"), "does not exist"),
        (str(tmp_path / "plain"), "is not an executable file"),
        ("no-such-driver-anywhere", "is not on PATH"),
    ):
        with pytest.raises(LaunchError) as err:
            spec(command=[command]).executable("sim.command")
        assert f"(sim.command) {fragment}" in str(err.value), err.value
    assert spec().executable() == str(RECORDER)


def test_sim_refuses_a_bad_driver_spec_file_naming_the_field(tmp_path):
    bad = tmp_path / "driver.yaml"
    bad.write_text("name: gpu.other.example.org\ncommand: [/bin/true]\nargs: ['{node_name}']\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sim",
            "--kubeconfig",
            str(tmp_path / "kc"),
            "--nodes",
            "node-1",
            "--driver-spec",
            str(bad),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"--driver-spec {bad}: 'args[0]' uses unknown placeholder {{node_name}}" in proc.stderr
    assert not (tmp_path / "kc").exists()


def test_a_driver_the_kernel_cannot_exec_is_reported_with_the_reason(tmp_path):
    binary = tmp_path / "gpu-kubelet-plugin"
    binary.write_bytes(b"\x7fELF not really")  # executable, but no format the kernel runs
    binary.chmod(0o755)
    launch = spec(command=[str(binary)])
    with (
        running_sim(nodes=["node-1"], configure=lambda c: add_kubelets(c, launch=launch)) as sim,
        pytest.raises(DriverStartError) as err,
    ):
        sim.cluster.kubelets["node-1"].wait_driver_started(30)
    assert f"the driver {binary} exited with code 127 on node-1" in str(err.value)
    assert "cannot start driver: [Errno 8] Exec format error" in str(err.value)
