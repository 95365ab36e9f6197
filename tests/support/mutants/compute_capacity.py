"""Publishes a second consumable capacity, ``compute`` (100 units, min/step 1, **default 100**), the way
kubernetes-sigs/dra-example-driver does with --gpu-allow-multiple-allocations. A claim that asks only
for memory then also takes all of the compute, so memory-only sharers cannot share the GPU. The
container is told its compute grant in GPU_DEVICE_<i>_COMPUTE (from consumedCapacity.compute).

Under the default profile (sharers ask for memory only) the suite must fail sharing and say that
compute defaults to the whole device; under tests/profiles/compute-proportional.yaml (sharers ask for
compute in proportion) it must pass."""

import sys
from typing import Any

import driver.claims
import driver.slices
import driver.state
from driver.__main__ import main

COMPUTE = 100
COMPUTE_CAPACITY = {
    "value": str(COMPUTE),
    "requestPolicy": {"default": str(COMPUTE), "validRange": {"min": "1", "step": "1", "max": str(COMPUTE)}},
}

_original_entry = driver.slices.device_entry
_original_plan = driver.claims.plan_claim


def device_entry(gpu, settings):
    device = _original_entry(gpu, settings)
    device["capacity"]["compute"] = dict(COMPUTE_CAPACITY)
    return device


def granted_compute(result: dict[str, Any]) -> int:
    """No consumedCapacity.compute means an exclusive allocation: the whole GPU's compute."""
    consumed = (result.get("consumedCapacity") or {}).get("compute")
    return COMPUTE if consumed is None else int(consumed)


def plan_claim(ref, claim, driver_name, node_name, gpus, real_gpu):
    planned = _original_plan(ref, claim, driver_name, node_name, gpus, real_gpu)
    results = ((claim.get("status") or {}).get("allocation") or {}).get("devices", {}).get("results") or []
    for entry in planned:
        for result in results:
            if (
                result.get("driver") == driver_name
                and result.get("device") == entry["device"]
                and (result.get("shareID") or None) == entry["shareID"]
            ):
                index = entry["device"].rsplit("-", 1)[1]
                entry["env"].append(f"GPU_DEVICE_{index}_COMPUTE={granted_compute(result)}")
                break
    return planned


driver.slices.device_entry = device_entry
driver.claims.plan_claim = plan_claim
driver.state.plan_claim = plan_claim  # state imported it by name

if __name__ == "__main__":
    sys.exit(main())
