"""Tells the container the memory its claim asked for instead of what the scheduler granted (the
requestPolicy-rounded consumedCapacity)."""

import sys

import driver.claims
import driver.state
from drakit.quantity import parse_bytes
from driver.__main__ import main

_original_plan = driver.claims.plan_claim


def plan_claim(ref, claim, driver_name, node_name, gpus, real_gpu):
    planned = _original_plan(ref, claim, driver_name, node_name, gpus, real_gpu)
    asked = {}
    for req in claim["spec"]["devices"]["requests"]:
        memory = ((req.get("exactly") or {}).get("capacity") or {}).get("requests", {}).get("memory")
        if memory is not None:
            asked[req["name"]] = parse_bytes(memory, "memory")
    for entry in planned:
        amount = asked.get(entry["requests"][0])
        if amount is None:
            continue
        key = f"GPU_DEVICE_{entry['device'].rsplit('-', 1)[1]}_MEMORY="
        entry["env"] = [f"{key}{amount}" if e.startswith(key) else e for e in entry["env"]]
    return planned


driver.claims.plan_claim = plan_claim
driver.state.plan_claim = plan_claim  # state imported it by name

if __name__ == "__main__":
    sys.exit(main())
