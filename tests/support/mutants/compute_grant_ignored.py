"""Publishes ``compute`` like compute_capacity, but reads only the memory key of the allocation's
consumedCapacity: the compute key is dropped before planning, so the container is told it has the
whole GPU's compute (GPU_DEVICE_<i>_COMPUTE=100) whatever the scheduler granted.

consumedCapacity is written by the scheduler, not the driver, so "omits the second key" is observable
on the node only: in what the driver hands the container. The visibility capability catches it when
the profile's env names {granted_compute}."""

import copy
import sys

import driver.claims
import driver.state
import tests.support.mutants.compute_capacity as compute
from driver.__main__ import main

_with_compute = compute.plan_claim


def plan_claim(ref, claim, driver_name, node_name, gpus, real_gpu):
    claim = copy.deepcopy(claim)
    for result in ((claim or {}).get("status") or {}).get("allocation", {}).get("devices", {}).get(
        "results"
    ) or []:
        (result.get("consumedCapacity") or {}).pop("compute", None)
    return _with_compute(ref, claim, driver_name, node_name, gpus, real_gpu)


driver.claims.plan_claim = plan_claim
driver.state.plan_claim = plan_claim

if __name__ == "__main__":
    sys.exit(main())
