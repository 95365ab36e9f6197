"""The driver's command line: the contract's flags, an environment fallback for each, clear errors."""

from __future__ import annotations

import pytest

from driver.config import ConfigError, parse_config

MiB = 1 << 20
GiB = 1 << 30


def test_every_flag_falls_back_to_its_environment_variable() -> None:
    env = {
        "NODE_NAME": "n1",
        "KUBECONFIG": "/k",
        "GPUS": "mixed",
        "DRIVER_NAME": "gpu.acme.io",
        "SHARING": "on",
        "MEMORY_POLICY": "range",
        "MEMORY_MIN": "1Gi",
        "MEMORY_STEP": "512Mi",
        "PLUGIN_DIR": "/p",
        "REGISTRY_DIR": "/r",
        "CDI_DIR": "/c",
        "STATE_DIR": "/s",
        "METRICS_PORT": "9400",
        "METRICS_ADDRESS": "127.0.0.1",
        "REMOVE_SLICES_ON_EXIT": "true",
        "LOG_LEVEL": "debug",
    }
    cfg = parse_config([], env)
    assert (cfg.node_name, cfg.kubeconfig, cfg.gpus, cfg.driver_name) == ("n1", "/k", "mixed", "gpu.acme.io")
    assert (cfg.memory_min, cfg.memory_step, cfg.metrics_port) == (GiB, 512 * MiB, 9400)
    assert (str(cfg.plugin_dir), str(cfg.registry_dir), str(cfg.cdi_dir), str(cfg.state_dir)) == (
        "/p",
        "/r",
        "/c",
        "/s",
    )
    assert cfg.remove_slices_on_exit and cfg.sharing and cfg.log_level == "DEBUG"
    assert str(cfg.registration_socket) == "/r/gpu.acme.io-reg.sock"
    assert str(cfg.dra_socket) == "/p/dra.sock"


def test_flags_override_environment_and_defaults_follow_the_contract() -> None:
    cfg = parse_config(["--node-name", "n2", "--sharing", "off"], {"NODE_NAME": "n1"})
    assert cfg.node_name == "n2" and not cfg.sharing and cfg.memory_policy == "none"
    cfg = parse_config(["--node-name", "n"], {})
    assert cfg.driver_name == "gpu.sharing.example.dev" and cfg.gpus == "nvml"
    assert (cfg.memory_policy, cfg.memory_min, cfg.memory_step, cfg.metrics_port) == ("range", MiB, MiB, 0)
    assert str(cfg.plugin_dir) == "/var/lib/kubelet/plugins/gpu.sharing.example.dev"
    assert str(cfg.cdi_dir) == "/var/run/cdi" and not cfg.remove_slices_on_exit


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], r"--node-name \(or NODE_NAME\) is required"),
        (["--node-name", "n", "--memory-policy", "max"], r"--memory-policy: expected none or range"),
        (
            ["--node-name", "n", "--memory-step", "1.5"],
            r"--memory-step: '1.5' is not a whole number of bytes",
        ),
        (["--node-name", "n", "--sharing", "maybe"], r"--sharing: expected on\|off"),
        (["--node-name", "n", "--driver-name", "GPU_X"], r"--driver-name: 'GPU_X' must be a lower-case DNS"),
        (["--node-name", "n", "--metrics-port", "http"], r"--metrics-port: expected a port number"),
    ],
)
def test_bad_flags_are_errors_naming_the_flag(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(argv, {})
