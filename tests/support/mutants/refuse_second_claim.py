"""Refuses to prepare a claim on a GPU that another prepared claim already uses.

This is what NVIDIA's driver does since v25.12 (validateNoOverlappingPreparedDevices): a one-line
fork that only flips allowMultipleAllocations schedules sharers that then never start.
"""

import sys
import threading

from driver.__main__ import main
from driver.claims import ClaimError
from driver.state import DeviceState, PrepareResult

_original_prepare = DeviceState.prepare
# Two pods' prepares may arrive at once (gRPC serves them on a thread pool, and a kubelet prepares pods in
# parallel): the check and the prepare are one step, as NVIDIA's driver holds its lock across both.
_lock = threading.Lock()


def prepare(self, refs):
    with _lock:
        return _prepare(self, refs)


def _prepare(self, refs):
    in_use = {d["device"]: uid for uid, c in self.prepared_claims().items() for d in c["devices"]}
    results, allowed = {}, []
    for ref in refs:
        if ref.uid in self.prepared_claims():
            allowed.append(ref)
            continue
        claim = self.read_claim(ref.namespace, ref.name)
        allocation = ((claim or {}).get("status") or {}).get("allocation") or {}
        results_ = allocation.get("devices", {}).get("results", [])
        mine = [r for r in results_ if r.get("driver") == self.driver_name]
        clash = [r["device"] for r in mine if r["device"] in in_use]
        if clash:
            err = ClaimError(
                f"requested device {clash[0]} is already allocated to different claim {in_use[clash[0]]}"
            )
            results[ref.uid] = PrepareResult(error=str(err))
        else:
            allowed.append(ref)
    if allowed:
        results.update(_original_prepare(self, allowed))
    return results


DeviceState.prepare = prepare

if __name__ == "__main__":
    sys.exit(main())
