"""Tells the container about the wrong GPU: the env names another GPU's UUID."""

import sys

import driver.claims
import driver.state
from driver.__main__ import main

_original_plan = driver.claims.plan_claim


def plan_claim(ref, claim, driver_name, node_name, gpus, real_gpu):
    planned = _original_plan(ref, claim, driver_name, node_name, gpus, real_gpu)
    by_index = sorted(gpus.values(), key=lambda g: g.index)
    for entry in planned:
        gpu = gpus[entry["device"]]
        other = by_index[(by_index.index(gpu) + 1) % len(by_index)]
        entry["env"] = [e.replace(f"={gpu.uuid}", f"={other.uuid}") for e in entry["env"]]
    return planned


driver.claims.plan_claim = plan_claim
driver.state.plan_claim = plan_claim  # state imported it by name

if __name__ == "__main__":
    sys.exit(main())
