"""Driver profiles: the shipped ones load; bad ones stop with a sentence naming the key and the fix."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from conformance.profiles import PROFILE_DIR, ProfileError, available_profiles, load_profile, parse_profile

SHIPPED = ("reference", "nvidia-fork", "nvidia-consumable-shares", "dra-example")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profile_loads(name: str) -> None:
    profile = load_profile(name)
    assert profile.name == name
    assert profile.sharing is True


def test_reference_profile_matches_the_driver_contract() -> None:
    p = load_profile("reference")
    assert (p.driver, p.device_class, p.capacity, p.identity_attribute) == (
        "gpu.sharing.example.dev",
        "gpu.sharing.example.dev",
        "memory",
        "uuid",
    )
    assert p.visibility.env == {"GPU_DEVICE_{index}": "{uuid}", "GPU_DEVICE_{index}_MEMORY": "{granted}"}
    assert p.cel_ref("attributes", "uuid") == 'device.attributes["gpu.sharing.example.dev"].uuid'


def test_nvidia_fork_profile_carries_the_chart_override_the_chart_needs() -> None:
    p = load_profile("nvidia-fork")
    assert p.install.values["gpuResourcesEnabledOverride"] is True
    assert p.install.values["resources"]["gpus"]["enabled"] is True
    assert p.request_policy == "none" and p.visibility.method == "nvidia-smi"


def _reference() -> dict:
    return yaml.safe_load((PROFILE_DIR / "reference.yaml").read_text())


def test_unknown_top_level_key_names_the_key_and_the_valid_ones() -> None:
    data = _reference()
    data["sharingg"] = True
    with pytest.raises(ProfileError) as err:
        parse_profile(data, "x.yaml")
    msg = str(err.value)
    assert "unknown key 'sharingg'" in msg and "valid keys are:" in msg and "deviceClass" in msg


def test_unknown_nested_key_names_where_it_sits() -> None:
    data = _reference()
    data["claims"]["visibility"]["envs"] = {}
    with pytest.raises(
        ProfileError,
        match=r"unknown key 'envs' under 'claims.visibility'; valid "
        "keys are: deviceNodes, env, method",
    ):
        parse_profile(data, "x.yaml")


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d.pop("driver"), "required key 'driver' is missing"),
        (
            lambda d: d["claims"].__setitem__("requestPolicy", "ranges"),
            "'claims.requestPolicy' is 'ranges'; valid values",
        ),
        (lambda d: d.__setitem__("driver", "GPU_Driver"), "is not a lower-case DNS subdomain"),
        (lambda d: d["claims"].__setitem__("sharing", "yes"), "'claims.sharing' must be a non-empty bool"),
        (lambda d: d["install"].pop("chart"), "'install.chart' is missing"),
        (lambda d: d["claims"]["visibility"].pop("env"), "'claims.visibility.env' is empty"),
    ],
)
def test_malformed_profile_is_rejected_with_the_field(mutate, needle: str) -> None:
    data = copy.deepcopy(_reference())
    mutate(data)
    with pytest.raises(ProfileError, match="driver profile x.yaml: .*" + needle.replace("(", r"\(")[:40]):
        parse_profile(data, "x.yaml")


def test_unknown_profile_name_lists_the_shipped_ones() -> None:
    with pytest.raises(ProfileError) as err:
        load_profile("no-such-driver")
    assert all(n in str(err.value) for n in SHIPPED)
    assert set(SHIPPED) <= set(available_profiles())


def test_profile_that_is_not_yaml_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ProfileError, match="not valid YAML"):
        load_profile(str(bad))


def test_device_node_templates_must_be_paths_under_dev() -> None:
    data = _reference()
    data["claims"]["visibility"]["deviceNodes"] = ["nvidia{minor}"]
    with pytest.raises(
        ProfileError,
        match=r"'claims.visibility.deviceNodes' entries must be path templates "
        r"under /dev/",
    ):
        parse_profile(data, "x.yaml")
    data["claims"]["visibility"]["deviceNodes"] = ["/dev/nvidia{minor}"]
    assert parse_profile(data, "x.yaml").visibility.device_nodes == ("/dev/nvidia{minor}",)
