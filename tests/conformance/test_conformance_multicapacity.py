"""Devices with several consumable capacities: a request consumes every one of them (asked for, or by
its policy's default), the capacity that runs out first bounds the sharers, and a sharer that does not
ask for a capacity whose default is the whole device is diagnosed at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conformance import report as report_mod
from conformance.capacity import (
    DeviceCapacities,
    consumed_mismatch,
    format_bytes,
    share_plan,
    sharer_requests,
)
from conformance.inventory import Gpu, capacities_by_device
from conformance.preflight import PreflightResult, share_request_problem
from conformance.profiles import PROFILE_DIR, ProfileError, load_profile, parse_profile
from drakit import quantity as q

REPO = Path(__file__).resolve().parents[2]

GI, MI = 1 << 30, 1 << 20
DRIVER = "gpu.example.com"


def device(**capacity: dict) -> DeviceCapacities:
    return DeviceCapacities.from_device({"name": "gpu-0", "capacity": capacity}, DRIVER)


# kubernetes-sigs/dra-example-driver with --gpu-allow-multiple-allocations (issue 15's numbers).
DRA_EXAMPLE = {
    "memory": {
        "value": "80Gi",
        "requestPolicy": {"default": "80Gi", "validRange": {"min": "1Gi", "step": "1Gi"}},
    },
    "compute": {"value": "100", "requestPolicy": {"default": "100", "validRange": {"min": "1", "step": "1"}}},
}


def test_memory_only_request_also_consumes_all_the_defaulted_compute() -> None:
    caps = device(**DRA_EXAMPLE)
    assert caps.consumes({"memory": 10 * GI}) == {"memory": 10 * GI, "compute": 100}
    assert caps.sharers_that_fit({"memory": 10 * GI}) == 1
    assert caps.fit_per_capacity({"memory": 10 * GI}) == {"memory": 8, "compute": 1}


def test_asking_for_half_the_compute_lets_two_sharers_fit() -> None:
    caps = device(**DRA_EXAMPLE)
    ask = {"memory": 10 * GI, "compute": 50}
    assert caps.consumes(ask) == ask
    assert caps.sharers_that_fit(ask) == 2
    used = [caps.consumes(ask)]
    assert caps.remaining(used) == {"memory": 70 * GI, "compute": 50}
    assert caps.sharers_that_fit(ask, used=used) == 1


def test_every_policy_rounds_its_own_capacity() -> None:
    caps = device(
        memory={
            "value": "24Gi",
            "requestPolicy": {"default": "24Gi", "validRange": {"min": "1Gi", "step": "1Gi"}},
        },
        shares={"value": "10", "requestPolicy": {"default": "1", "validValues": ["1", "2", "5"]}},
        cores={"value": "100"},  # no policy: asked amounts as they are, no request takes everything
    )
    assert caps.consumes({"memory": 5 * GI + 1, "shares": 3, "cores": 7}) == {
        "memory": 6 * GI,
        "shares": 5,
        "cores": 7,
    }
    assert caps.consumes({"memory": GI}) == {"memory": GI, "shares": 1, "cores": 100}
    assert caps.consumes({"shares": 6}) is None  # above every valid value: ineligible
    assert caps.consumes({"nonexistent": 1}) is None  # names a capacity the device lacks


def test_a_small_default_bounds_sharers_without_being_a_blocker() -> None:
    # NVIDIA consumable shares in integer mode: shares default to 1 per claim.
    caps = device(
        memory={"value": "24Gi"},
        shares={"value": "3", "requestPolicy": {"default": "1", "validRange": {"min": "1", "step": "1"}}},
    )
    plan = share_plan(caps, "memory", {"memory": "share"})
    assert plan.requests == {"memory": 6 * GI}
    assert (plan.sharers, plan.by_primary) == (3, 4)
    assert plan.defaulted_blockers() == []


def test_default_profile_plan_names_the_capacity_that_defaults_to_the_whole_device() -> None:
    plan = share_plan(device(**DRA_EXAMPLE), "memory", {"memory": "share"})
    assert plan.requests == {"memory": 20 * GI}
    assert (plan.sharers, plan.by_primary) == (1, 4)
    assert plan.defaulted_blockers() == ["compute"]
    assert plan.defaulted_blockers(want=1) == []


def test_proportional_and_share_requests_pack_by_every_capacity() -> None:
    caps = device(**DRA_EXAMPLE)
    for how in ("proportional", "share"):
        plan = share_plan(caps, "memory", {"memory": "share", "compute": how})
        assert plan.requests == {"memory": 20 * GI, "compute": 25}
        assert plan.sharers == 4 and plan.defaulted_blockers() == []


def test_proportional_lands_on_the_policy_grid_and_never_above_one_request() -> None:
    caps = device(
        memory={"value": "24Gi"},
        compute={
            "value": "100",
            "requestPolicy": {"default": "100", "validRange": {"min": "10", "max": "90", "step": "10"}},
        },
    )
    declared = {"memory": "share", "compute": "proportional"}
    assert sharer_requests(caps, "memory", declared, parts=4) == {"memory": 6 * GI, "compute": 20}
    assert sharer_requests(caps, "memory", declared, amount=GI)["compute"] == 10  # min
    assert sharer_requests(caps, "memory", declared, amount=48 * GI)["compute"] == 90  # max
    assert share_plan(caps, "memory", declared).sharers == 4


def test_fixed_quantity_is_asked_as_declared() -> None:
    caps = device(**DRA_EXAMPLE)
    plan = share_plan(caps, "memory", {"memory": "10Gi", "compute": "50"})
    assert plan.requests == {"memory": 10 * GI, "compute": 50}
    assert plan.sharers == 2


def test_consumed_capacity_check_compares_every_key() -> None:
    caps = device(**DRA_EXAMPLE)
    expected = caps.consumes({"memory": 10 * GI})
    assert consumed_mismatch(expected, {"memory": 10 * GI, "compute": 100}, caps) == []
    assert consumed_mismatch(expected, {"memory": 10 * GI}, caps) == [
        "compute=absent (the published policy says 100)"
    ]
    assert consumed_mismatch(expected, {"memory": 10 * GI, "compute": 100, "extra": 1}, caps) == [
        "extra=1 (the published policy says absent)"
    ]


def test_capacities_keep_the_drivers_domain_and_their_own_format() -> None:
    caps = DeviceCapacities.from_device(
        {"capacity": {f"{DRIVER}/compute": DRA_EXAMPLE["compute"], "memory": DRA_EXAMPLE["memory"]}}, DRIVER
    )
    assert caps.names() == ["compute", "memory"]
    assert caps["compute"].format(50) == "50" and caps["memory"].format(10 * GI) == "10Gi"
    assert caps["compute"].describe() == "100, default 100, range 1..100 step 1"
    assert format_bytes(caps["memory"].default_consumption()) == "80Gi"


def test_quantity_sharers_that_fit_counts_per_capacity() -> None:
    published = {"memory": {"value": "24Gi"}, "compute": {"value": "100"}}
    consumed = {"memory": q.parse_quantity("6Gi"), "compute": q.parse_quantity("30")}
    assert q.sharers_that_fit(consumed, published) == {"memory": 4, "compute": 3}
    already = [{"memory": q.parse_quantity("20Gi"), "compute": q.parse_quantity("10")}]
    assert q.sharers_that_fit(consumed, published, already) == {"memory": 0, "compute": 3}
    assert q.sharers_that_fit({"memory": q.parse_quantity("6Gi")}, published)["compute"] is None


def test_a_request_that_consumes_nothing_is_refused_by_the_count() -> None:
    caps = device(memory={"value": "24Gi"})
    with pytest.raises(ValueError, match="unbounded"):
        caps.sharers_that_fit({"memory": 0})


# ---- the profile's shareRequests ------------------------------------------------------------------


def _profile_data(**extra: object) -> dict:
    data = yaml.safe_load((PROFILE_DIR / "reference.yaml").read_text())
    data.update(extra)
    return data


def test_default_profile_asks_for_memory_only() -> None:
    assert load_profile("reference").share_requests == {"memory": "share"}
    data = _profile_data(capacity="memory")
    data.pop("shareRequests", None)
    assert parse_profile(data).share_requests == {"memory": "share"}


def test_dra_example_profile_asks_for_compute_in_proportion() -> None:
    assert load_profile("dra-example").share_requests == {"memory": "share", "compute": "proportional"}


def test_share_requests_are_normalised() -> None:
    p = parse_profile(_profile_data(shareRequests={"gpu.sharing.example.dev/compute": 50, "cores": "1.5k"}))
    assert p.share_requests == {"compute": "50", "cores": "1500", "memory": "share"}


@pytest.mark.parametrize(
    ("requests", "needle"),
    [
        ({"compute": "half"}, "'shareRequests.compute' is 'half', which is neither share, proportional nor"),
        ({"compute": True}, "'shareRequests.compute' is True; use share, proportional or a quantity"),
        ({"compute": "-5"}, "'shareRequests.compute' is '-5'; a sharer must ask for a positive amount"),
        ({"memory": "proportional"}, "'shareRequests.memory' is 'proportional', but 'memory' is the shared"),
        ({"Com pute": "share"}, "'shareRequests' key 'Com pute' is not a DRA capacity name"),
        ({"Bad_Domain/compute": "share"}, "'shareRequests' key 'Bad_Domain/compute' is not a DRA capacity"),
        ({"compute": "share", "gpu.sharing.example.dev/compute": "50"}, "names capacity 'compute' twice"),
        ({}, "'shareRequests' is empty"),
        (["compute"], "'shareRequests' must be a non-empty dict"),
    ],
)
def test_bad_share_requests_are_rejected_naming_the_field(requests: object, needle: str) -> None:
    with pytest.raises(ProfileError, match=r"driver profile x\.yaml: ") as err:
        parse_profile(_profile_data(shareRequests=requests), "x.yaml")
    assert needle in str(err.value)


def test_preflight_names_a_share_request_the_driver_does_not_publish() -> None:
    data = _profile_data(shareRequests={"memory": "share", "cores": "proportional"})
    profile = parse_profile(data, "p.yaml")
    gpu = Gpu(
        node="n",
        pool="n",
        slice_name="s",
        device="gpu-0",
        identity="u",
        product="p",
        attributes={},
        capacity=None,
        shareable=True,
        capacities=device(memory={"value": "24Gi"}),
    )
    problem = share_request_problem(profile, [gpu])
    assert problem == (
        "driver profile p.yaml: 'shareRequests.cores' names a capacity that no device of "
        "driver gpu.sharing.example.dev publishes (published: memory); fix the name or "
        "remove it."
    )
    assert share_request_problem(load_profile("reference"), [gpu]) is None
    assert PreflightResult(gpus=[gpu], share_capacities=("memory", "cores")).shareable_gpus == []


def _suite(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "conformance/scenarios",
            "-q",
            "-p",
            "no:cacheprovider",
            "--cluster=sim",
            f"--report-dir={tmp_path / 'r'}",
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_unknown_share_request_stops_the_run_with_exit_4(tmp_path: Path) -> None:
    bad = tmp_path / "cores.yaml"
    bad.write_text(yaml.safe_dump(_profile_data(shareRequests={"memory": "share", "cores": "proportional"})))
    proc = _suite(tmp_path, "--nodes=node-1", f"--driver-profile={bad}", "-m", "sharing")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 4, out[-3000:]
    assert "'shareRequests.cores' names a capacity that no device of driver" in out, out[-3000:]


def test_bad_share_request_value_stops_at_profile_load_with_exit_4(tmp_path: Path) -> None:
    bad = tmp_path / "half.yaml"
    bad.write_text(yaml.safe_dump(_profile_data(shareRequests={"compute": "half"})))
    proc = _suite(tmp_path, f"--driver-profile={bad}")
    assert proc.returncode == 4 and "'shareRequests.compute' is 'half'" in proc.stdout + proc.stderr


def test_report_lists_every_capacity_and_policy_of_each_device() -> None:
    gpu = Gpu(
        node="node-1",
        pool="node-1",
        slice_name="s",
        device="gpu-0",
        identity="u",
        product="p",
        attributes={},
        capacity=None,
        shareable=True,
        capacities=device(**DRA_EXAMPLE),
    )
    meta = {"capacities": capacities_by_device([gpu]), "share_requests": {"memory": "share"}}
    assert meta["capacities"]["node-1/gpu-0"]["compute"]["published"] == DRA_EXAMPLE["compute"]
    text = report_mod.render_markdown(report_mod.build(meta, [], []))
    assert "| node-1/gpu-0 | compute | 100, default 100, range 1..100 step 1 |" in text
    assert "| node-1/gpu-0 | memory | 80Gi, default 80Gi, range 1Gi..80Gi step 1Gi |" in text
    assert "A sharer asks for: memory: share" in text
