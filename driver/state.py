"""Prepare and unprepare: the node-side state of this driver (CDI specs on disk, the checkpoint).

Crash safety comes from one ordering rule, so a restart can always reconcile:
- prepare writes the claim's CDI spec first, then records the claim in the checkpoint;
- unprepare drops the claim from the checkpoint first, then deletes the CDI spec.
So after any crash a CDI spec without a checkpoint entry is a leftover to delete, and a checkpoint entry
without its spec is rewritten from the entry (the checkpoint holds every container edit).

Without a checkpoint (first start, or one moved aside after damage) the checkpoint is rebuilt from the API
before anything is cleaned: every claim allocated on this node by this driver and reserved by pods is
prepared state the kubelet relies on (it never prepares a running pod's claim again), so its entry is
planned from the claim and saved, and only then are specs of other claims removed.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from driver import cdi
from driver.checkpoint import PREPARE_COMPLETED, Checkpoint
from driver.claims import ClaimError, ClaimRef, plan_claim
from driver.inventory import Inventory

log = logging.getLogger(__name__)

ClaimReader = Callable[[str, str], "dict[str, Any] | None"]
ClaimLister = Callable[[], "list[dict[str, Any]]"]  # every ResourceClaim in the cluster, as served


@dataclass
class _ClaimLock:
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0


@dataclass
class PrepareResult:
    devices: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""


class DeviceState:
    def __init__(
        self,
        *,
        driver_name: str,
        node_name: str,
        inventory: Inventory,
        cdi_dir: Path,
        state_dir: Path,
        read_claim: ClaimReader,
        list_claims: ClaimLister,
    ) -> None:
        self.driver_name = driver_name
        self.node_name = node_name
        self.inventory = inventory
        self.gpus = inventory.by_device_name()
        self.cdi_dir = cdi_dir
        self.checkpoint = Checkpoint(state_dir)
        self.read_claim = read_claim
        self.list_claims = list_claims
        self._unplannable: set[str] = set()  # reserved claims of ours a rebuild could not plan
        self._claims: dict[str, dict[str, Any]] = {}
        self._save_lock = threading.Lock()  # guards _claims and the checkpoint file
        self._locks_lock = threading.Lock()
        self._claim_locks: dict[str, _ClaimLock] = {}

    # -- start-up ---------------------------------------------------------------------------------------

    def restore(self) -> None:
        """Load the checkpoint (or rebuild it from the API when there is none) and make the CDI dir
        agree with it (see the module docstring). Raises CheckpointError for a damaged checkpoint and
        whatever list_claims raises when the API cannot be read; in both cases nothing is removed."""
        self.cdi_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoint.path.parent.mkdir(parents=True, exist_ok=True)
        rebuilt = not self.checkpoint.exists()
        claims = self._rebuild() if rebuilt else self.checkpoint.load()
        for tmp in [*cdi.list_temp_files(self.cdi_dir, self.driver_name), self.checkpoint.temp_path]:
            # Half-written files of an interrupted atomic write; the real file was never replaced.
            tmp.unlink(missing_ok=True)
        on_disk = cdi.list_spec_claims(self.cdi_dir, self.driver_name)
        for uid in sorted(on_disk - set(claims) - self._unplannable):
            cdi.remove_spec(self.cdi_dir, self.driver_name, uid)
            log.info(
                "removed leftover CDI spec of claim %s (%s)",
                uid,
                "no pod on this node reserves it" if rebuilt else "not in the checkpoint",
            )
        for uid, entry in sorted(claims.items()):
            if uid not in on_disk:
                self._write_spec(uid, entry["devices"])
                log.info(
                    "rewrote missing CDI spec of prepared claim %s/%s", entry["namespace"], entry["name"]
                )
        self._claims = claims
        if not rebuilt:
            log.info("restored %d prepared claim(s) from %s", len(claims), self.checkpoint.path)

    def _rebuild(self) -> dict[str, dict[str, Any]]:
        """The checkpoint as it should be, from the API, saved before anything else happens."""
        claims: dict[str, dict[str, Any]] = {}
        for claim in self.list_claims():
            meta = claim.get("metadata") or {}
            status = claim.get("status") or {}
            results = ((status.get("allocation") or {}).get("devices") or {}).get("results") or []
            ours = any(
                r.get("driver") == self.driver_name and r.get("pool") == self.node_name for r in results
            )
            if not ours or not status.get("reservedFor"):
                continue
            ref = ClaimRef(meta.get("namespace", ""), meta.get("uid", ""), meta.get("name", ""))
            try:
                devices = plan_claim(
                    ref, claim, self.driver_name, self.node_name, self.gpus, self.inventory.real
                )
            except ClaimError as err:  # not preparable here now (inventory changed?): keep its spec as is
                log.warning("not rebuilding %s, keeping its CDI spec if any: %s", ref, err)
                self._unplannable.add(ref.uid)
                continue
            claims[ref.uid] = {
                "namespace": ref.namespace,
                "name": ref.name,
                "state": PREPARE_COMPLETED,
                "devices": devices,
            }
        self.checkpoint.save(claims)
        log.info(
            "no checkpoint at %s: rebuilt %d prepared claim(s) from the API (allocated on node %s "
            "by %s and reserved by pods)",
            self.checkpoint.path,
            len(claims),
            self.node_name,
            self.driver_name,
        )
        return claims

    def prepared_claims(self) -> dict[str, dict[str, Any]]:
        with self._save_lock:
            return copy.deepcopy(self._claims)

    def prepared_count(self) -> int:
        with self._save_lock:
            return len(self._claims)

    # -- helpers ----------------------------------------------------------------------------------------

    @contextmanager
    def _holding(self, uids: Iterable[str]) -> Iterator[None]:
        """Hold the lock of every claim in `uids`. Locks are taken in sorted order, so two batches that
        share claims cannot deadlock, and dropped when unused, so the table does not grow forever."""
        keys = sorted(set(uids))
        with self._locks_lock:
            entries = [self._claim_locks.setdefault(uid, _ClaimLock()) for uid in keys]
            for entry in entries:
                entry.users += 1
        held: list[_ClaimLock] = []
        try:
            for entry in entries:
                entry.lock.acquire()
                held.append(entry)
            yield
        finally:
            for entry in reversed(held):
                entry.lock.release()
            with self._locks_lock:
                for uid, entry in zip(keys, entries, strict=True):
                    entry.users -= 1
                    if entry.users == 0:
                        del self._claim_locks[uid]

    def _write_spec(self, uid: str, devices: list[dict[str, Any]]) -> None:
        spec = cdi.build_spec(self.driver_name, [{"name": d["cdiName"], "env": d["env"]} for d in devices])
        cdi.write_spec(self.cdi_dir, self.driver_name, uid, spec)

    def _response_devices(self, devices: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {
                "request_names": list(d["requests"]),
                "pool_name": d["pool"],
                "device_name": d["device"],
                "cdi_device_ids": [cdi.qualified_id(self.driver_name, d["cdiName"])],
                "share_id": d["shareID"],
            }
            for d in devices
        ]

    # -- prepare / unprepare ----------------------------------------------------------------------------

    def prepare(self, refs: list[ClaimRef]) -> dict[str, PrepareResult]:
        results: dict[str, PrepareResult] = {}
        with self._holding(r.uid for r in refs):
            fresh: dict[str, dict[str, Any]] = {}
            unique = list({r.uid: r for r in refs}.values())
            with self._save_lock:
                known = {r.uid: copy.deepcopy(self._claims[r.uid]) for r in unique if r.uid in self._claims}
            for ref in unique:
                if ref.uid in known:
                    results[ref.uid] = PrepareResult(self._response_devices(known[ref.uid]["devices"]))
                    continue
                try:
                    claim = self.read_claim(ref.namespace, ref.name)
                except Exception as err:  # a failed read is this claim's error, not the batch's
                    results[ref.uid] = PrepareResult(error=f"{ref}: reading the claim failed: {err}")
                    continue
                try:
                    devices = plan_claim(
                        ref, claim, self.driver_name, self.node_name, self.gpus, self.inventory.real
                    )
                    self._write_spec(ref.uid, devices)
                except ClaimError as err:
                    results[ref.uid] = PrepareResult(error=str(err))
                    continue
                except OSError as err:
                    with suppress(OSError):  # if this fails too, the next start removes the leftover
                        cdi.remove_spec(self.cdi_dir, self.driver_name, ref.uid)
                    results[ref.uid] = PrepareResult(error=f"{ref}: writing the CDI spec failed: {err}")
                    continue
                fresh[ref.uid] = {
                    "namespace": ref.namespace,
                    "name": ref.name,
                    "state": PREPARE_COMPLETED,
                    "devices": devices,
                }
            if fresh:
                try:
                    self._commit(add=fresh)
                except OSError as err:
                    for uid, entry in fresh.items():
                        with suppress(OSError):  # if this fails too, the next start removes the leftover
                            cdi.remove_spec(self.cdi_dir, self.driver_name, uid)
                        ref = ClaimRef(entry["namespace"], uid, entry["name"])
                        results[uid] = PrepareResult(error=f"{ref}: writing the checkpoint failed: {err}")
                    return results
                for uid, entry in fresh.items():
                    results[uid] = PrepareResult(self._response_devices(entry["devices"]))
                    log.info(
                        "prepared claim %s/%s: %s",
                        entry["namespace"],
                        entry["name"],
                        ", ".join(
                            f"{d['device']}" + (f" share {d['shareID']}" if d["shareID"] else "")
                            for d in entry["devices"]
                        ),
                    )
        return results

    def unprepare(self, refs: list[ClaimRef]) -> dict[str, str]:
        """Error text per claim UID ("" on success). Works from the checkpoint only."""
        errors: dict[str, str] = {}
        with self._holding(r.uid for r in refs):
            uids = [r.uid for r in {r.uid: r for r in refs}.values()]
            with self._save_lock:
                known = {uid: self._claims[uid] for uid in uids if uid in self._claims}
            try:
                if known:
                    self._commit(remove=list(known))
            except OSError as err:
                return {uid: f"claim {uid}: writing the checkpoint failed: {err}" for uid in uids}
            for uid in uids:
                try:
                    cdi.remove_spec(self.cdi_dir, self.driver_name, uid)
                    errors[uid] = ""
                except OSError as err:
                    # The checkpoint no longer lists it, so a restart deletes this spec as a leftover.
                    errors[uid] = f"claim {uid}: removing the CDI spec failed: {err}"
            for uid, entry in known.items():
                log.info("unprepared claim %s/%s (uid %s)", entry["namespace"], entry["name"], uid)
        return errors

    def _commit(self, add: dict[str, dict[str, Any]] | None = None, remove: Iterable[str] = ()) -> None:
        """Apply a change to the claim table and persist it; on a failed write memory stays unchanged."""
        with self._save_lock:
            claims = dict(self._claims)
            claims.update(add or {})
            for uid in remove:
                claims.pop(uid, None)
            self.checkpoint.save(claims)
            self._claims = claims
