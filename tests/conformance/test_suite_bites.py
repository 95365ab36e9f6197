"""Proof that the suite bites: on sim, each deliberately broken driver fails the capability it breaks,
with a reason; the reference driver passes every capability.

Each run selects only the capabilities it needs (-m/-k) to fit the time budget; the assertion is
always "this capability failed, with this reason" read from report.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from tests.support.suite import assert_fails_for
from tests.support.suite import run_suite as support_run_suite

REPO = Path(__file__).resolve().parents[2]
FAST = ["--wait-timeout=6", "--settle-seconds=0.5"]


def run_suite(tmp_path: Path, *args: str, timeout: float = 120) -> tuple[dict, str, float]:
    run = support_run_suite(tmp_path, "--cluster=sim", *args, timeout=timeout)
    assert run.report, f"no report.json (exit {run.code}):\n{run.output[-3000:]}"
    return run.report, run.output, run.wall


def mutant(name: str) -> str:
    return f"--sim-driver-command={sys.executable} -m tests.support.mutants.{name}"


# Stands for the reference profile with sim.republishTimeout 6 (the bound of the republish wait).
REPUBLISH_6S = "--driver-profile=<reference, republishTimeout 6>"


def republish_6s_profile(tmp_path: Path) -> str:
    data = yaml.safe_load((REPO / "conformance/data/drivers/reference.yaml").read_text())
    data["sim"]["republishTimeout"] = 6
    path = tmp_path / "reference-republish-6s.yaml"
    path.write_text(yaml.safe_dump(data))
    return f"--driver-profile={path}"


# A profile whose sharers ask for memory and, in proportion, the compute capacity of the mutants
# compute_capacity and compute_grant_ignored (and tell the container both grants).
COMPUTE_PROFILE = f"--driver-profile={REPO / 'tests' / 'profiles' / 'compute-proportional.yaml'}"

# (id, extra args, capability that must fail, words its reason must contain; "|" separates alternatives)
MUTANTS = [
    (
        "no-allow-multiple-allocations",
        [mutant("no_allow_multiple"), "-m", "publish"],
        "publish",
        "without allowMultipleAllocations: true",
    ),
    (
        "memory-published-twice",
        [mutant("double_memory"), "-m", "publish"],
        "publish",
        "publishes 48Gi but has 24Gi",
    ),
    (
        "gate-off-in-apiserver",
        ["--sim-feature-gates=DRAConsumableCapacity=false", "-m", "publish"],
        "publish",
        "DRAConsumableCapacity feature gate is off in kube-apiserver",
    ),
    (
        "prepare-refuses-second-claim",
        [mutant("refuse_second_claim"), "-m", "sharing"],
        "sharing",
        # at the first FailedPrepareDynamicResources event, in the driver's words (not a wait timeout)
        "was allocated gpu-0 (share 6Gi) but the driver refused to prepare it: requested device gpu-0 is "
        "already allocated to different claim ",
    ),
    (
        "cdi-env-names-wrong-gpu",
        [mutant("wrong_gpu_env"), "-m", "visibility"],
        "visibility",
        "sees the wrong GPU view",
    ),
    (
        "cdi-id-reused-for-two-shares",
        [mutant("reused_cdi_id"), "-m", "sharing"],
        "sharing",
        "CDI device ids defined by more than one spec",
    ),
    (
        "no-republish-after-wipe",
        [mutant("no_republish"), REPUBLISH_6S, "-m", "lifecycle", "-k", "slices_come_back"],
        "lifecycle",
        "gave up after 6s waiting for driver gpu.sharing.example.dev to republish",
    ),
    (
        "unprepare-leaves-cdi-spec",
        [mutant("unprepare_keeps_cdi"), "-m", "lifecycle", "-k", "cdi_spec"],
        "lifecycle",
        "CDI spec(s) of deleted claim",
    ),
    # one per further capability
    (
        "default-is-not-the-whole-gpu",
        [mutant("small_default"), "-m", "exclusivity", "-k", "without_capacity"],
        "exclusivity",
        "it does not get the whole GPU",
    ),
    (
        "gpu-published-twice",
        [mutant("duplicate_gpu"), "-m", "overcapacity", "-k", "beyond_capacity"],
        "overcapacity",
        "but had to be rejected",
    ),
    (
        "released-memory-never-reused",
        [mutant("leaky_accounting"), "-m", "release"],
        "release",
        "no memory left",
    ),
    (
        "container-told-the-unrounded-request",
        [mutant("grants_requested"), "-m", "rounding", "-k", "off_step"],
        "rounding",
        "but sees GPU_DEVICE_",
    ),
    (
        "second-capacity-defaults-to-the-whole-gpu",
        [mutant("compute_capacity"), "-m", "sharing"],
        "sharing",
        "the first sharer consumed compute 100 of 100 (compute has no request in the sharer's claim and "
        "defaults to the whole device); declare shareRequests.compute",
    ),
    (
        "second-capacity-grant-not-given-to-the-container",
        [mutant("compute_grant_ignored"), COMPUTE_PROFILE, "-m", "visibility"],
        "visibility",
        "_COMPUTE='100' (allocated: '25')",
    ),
    (
        "product-in-a-foreign-domain",
        [mutant("product_in_foreign_domain"), "-m", "selectors", "-k", "product_selector"],
        "selectors",
        "to be Running",
    ),
]


@pytest.mark.parametrize(
    ("args", "capability", "reason"), [m[1:] for m in MUTANTS], ids=[m[0] for m in MUTANTS]
)
def test_broken_driver_fails_the_capability_it_breaks(
    tmp_path: Path, args: list[str], capability: str, reason: str
) -> None:
    args = [republish_6s_profile(tmp_path) if a == REPUBLISH_6S else a for a in args]
    report, output, _ = run_suite(tmp_path, "--nodes=node-1", *FAST, *args)
    assert_fails_for(report, output, capability, reason)
    assert report["simulated"] is True and report["verdict"] == "fail"
    failure = next(f for f in report["failures"] if f["capability"] == capability)
    assert "resourceslices" in failure["diagnostics"] and any(
        k.startswith("driver log") for k in failure["diagnostics"]
    ), "every failure must carry diagnostics"


def test_second_capacity_shares_when_the_profile_asks_for_it(tmp_path: Path) -> None:
    # The same driver that fails sharing under memory-only sharers passes once they ask for compute.
    report, output, _ = run_suite(
        tmp_path,
        "--nodes=node-1",
        *FAST,
        mutant("compute_capacity"),
        COMPUTE_PROFILE,
        "-m",
        "sharing or release or visibility",
    )
    caps = report["capabilities"]
    assert {c: v["verdict"] for c, v in caps.items()} == {
        "sharing": "pass",
        "release": "pass",
        "visibility": "pass",
    }, output[-3000:]
    assert report["verdict"] == "pass"
    published = report["capacities"]["node-1/gpu-0"]
    assert published["compute"]["summary"] == "100, default 100, range 1..100 step 1"
    assert published["compute"]["published"]["requestPolicy"]["default"] == "100"
    assert report["share_requests"] == {"memory": "share", "compute": "proportional"}


def test_reference_driver_passes_every_capability(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    # mixed: an RTX 3090 and an RTX 3060 per node, so selectors must choose and the seed's 24Gi-on-3060
    # case runs.
    report, output, wall = run_suite(
        tmp_path, "--nodes=node-1,node-2", "--gpus=mixed", f"--junitxml={junit}", timeout=180
    )
    caps = report["capabilities"]
    expected = {
        "publish",
        "sharing",
        "exclusivity",
        "overcapacity",
        "release",
        "rounding",
        "selectors",
        "visibility",
        "lifecycle",
        "enforcement",
    }
    assert set(caps) == expected, output[-3000:]
    failed = {c: v["reason"] for c, v in caps.items() if v["verdict"] != "pass" and c != "enforcement"}
    assert not failed, f"{failed}\n{output[-3000:]}"
    # The reference driver does not claim enforcement (mock GPUs): reported as skipped, with why.
    assert caps["enforcement"]["verdict"] == "skipped" and "does not claim" in caps["enforcement"]["reason"]
    assert len(report["rejections"]) == 8, "every rejection check must run and record its timing"
    assert report["verdict"] == "pass" and report["simulated"] is True
    assert 'property name="capability" value="overcapacity"' in junit.read_text()
    print(f"full sim run: {wall:.1f}s wall (suite's own figure {report['wall_seconds']}s)")


DEVICE_NODES_PROFILE = "--driver-profile=tests/profiles/reference-device-nodes.yaml"


@pytest.mark.parametrize(
    ("variant", "outcome", "reason"),
    [
        ("device_nodes", "passed", ""),
        ("device_nodes_leak", "failed", "but also sees the device node(s) /dev/nvidia"),
    ],
    ids=["own-device-node-only", "every-gpus-device-node-leaks"],
)
def test_a_sharer_sees_its_own_gpu_device_node_and_no_other(
    tmp_path: Path, variant: str, outcome: str, reason: str
) -> None:
    # The variants' CDI specs name /dev/nvidia<index> nodes (files standing in for them); the sim
    # kubelet applies them in each container's private mount namespace, or says why it cannot.
    from sim.kubelet.mountns import host_unavailable_reason

    report, output, _ = run_suite(
        tmp_path,
        "--nodes=node-1",
        *FAST,
        DEVICE_NODES_PROFILE,
        mutant(variant),
        "-m",
        "visibility",
        "-k",
        "own_device_nodes",
    )
    (check,) = report["capabilities"]["visibility"]["checks"]
    cannot = host_unavailable_reason()
    if cannot:
        assert (check["outcome"], check["reason"]) == ("skipped", cannot), output[-3000:]
        pytest.skip(cannot)
    assert check["outcome"] == outcome, f"{check}\n{output[-3000:]}"
    assert reason in check["reason"], check["reason"]
