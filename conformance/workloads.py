"""What a scenario creates (namespaces, claim templates, pods) and how it watches them.

Every object carries the run and scenario labels; everything a scenario created is deleted when it
ends, pass or fail, and the plugin deletes leftovers of the whole run at session end (Ctrl-C).
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

import urllib3
from kubernetes.client.exceptions import ApiException

from conformance.capacity import Requests, format_bytes, parse
from conformance.inventory import Gpu
from conformance.kube import Kube, condition, items, raw
from conformance.observe import FinalSignal, Source, State, WaitTimeout, hold, wait_for, wait_for_all
from conformance.podfate import Cause, cause_of, pod_events
from drakit.quantity import capacity_key as q_key

if TYPE_CHECKING:
    from conformance.session import Suite

LABEL_RUN = "conformance.gpu-share.dev/run"
LABEL_SCENARIO = "conformance.gpu-share.dev/scenario"
NAMESPACE_PREFIX = "gsc-"
UNSCHEDULABLE_MESSAGE = "cannot allocate all claims"


class PodWillNotRun(FinalSignal):
    """A pod that had to run never will: the message says what happened, in the driver's words."""


@dataclass
class Rejection:
    scenario: str
    pod: str
    decided_at: str  # the PodScheduled condition's lastTransitionTime
    signal_after: float  # seconds from the decision to seeing it
    verdict_after: float  # seconds from the decision to the verdict (after the settle window)
    message: str


@dataclass
class PodRef:
    namespace: str
    name: str
    gpu: Gpu | None = None
    request: Requests | None = None  # capacity -> amount asked (None: no capacity request)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def is_running(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running":
        return False
    cstat = status.get("containerStatuses") or []
    return bool(cstat) and all("running" in (c.get("state") or {}) for c in cstat)


def pod_summary(pod: dict[str, Any]) -> str:
    status = pod.get("status") or {}
    sched = condition(pod, "PodScheduled") or {}
    waiting = [
        f"{c.get('name')}: {(c.get('state') or {}).get('waiting', {}).get('reason', '')}"
        for c in status.get("containerStatuses") or ()
        if "waiting" in (c.get("state") or {})
    ]
    parts = [f"phase={status.get('phase')}", f"node={(pod.get('spec') or {}).get('nodeName')}"]
    if sched:
        parts.append(f"PodScheduled={sched.get('status')}/{sched.get('reason', '')}")
    if waiting:
        parts.append("waiting=" + ",".join(waiting))
    return " ".join(parts)


class Scenario:
    """One scenario's objects, waits and cleanup."""

    def __init__(self, suite: Suite, name: str) -> None:
        self.suite = suite
        self.kube: Kube = suite.kube
        self.profile = suite.profile
        self.name = name
        self.id = f"{name}-{secrets.token_hex(3)}"
        self.namespaces: list[str] = []
        self.pods: list[PodRef] = []
        self.rejections: list[Rejection] = []

    # ---- creation -------------------------------------------------------------------------------
    def namespace(self, suffix: str = "a") -> str:
        ns = f"{NAMESPACE_PREFIX}{self.id}-{suffix}"[:63]
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": self._labels()}}
        self.suite.created_namespaces.append(ns)
        self.namespaces.append(ns)
        raw(self.kube.core.create_namespace, body)
        return ns

    def _labels(self) -> dict[str, str]:
        return {LABEL_RUN: self.suite.run_id, LABEL_SCENARIO: self.id}

    def requests(self, request: Mapping[str, int] | int | None) -> Requests | None:
        """A request vector; a bare number asks for that much of the shared capacity only."""
        if request is None:
            return None
        if isinstance(request, int):
            return {self.profile.shared_capacity: request}
        return dict(request)

    def claim_template(
        self,
        namespace: str,
        name: str,
        *,
        gpu: Gpu | None,
        request: Mapping[str, int] | int | None,
        selectors: tuple[str, ...] = (),
    ) -> str:
        exactly: dict[str, Any] = {"deviceClassName": self.profile.device_class}
        cel = ([gpu.selector(self.profile)] if gpu else []) + list(selectors)
        if cel:
            exactly["selectors"] = [{"cel": {"expression": e}} for e in cel]
        asked = self.requests(request)
        if asked is not None:
            caps = gpu.capacities if gpu else None
            exactly["capacity"] = {
                "requests": {
                    k: caps[k].format(v) if caps is not None and k in caps else format_bytes(v)
                    for k, v in asked.items()
                }
            }
        body = {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaimTemplate",
            "metadata": {"name": name, "namespace": namespace, "labels": self._labels()},
            "spec": {"spec": {"devices": {"requests": [{"name": "gpu", "exactly": exactly}]}}},
        }
        self.suite.validate(body)
        raw(self.kube.resource.create_namespaced_resource_claim_template, namespace, body)
        return name

    def create_template_object(self, namespace: str, body: dict[str, Any]) -> str:
        body = {
            **body,
            "metadata": {**body.get("metadata", {}), "namespace": namespace, "labels": self._labels()},
        }
        raw(self.kube.resource.create_namespaced_resource_claim_template, namespace, body)
        return body["metadata"]["name"]

    def pod(
        self,
        namespace: str,
        name: str,
        template: str,
        *,
        gpu: Gpu | None = None,
        request: Mapping[str, int] | int | None = None,
    ) -> PodRef:
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": self._labels()},
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 1,
                "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": template}],
                "containers": [
                    {
                        "name": "ctr",
                        "image": self.profile.pod_image,
                        "command": self.suite.pod_command(),
                        "resources": {"claims": [{"name": "gpu"}]},
                    }
                ],
            },
        }
        raw(self.kube.core.create_namespaced_pod, namespace, body)
        ref = PodRef(namespace, name, gpu, self.requests(request))
        self.pods.append(ref)
        return ref

    def sharer(
        self,
        namespace: str,
        name: str,
        gpu: Gpu,
        request: Mapping[str, int] | int | None,
        selectors: tuple[str, ...] = (),
    ) -> PodRef:
        """A pod with its own claim template pinned to ``gpu`` asking ``request`` (a vector of
        capacities, or bytes of the shared capacity)."""
        tmpl = self.claim_template(namespace, f"{name}-tmpl", gpu=gpu, request=request, selectors=selectors)
        return self.pod(namespace, name, tmpl, gpu=gpu, request=request)

    # ---- observation ----------------------------------------------------------------------------
    def _list_pods(self, **kw: Any) -> Any:
        return self.kube.core.list_pod_for_all_namespaces(**kw)

    def _selector(self) -> str:
        return f"{LABEL_SCENARIO}={self.id}"

    def wait_running(self, pods: list[PodRef], timeout: float | None = None) -> dict[str, dict[str, Any]]:
        """Wait until every pod runs. A final cause (the driver refused to prepare, the container could
        not be created or exited, the pod is gone) ends the wait at once with PodWillNotRun."""
        wanted = {p.key: p for p in pods}
        sources: dict[str, Source] = {"pods": (self._list_pods, {"label_selector": self._selector()})}
        for ns in sorted({p.namespace for p in pods}):
            sources[f"events {ns}"] = (
                self.kube.core.list_namespaced_event,
                {"namespace": ns, "field_selector": "involvedObject.kind=Pod"},
            )

        last: dict[str, Cause | None] = {}  # why each pod not yet Running is not, as last seen

        def check(states: Mapping[str, State]) -> Any:
            seen = states["pods"]
            events = {k: e for name, st in states.items() if name != "pods" for k, e in st.items()}
            last.clear()
            for k, p in wanted.items():
                if not (k in seen and is_running(seen[k])):
                    last[k] = cause_of(seen.get(k), pod_events(events, seen.get(k), p.namespace, p.name))
            final = next(((k, c) for k, c in sorted(last.items()) if c is not None and c.final), None)
            if final is not None:
                return final
            return None if last else dict(seen)

        def describe(states: Mapping[str, State]) -> str:
            seen = states["pods"]
            return "; ".join(
                f"{k}: {pod_summary(seen[k]) if k in seen else 'absent'}" for k in sorted(wanted)
            )

        what = f"pod(s) {', '.join(sorted(wanted))} to be Running"
        try:
            result = wait_for_all(
                sources, check, timeout=timeout or self.suite.wait_timeout, what=what, describe=describe
            )
        except WaitTimeout as exc:
            why = "; ".join(f"{wanted[k].name}: {self._why_not_running(c)}" for k, c in sorted(last.items()))
            raise WaitTimeout(f"{why + '; ' if why else ''}{exc}{self._pod_events(pods)}") from None
        if isinstance(result, tuple):
            k, cause = result
            raise PodWillNotRun(self._final_message(wanted[k], cause))
        return {k: v for k, v in result.items() if k in wanted}

    @staticmethod
    def _why_not_running(cause: Cause | None) -> str:
        """A phrase for a pod still not Running when the wait gave up."""
        if cause is None:
            return "it is not Running yet"
        return f"{cause.text}{': ' + cause.quote if cause.quote else ''}"

    def _allocation(self, pod: PodRef) -> str:
        """'was allocated gpu-1 (share 6Gi)' from the pod's claim; '' when it has no allocation."""
        try:
            claim = self.claim_of(pod)
        except (AssertionError, ApiException):
            return ""
        alloc = ((claim.get("status") or {}).get("allocation") or {}).get("devices") or {}
        parts = []
        for r in alloc.get("results") or ():
            consumed = r.get("consumedCapacity") or {}
            if set(consumed) == {self.profile.capacity}:
                share = f" (share {consumed[self.profile.capacity]})"
            elif consumed:
                share = " (share " + ", ".join(f"{n}={v}" for n, v in sorted(consumed.items())) + ")"
            else:
                share = ""
            parts.append(f"{r.get('device')}{share}")
        return f"was allocated {' and '.join(parts)}" if parts else ""

    def _final_message(self, pod: PodRef, cause: Cause) -> str:
        quote = f": {cause.quote}" if cause.quote else ""
        if cause.kind == "gone":
            return f"{pod.name} {cause.text}"
        if cause.kind in ("exited", "crash-loop", "failed"):
            quote += self._log_tail(pod)
        allocated = self._allocation(pod)
        return (
            f"{pod.name} {allocated} but {cause.text}{quote}"
            if allocated
            else f"{pod.name}: {cause.text}{quote}"
        )

    def _log_tail(self, pod: PodRef, lines: int = 5) -> str:
        try:
            text = self.kube.core.read_namespaced_pod_log(
                pod.name, pod.namespace, tail_lines=lines, _request_timeout=10
            )
        except Exception:  # the log is context only; its absence must not hide the cause
            return ""
        text = " | ".join(x for x in (text or "").splitlines() if x.strip())
        return f"; its last log lines: {text[-500:]}" if text else ""

    def wait_rejected(self, pod: PodRef) -> dict[str, Any]:
        """Positive signal of a scheduler rejection, then the settle window; records the timing."""

        def check(state: State) -> dict[str, Any] | None:
            obj = state.get(pod.key)
            if not obj:
                return None
            if (obj.get("spec") or {}).get("nodeName"):
                raise AssertionError(
                    f"pod {pod.key} was scheduled to {obj['spec']['nodeName']} but "
                    f"had to be "
                    f"rejected ({pod_summary(obj)})"
                )
            cond = condition(obj, "PodScheduled") or {}
            if (
                cond.get("status") == "False"
                and cond.get("reason") == "Unschedulable"
                and UNSCHEDULABLE_MESSAGE in (cond.get("message") or "")
            ):
                return obj
            return None

        obj = wait_for(
            self._list_pods,
            check,
            timeout=self.suite.wait_timeout,
            what=f"pod {pod.key} to be rejected (PodScheduled=False, Unschedulable, "
            f"'{UNSCHEDULABLE_MESSAGE}')",
            describe=lambda st: pod_summary(st[pod.key]) if pod.key in st else "absent",
            label_selector=self._selector(),
        )
        seen = time.time()
        cond = condition(obj, "PodScheduled") or {}
        self.hold_unscheduled([pod])
        verdict = time.time()
        decided = _parse_time(cond.get("lastTransitionTime"))
        rej = Rejection(
            self.name,
            pod.key,
            cond.get("lastTransitionTime", ""),
            signal_after=max(0.0, seen - decided) if decided else -1.0,
            verdict_after=max(0.0, verdict - decided) if decided else -1.0,
            message=cond.get("message", ""),
        )
        self.rejections.append(rej)
        self.suite.rejections.append(rej)
        return obj

    def hold_unscheduled(self, pods: list[PodRef]) -> None:
        wanted = {p.key for p in pods}

        def violation(state: State) -> str | None:
            for k in wanted:
                obj = state.get(k)
                if obj is None:
                    return f"pod {k} disappeared"
                if (obj.get("spec") or {}).get("nodeName"):
                    return f"pod {k} was scheduled to {obj['spec']['nodeName']} ({pod_summary(obj)})"
            return None

        hold(
            self._list_pods,
            violation,
            window=self.suite.settle_seconds,
            what=f"pod(s) {', '.join(sorted(wanted))} staying unscheduled for {self.suite.settle_seconds}s",
            label_selector=self._selector(),
        )

    def _pod_events(self, pods: list[PodRef]) -> str:
        """Distinct warning events of these pods (the kubelet's or scheduler's own words)."""
        names = {p.name for p in pods}
        lines: list[str] = []
        for ns in sorted({p.namespace for p in pods}):
            with contextlib.suppress(ApiException):
                events, _ = items(self.kube.core.list_namespaced_event, ns)
                for e in events:
                    who = (e.get("involvedObject") or {}).get("name")
                    line = f"{who}: {e.get('reason')}: {e.get('message')}"
                    if e.get("type") == "Warning" and who in names and line not in lines:
                        lines.append(line)
        return ("; warning events: " + " | ".join(lines[-10:])) if lines else ""

    # ---- reading results ------------------------------------------------------------------------
    def read_pod(self, pod: PodRef) -> dict[str, Any]:
        return raw(self.kube.core.read_namespaced_pod, pod.name, pod.namespace)

    def claim_of(self, pod: PodRef) -> dict[str, Any]:
        obj = self.read_pod(pod)
        for st in (obj.get("status") or {}).get("resourceClaimStatuses") or ():
            if st.get("name") == "gpu" and st.get("resourceClaimName"):
                return raw(
                    self.kube.resource.read_namespaced_resource_claim, st["resourceClaimName"], pod.namespace
                )
        raise AssertionError(f"pod {pod.key} has no resourceClaimStatuses entry for its claim 'gpu'")

    def results_of(self, pod: PodRef) -> list[dict[str, Any]]:
        claim = self.claim_of(pod)
        alloc = ((claim.get("status") or {}).get("allocation") or {}).get("devices") or {}
        return [r for r in alloc.get("results") or () if r.get("driver") == self.profile.driver]

    def single_result(self, pod: PodRef) -> dict[str, Any]:
        results = self.results_of(pod)
        assert len(results) == 1, f"claim of {pod.key} has {len(results)} results of {self.profile.driver}"
        return results[0]

    def consumed(self, result: dict[str, Any]) -> int | None:
        """consumedCapacity of the shared capacity (memory) in whole units, None when absent."""
        return self.consumed_all(result).get(self.profile.shared_capacity)

    def consumed_all(self, result: dict[str, Any]) -> Requests:
        """Every key of the allocation's consumedCapacity, in whole units, keyed like the device."""
        return {
            q_key(k, self.profile.driver): parse(v) for k, v in (result.get("consumedCapacity") or {}).items()
        }

    def pod_log(self, pod: PodRef) -> str:
        return self.kube.core.read_namespaced_pod_log(pod.name, pod.namespace, _request_timeout=30)

    def wait_log(self, pod: PodRef, done: Callable[[str], bool], what: str) -> str:
        """Follow the pod's log until ``done(text)`` or the wait bound; return the text seen."""
        deadline = time.monotonic() + self.suite.wait_timeout
        text = ""
        while True:
            remaining = deadline - time.monotonic()
            try:
                # With _preload_content=False the client returns the raw urllib3 response, not a str.
                resp = cast(
                    urllib3.BaseHTTPResponse,
                    self.kube.core.read_namespaced_pod_log(
                        pod.name,
                        pod.namespace,
                        follow=True,
                        _preload_content=False,
                        _request_timeout=(10, max(1.0, remaining)),
                    ),
                )
                text = ""
                try:
                    for chunk in resp.stream(4096, decode_content=True):
                        text += chunk.decode(errors="replace")
                        if done(text):
                            return text
                finally:
                    resp.release_conn()
            except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ProtocolError):
                pass
            if done(text):
                return text
            if time.monotonic() >= deadline:
                raise WaitTimeout(
                    f"gave up after {self.suite.wait_timeout:.0f}s waiting for {what} "
                    f"in the log "
                    f"of {pod.key}; log was: {text[-2000:]!r}"
                )
            # A server that does not follow closed the stream early: wait for the pod to change or 1 s.
            with contextlib.suppress(WaitTimeout):
                wait_for(
                    self._list_pods,
                    lambda st: None,
                    timeout=1,
                    what="a pod change",
                    label_selector=self._selector(),
                )

    # ---- deletion -------------------------------------------------------------------------------
    def delete_pods(self, pods: list[PodRef], wait: bool = True) -> None:
        for p in pods:
            with contextlib.suppress(ApiException):
                self.kube.core.delete_namespaced_pod(p.name, p.namespace)
        if wait:
            wanted = {p.key for p in pods}
            wait_for(
                self._list_pods,
                lambda st: True if not wanted & set(st) else None,
                timeout=self.suite.wait_timeout,
                what=f"pod(s) {', '.join(sorted(wanted))} to be deleted",
                label_selector=self._selector(),
            )
            self.wait_claims_gone(pods)

    def wait_claims_gone(self, pods: list[PodRef]) -> None:
        """Claims made from a pod's template go with the pod; wait so the capacity is free again."""
        namespaces = {p.namespace for p in pods}
        owners = {p.name for p in pods}

        def owned(state: State) -> list[str]:
            out = []
            for k, c in state.items():
                meta = c.get("metadata") or {}
                refs = meta.get("ownerReferences") or ()
                if meta.get("namespace") in namespaces and any(
                    o.get("kind") == "Pod" and o.get("name") in owners for o in refs
                ):
                    out.append(k)
            return out

        wait_for(
            self.kube.resource.list_resource_claim_for_all_namespaces,
            lambda st: True if not owned(st) else None,
            timeout=self.suite.wait_timeout,
            what="the deleted pods' ResourceClaims to be removed",
            describe=lambda st: ", ".join(owned(st)),
        )

    def cleanup(self) -> list[str]:
        """Delete everything this scenario made; return problems (empty when all is gone)."""
        problems: list[str] = []
        if not self.namespaces:
            return problems
        selector = self._selector()
        for ns in self.namespaces:
            with contextlib.suppress(ApiException):
                self.kube.core.delete_collection_namespaced_pod(ns, label_selector=selector)
        try:
            wait_for(
                self._list_pods,
                lambda st: True if not st else None,
                timeout=self.suite.wait_timeout,
                what=f"scenario {self.id}'s pods to be deleted",
                label_selector=selector,
            )
        except (WaitTimeout, ApiException) as exc:
            problems.append(str(exc))
        for ns in self.namespaces:
            with contextlib.suppress(ApiException):
                self.kube.resource.delete_collection_namespaced_resource_claim_template(ns)
            with contextlib.suppress(ApiException):
                self.kube.resource.delete_collection_namespaced_resource_claim(ns)
        problems += self.suite.delete_namespaces(self.namespaces)
        return problems
