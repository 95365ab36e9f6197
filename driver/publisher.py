"""Publish this node's ResourceSlices through the official client, check that the server kept every
field, and put them back when something (the kubelet wiping an unreachable driver's slices) removes them."""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from drakit.quantity import QuantityError, parse_bytes
from driver.inventory import GpuInfo
from driver.kube import body
from driver.slices import PublishSettings, build_slices

log = logging.getLogger(__name__)

GATE = "DRAConsumableCapacity"


class DroppedFieldsError(RuntimeError):
    """The API server accepted a slice but did not store some fields: a feature gate is off."""


def dropped_paths(want: Any, got: Any, path: str = "") -> list[str]:
    """Paths present in `want` but missing or different in `got`. Quantities compare by value, because
    the server may print them differently ("1024Mi" is stored as "1Gi")."""
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return [path or "."]
        out: list[str] = []
        for key, value in want.items():
            sub = f"{path}.{key}" if path else key
            out += [sub] if key not in got else dropped_paths(value, got[key], sub)
        return out
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return [path]
        return [
            p
            for i, (w, g) in enumerate(zip(want, got, strict=True))
            for p in dropped_paths(w, g, f"{path}[{i}]")
        ]
    if want == got:
        return []
    if isinstance(want, str) and isinstance(got, str):
        try:
            if parse_bytes(want, path) == parse_bytes(got, path):
                return []
        except QuantityError:
            pass
    return [path]


def same(a: Any, b: Any) -> bool:
    """Equal up to how quantities are printed."""
    return not dropped_paths(a, b) and not dropped_paths(b, a)


def _gate_advice(paths: list[str]) -> str:
    gated = [p for p in paths if p.endswith("allowMultipleAllocations") or ".requestPolicy" in p]
    if not gated:
        return ""
    return (
        f" allowMultipleAllocations and requestPolicy need the {GATE} feature gate (alpha and off by "
        f"default in Kubernetes 1.34 and 1.35, beta and on from 1.36): enable {GATE}=true on "
        "kube-apiserver, kube-scheduler and kubelet, or run this driver with --sharing off."
    )


class SlicePublisher:
    def __init__(
        self,
        api: client.ApiClient,
        gpus: tuple[GpuInfo, ...] | list[GpuInfo],
        settings: PublishSettings,
        request_timeout: float = 10.0,
        on_fatal: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.resource = client.ResourceV1Api(api)
        self.gpus = list(gpus)
        self.settings = settings
        self.timeout = request_timeout
        self.generation = 0
        self.published: dict[str, dict[str, Any]] = {}  # slice name -> spec as the server stored it
        self._wanted: dict[str, dict[str, Any]] = {}  # slice name -> spec as we built it
        self._lock = threading.Lock()
        self._watch: watch.Watch | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.watch_error: BaseException | None = None
        self.on_fatal = on_fatal

    @property
    def field_selector(self) -> str:
        return f"spec.nodeName={self.settings.node_name},spec.driver={self.settings.driver_name}"

    def _is_ours(self, obj: dict[str, Any]) -> bool:
        spec = obj.get("spec") or {}
        return (
            spec.get("nodeName") == self.settings.node_name
            and spec.get("driver") == self.settings.driver_name
        )

    def list_own(self) -> tuple[list[dict[str, Any]], str]:
        data = body(
            self.resource.list_resource_slice(
                field_selector=self.field_selector, _preload_content=False, _request_timeout=self.timeout
            )
        )
        items = [o for o in data.get("items") or [] if self._is_ours(o)]
        return items, (data.get("metadata") or {}).get("resourceVersion", "")

    def _current(self, obj: dict[str, Any]) -> bool:
        """True when `obj` is exactly what the server stored from our last write."""
        stored = self.published.get(obj["metadata"]["name"])
        return stored is not None and same(stored, obj.get("spec"))

    def _unchanged(self, desired: list[dict[str, Any]], existing: dict[str, dict[str, Any]]) -> bool:
        if set(existing) != {d["metadata"]["name"] for d in desired}:
            return False
        for d in desired:
            name, got = d["metadata"]["name"], existing[d["metadata"]["name"]].get("spec")
            if name in self.published:
                # Compared with what the server stored, so fields it defaults never look like a change.
                if not (same(got, self.published[name]) and same(d["spec"], self._wanted[name])):
                    return False
            elif not same(got, d["spec"]):  # a predecessor's slice we could adopt
                return False
        return True

    # -- publishing ------------------------------------------------------------------------------------

    def publish(self) -> bool:
        """Make the server hold exactly the desired slices; True when anything was written.
        Raises DroppedFieldsError (after removing what it wrote) when the server dropped fields."""
        with self._lock:
            existing, _ = self.list_own()
            by_name = {o["metadata"]["name"]: o for o in existing}
            seen = {int(((o.get("spec") or {}).get("pool") or {}).get("generation", 0)) for o in existing}
            # A restarted driver adopts identical slices of its predecessor instead of rewriting them.
            current = self.generation or (min(seen) if len(seen) == 1 else 1)
            desired = build_slices(self.gpus, self.settings, current)
            if self._unchanged(desired, by_name):
                if not self.published:
                    log.info(
                        "adopted %d existing ResourceSlice(s) of pool %s, generation %d",
                        len(desired),
                        self.settings.node_name,
                        current,
                    )
                self.generation = current
                self.published = {name: copy.deepcopy(o["spec"]) for name, o in by_name.items()}
                self._wanted = {d["metadata"]["name"]: d["spec"] for d in desired}
                return False
            # Any change is a new pool generation, so the scheduler never mixes old and new slices.
            self.generation = max([self.generation, *seen]) + 1
            desired = build_slices(self.gpus, self.settings, self.generation)
            written: dict[str, dict[str, Any]] = {}
            try:
                for want in desired:
                    name = want["metadata"]["name"]
                    stored = self._write(want, by_name.get(name))
                    written[name] = stored.get("spec") or {}
                    # The write's response is the object as stored (after defaulting and gate dropping).
                    missing = dropped_paths(want["spec"], stored.get("spec"))
                    if missing:
                        raise DroppedFieldsError(
                            f"the API server dropped fields from ResourceSlice {name}: "
                            f"{', '.join('spec.' + p for p in missing)}.{_gate_advice(missing)}"
                        )
            except DroppedFieldsError:
                for name in written:
                    self._delete(name)
                self.published, self._wanted = {}, {}
                raise
            for name in set(by_name) - set(written):
                self._delete(name)
            self.published = written
            self._wanted = {d["metadata"]["name"]: d["spec"] for d in desired}
            log.info(
                "published %d GPU(s) in %d ResourceSlice(s) for pool %s, generation %d (sharing %s, "
                "memory policy %s)",
                len(self.gpus),
                len(desired),
                self.settings.node_name,
                self.generation,
                "on" if self.settings.sharing else "off",
                self.settings.memory_policy,
            )
            return True

    def _write(self, want: dict[str, Any], existing: dict[str, Any] | None) -> dict[str, Any]:
        if existing is None:
            return body(
                self.resource.create_resource_slice(
                    # The client's signature asks for a V1ResourceSlice; it sends a dict body as is.
                    want,  # type: ignore[arg-type]
                    _preload_content=False,
                    _request_timeout=self.timeout,
                )
            )
        update = copy.deepcopy(want)
        update["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
        return body(
            self.resource.replace_resource_slice(
                want["metadata"]["name"],
                update,  # type: ignore[arg-type]  # a dict body, sent as is (see above)
                _preload_content=False,
                _request_timeout=self.timeout,
            )
        )

    def _delete(self, name: str) -> None:
        try:
            self.resource.delete_resource_slice(name, _preload_content=False, _request_timeout=self.timeout)
        except ApiException as err:
            if err.status != 404:
                raise

    def remove_all(self) -> int:
        with self._lock:
            existing, _ = self.list_own()
            for obj in existing:
                self._delete(obj["metadata"]["name"])
            self.published, self._wanted = {}, {}
            log.info("removed %d ResourceSlice(s) of pool %s", len(existing), self.settings.node_name)
            return len(existing)

    # -- keeping them published ------------------------------------------------------------------------

    def start_watching(self) -> None:
        self._thread = threading.Thread(target=self._watch_loop, name="slice-watch", daemon=True)
        self._thread.start()

    def stop_watching(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is None:
            return
        deadline = time.monotonic() + timeout
        while self._thread.is_alive():
            # Watch.stop() shuts the socket down, so a blocked read returns now. The watcher may be between
            # two watches (no socket yet), hence stop again until the thread is gone.
            w = self._watch
            if w is not None:
                w.stop()
            self._thread.join(0.1)
            if time.monotonic() > deadline:
                log.warning("slice watch did not stop within %.0fs", timeout)
                return

    def _watch_loop(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                self._watch_once()
                backoff = 0.1
            except DroppedFieldsError as err:
                self.watch_error = err
                log.error("%s", err)
                if self.on_fatal is not None:
                    self.on_fatal(err)
                return
            except Exception as err:
                if self._stop.is_set():
                    return
                log.warning("slice watch failed (%s); retrying in %.1fs", err, backoff)
                # Waits on the stop signal, so shutdown is not delayed by the retry pause.
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _watch_once(self) -> None:
        # Watch from a list that shows the slices as published, so no wipe falls between list and watch.
        while True:
            items, resource_version = self.list_own()
            names = {o["metadata"]["name"] for o in items}
            if names == set(self.published) and all(self._current(o) for o in items):
                break
            log.info(
                "ResourceSlices of pool %s differ from what was published; republishing",
                self.settings.node_name,
            )
            self.publish()
        w = watch.Watch()
        self._watch = w
        try:
            for event in w.stream(
                self.resource.list_resource_slice,
                field_selector=self.field_selector,
                resource_version=resource_version,
                timeout_seconds=300,
                deserialize=False,
            ):
                if self._stop.is_set():
                    return
                obj = event.get("raw_object") or event.get("object") or {}
                if event.get("type") not in {"ADDED", "MODIFIED", "DELETED"} or not self._is_ours(obj):
                    continue
                name = obj["metadata"]["name"]
                gone = event["type"] == "DELETED" and name in self.published
                if gone or (event["type"] != "DELETED" and not self._current(obj)):
                    log.info(
                        "ResourceSlice %s was %s by someone else; republishing",
                        name,
                        "deleted" if gone else "changed",
                    )
                    self.publish()
        finally:
            self._watch = None
            w.stop()
