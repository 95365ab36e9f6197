"""The suite on sim runs whatever driver a profile's sim: section describes, through the sim kubelet's
launch contract, with the profile's republish bound; bad sim input stops the run before any scenario
with one sentence and exit code 4, leaving nothing running."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conformance.profiles import PROFILE_DIR, ProfileError, parse_profile
from conformance.providers.base import ProviderConfig, ProviderError
from conformance.providers.sim import SimProvider
from tests.support.suite import run_suite as support_run_suite

REPO = Path(__file__).resolve().parents[2]
EXIT_BAD_INPUT = 4
FAST = ["--wait-timeout=6", "--settle-seconds=0.5"]
FOREIGN = "gpu.other.example.org"


def run_suite(tmp_path: Path, *args: str, timeout: float = 150) -> tuple[int, str, dict]:
    run = support_run_suite(tmp_path, "--cluster=sim", "--nodes=node-1", *args, timeout=timeout)
    return run.code, run.output, run.report


def reference() -> dict:
    return yaml.safe_load((PROFILE_DIR / "reference.yaml").read_text())


def write_profile(tmp_path: Path, data: dict, name: str = "vendor.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def foreign_profile(sim: dict) -> dict:
    """Another vendor's driver: its own name and class, run purely as its sim: section says."""
    data = reference()
    data.update(name="other-vendor", driver=FOREIGN, deviceClass=FOREIGN)
    data["sim"] = sim
    return data


def processes_of(tmp_path: Path) -> list[str]:
    mark = f"RUN_MARK={tmp_path}".encode()
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if mark in (entry / "environ").read_bytes().split(b"\0"):
                    out.append(f"{entry.name}: {(entry / 'cmdline').read_bytes()!r}")
            except OSError:
                continue
    return out


def test_foreign_driver_from_a_profile_runs_and_republishes_within_the_profiles_bound(tmp_path):
    # Republishing takes 7 s, longer than every other wait of this run (6 s): only the profile's bound
    # (sim.republishTimeout) lets this correct driver pass lifecycle. Its unprepare-cleanup scenario runs a
    # pod, so the driver also answered NodePrepareResources over its socket.
    sim = {
        "command": ["{python}", "-m", "tests.support.mutants.late_republish"],
        "args": [
            "--node-name",
            "{node}",
            "--gpus",
            "{gpus}",
            "--registry-dir",
            "{registrar_dir}",
            "--plugin-dir",
            "{plugin_dir}",
            "--cdi-dir",
            "{cdi_dir}",
            "--driver-name",
            FOREIGN,
        ],
        "env": {"LATE_REPUBLISH_SECONDS": "7"},  # KUBECONFIG and STATE_DIR come from the contract
        "republishTimeout": 40,
    }
    profile = write_profile(tmp_path, foreign_profile(sim))
    code, out, report = run_suite(
        tmp_path, f"--driver-profile={profile}", *FAST, "-m", "lifecycle", "-k", "not restart"
    )
    caps = report.get("capabilities", {})
    assert code == 0 and report["verdict"] == "pass", out[-3000:]
    assert {c: v["verdict"] for c, v in caps.items()} == {"lifecycle": "pass"}
    assert len(caps["lifecycle"]["checks"]) == 2, caps
    assert report["driver_name"] == FOREIGN
    assert "tests.support.mutants.late_republish" in report["cluster_details"]["driver"]


def test_unknown_sim_key_or_placeholder_stops_before_the_sim_starts(tmp_path):
    data = reference()
    data["sim"]["argz"] = []
    code, out, _ = run_suite(tmp_path, f"--driver-profile={write_profile(tmp_path, data)}")
    assert code == EXIT_BAD_INPUT, out
    assert (
        "unknown key 'argz' under 'sim'; valid keys are: args, command, env, nodeEnv, republishTimeout" in out
    )
    assert "sim: serving" not in out
    data = reference()
    data["sim"]["args"][1] = "{nodename}"
    with pytest.raises(ProfileError) as err:
        parse_profile(data, "vendor.yaml")
    assert str(err.value).startswith(
        "driver profile vendor.yaml: 'sim.args[1]' uses unknown placeholder {nodename}"
    )


def test_driver_command_that_does_not_exist_stops_before_the_sim_starts(tmp_path):
    # (a command that is not executable: tests/sim/test_kubelet_launch.py; both are the same check)
    command = tmp_path / "gpu-kubelet-plugin"
    code, out, report = run_suite(tmp_path, "--driver-profile=nvidia-fork", f"--sim-driver-command={command}")
    assert code == EXIT_BAD_INPUT, out
    assert report["error"] == (
        f"driver profile nvidia-fork: the driver command {command} "
        "(--sim-driver-command) does not exist; give the driver's path with "
        "--sim-driver-command (make SIM_DRIVER_COMMAND=/path/to/driver)."
    )
    assert "sim: serving" not in out


def test_driver_that_exits_at_once_stops_the_run_quoting_it_and_leaves_nothing_running(tmp_path):
    script = REPO / "tests" / "support" / "drivers" / "exits_at_once.sh"
    data = foreign_profile({"command": [str(script)]})
    code, out, report = run_suite(tmp_path, f"--driver-profile={write_profile(tmp_path, data)}")
    assert code == EXIT_BAD_INPUT, out
    assert report["error"].startswith(
        f"driver profile other-vendor: the driver {script} exited with code 2 "
        "on node-1 before it registered with the kubelet; its last output: "
        "starting on node-1 | flag provided but not defined: -gpus"
    ), report
    assert report["capabilities"] == {}, "no scenario may run"
    assert not processes_of(tmp_path), "the run left processes behind"


def provider(tmp_path: Path, data: dict, **kw) -> SimProvider:
    return SimProvider(ProviderConfig(profile=parse_profile(data, "vendor.yaml"), work_dir=tmp_path, **kw))


def test_sim_input_is_checked_before_anything_starts(tmp_path, monkeypatch):
    nvidia = yaml.safe_load((PROFILE_DIR / "nvidia-consumable-shares.yaml").read_text())
    monkeypatch.delenv("NVIDIA_DRIVER_ROOT", raising=False)
    with pytest.raises(ProviderError) as err:
        provider(tmp_path, nvidia, driver_command="/bin/true").launch_spec()
    assert str(err.value).startswith(
        "driver profile nvidia-consumable-shares: 'sim.env.NVIDIA_DRIVER_ROOT' "
        "uses ${NVIDIA_DRIVER_ROOT}, which is not set"
    )
    monkeypatch.setenv("NVIDIA_DRIVER_ROOT", "/opt/mock-nvml")
    monkeypatch.setenv("MOCK_NVML_CONFIG_DIR", "/opt/configs")
    spec = provider(tmp_path, nvidia, driver_command="/bin/true").launch_spec()
    launch = spec.render(
        {
            "node": "node-2",
            "kubeconfig": "k",
            "registrar_dir": "r",
            "plugins_dir": "p",
            "plugin_dir": "p/d",
            "cdi_dir": "c",
            "state_dir": "s",
            "python": "py",
        },
        "node-2",
    )
    assert launch.argv == ["/bin/true"]  # NVIDIA's binary gets no flag at all: everything is env
    assert {
        k: launch.env[k]
        for k in (
            "NVIDIA_DRIVER_ROOT",
            "DRIVER_ROOT_CTR_PATH",
            "MOCK_NVML_CONFIG",
            "FEATURE_GATES",
            "CONSUMABLE_SHARES",
            "NODE_NAME",
            "CDI_ROOT",
        )
    } == {
        "NVIDIA_DRIVER_ROOT": "/opt/mock-nvml",
        "DRIVER_ROOT_CTR_PATH": "/opt/mock-nvml",
        "MOCK_NVML_CONFIG": "/opt/configs/node-2.yaml",
        "FEATURE_GATES": "ConsumableShares=true",
        "CONSUMABLE_SHARES": "memory",
        "NODE_NAME": "node-2",
        "CDI_ROOT": "c",
    }
    with pytest.raises(ProviderError) as err:
        provider(tmp_path, nvidia, driver_command="/bin/true", gpus="mixed").launch_spec()
    assert "--gpus mixed has no effect on driver profile nvidia-consumable-shares" in str(err.value)
    data = reference()
    data["sim"]["nodeEnv"] = {"node-9": {"X": "y"}}
    with pytest.raises(ProviderError) as err:
        provider(tmp_path, data, nodes=("node-1",)).launch_spec()
    assert "'sim.nodeEnv' names node 'node-9', which is not one of the cluster's nodes (node-1)" in str(
        err.value
    )
    with pytest.raises(ProviderError) as err:
        provider(tmp_path, yaml.safe_load((PROFILE_DIR / "dra-example.yaml").read_text())).launch_spec()
    assert "has no 'sim' section" in str(err.value)
