"""Keeps its own tally of memory handed out per GPU and refuses a claim that would exceed it, but never
subtracts on unprepare: released capacity can never be reused."""

import sys
import threading

import driver.claims
import driver.state
from driver.__main__ import main
from driver.claims import ClaimError

_original_plan = driver.claims.plan_claim
_tally: dict[str, int] = {}
_lock = threading.Lock()


def plan_claim(ref, claim, driver_name, node_name, gpus, real_gpu):
    planned = _original_plan(ref, claim, driver_name, node_name, gpus, real_gpu)
    with _lock:
        for entry in planned:
            gpu = gpus[entry["device"]]
            key = f"GPU_DEVICE_{gpu.index}_MEMORY="
            granted = next(int(e.removeprefix(key)) for e in entry["env"] if e.startswith(key))
            used = _tally.get(gpu.device_name, 0)
            if used + granted > gpu.memory_bytes:
                raise ClaimError(f"{ref}: {gpu.device_name} has no memory left ({used} bytes handed out)")
            _tally[gpu.device_name] = _tally.get(gpu.device_name, 0) + granted
    return planned


driver.claims.plan_claim = plan_claim
driver.state.plan_claim = plan_claim  # state imported it by name

if __name__ == "__main__":
    sys.exit(main())
