"""The run configuration (conformance/config.py): one frozen object, every default once, the same as the
command line's."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from conformance.config import (
    DEFAULT_SETTLE_SECONDS,
    DEFAULT_SIM_SETTLE_SECONDS,
    DEFAULT_SIM_WAIT_TIMEOUT,
    DEFAULT_WAIT_TIMEOUT,
    RunConfig,
)
from conformance.options import OPTIONS, SHARED_OPTIONS, dest
from conformance.resources import claims_dir, drivers_dir, kind_config_dir, scenarios_dir
from conformance.validate import build_parser, check


def test_every_option_is_a_field_with_the_same_default() -> None:
    fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    defaults = RunConfig()
    for flag, kw in (*OPTIONS, *SHARED_OPTIONS):
        name = dest(flag)
        assert name in fields, f"{flag} has no RunConfig field"
        default = kw.get("default", False if kw.get("action") == "store_true" else None)
        value = getattr(defaults, name)
        assert (str(value) if isinstance(value, Path) else value) == default, flag
    assert len(fields) == len(OPTIONS) + len(SHARED_OPTIONS)


def test_it_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        RunConfig().cluster = "kind"  # type: ignore[misc]


def test_parsed_flags_round_trip_through_args() -> None:
    argv = [
        "--cluster=sim",
        "--driver-profile=./my profile.yaml",
        "--wait-timeout=30.5",
        "--keep-cluster",
        "--report-dir=out dir",
        "--sim-feature-gates=DRAConsumableCapacity=false",
    ]
    config = RunConfig.from_options(vars(build_parser().parse_args(argv)))
    assert config.driver_profile == "./my profile.yaml" and config.report_dir == Path("out dir")
    assert sorted(config.args()) == sorted(argv)
    assert RunConfig.from_options(vars(build_parser().parse_args(config.args()))) == config


def test_defaults_that_depend_on_the_cluster() -> None:
    config = RunConfig()
    assert config.wait_timeout_for(simulated=True) == DEFAULT_SIM_WAIT_TIMEOUT
    assert config.wait_timeout_for(simulated=False) == DEFAULT_WAIT_TIMEOUT
    assert config.settle_seconds_for(simulated=True) == DEFAULT_SIM_SETTLE_SECONDS
    assert config.settle_seconds_for(simulated=False) == DEFAULT_SETTLE_SECONDS
    explicit = RunConfig(wait_timeout=7.0, settle_seconds=0.0)
    assert explicit.wait_timeout_for(True) == 7.0 and explicit.settle_seconds_for(False) == 0.0


def test_an_empty_value_means_the_default_where_it_always_did() -> None:
    config = RunConfig.from_options({"cluster": "", "driver_profile": "", "report_dir": ""})
    assert config == RunConfig()


def test_the_input_check_takes_a_run_configuration() -> None:
    inputs = check(RunConfig(cluster="sim"))
    assert inputs.provider == "sim" and inputs.config == RunConfig(cluster="sim")
    assert [t.path.name for t in inputs.templates] == sorted(p.name for p in claims_dir().glob("*.yaml"))


def test_shipped_data_is_found_through_the_package() -> None:
    assert (drivers_dir() / "reference.yaml").is_file()
    assert (kind_config_dir() / "mock-gpus.yaml").is_file()
    assert (scenarios_dir() / "conftest.py").is_file()
