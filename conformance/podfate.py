"""Why a pod is not Running, read from its status and its events: final causes end a wait at once.

A cause is *final* when nothing the cluster does by itself will make the pod run: the driver
answered NodePrepareResources and refused the claim, the runtime could not create the container
from the CDI devices the driver returned, the container exited or keeps crashing, the pod is gone.
Everything else (not yet scheduled, the driver not registered yet, a gRPC transport error while a
driver restarts) is *pending*: a wait goes on, and names that cause when it gives up.

The words are the kubelet's (pkg/kubelet/cm/dra/manager.go): a FailedPrepareDynamicResources event
reads ``Failed to prepare dynamic resources: prepare dynamic resources: <manager error>``, where a
driver's refusal is ``NodePrepareResources failed for ResourceClaim <name>: <driver's error>`` and a
failed call is ``NodePrepareResources: rpc error: code = <Code> desc = <text>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

PREPARE_FAILED = "FailedPrepareDynamicResources"
_REFUSED = re.compile(r"NodePrepareResources failed for ResourceClaim (\S+): (.*)", re.S)
_SKIPPED = re.compile(r"NodePrepareResources skipped \d+ ResourceClaims?", re.S)
_RPC = re.compile(r"NodePrepareResources: (rpc error: code = (\w+) desc = .*)", re.S)
# gRPC codes that say the driver was not (yet) there to answer: a restart in progress, not a refusal.
_TRANSIENT_RPC = {"Unavailable", "DeadlineExceeded", "Canceled"}
# Container waiting reasons after which the kubelet will not get the container running by itself.
_CREATE_FAILED = {
    "CreateContainerError",
    "CreateContainerConfigError",
    "RunContainerError",
    "StartError",
    "InvalidImageName",
    "ErrImageNeverPull",
}


@dataclass(frozen=True)
class Cause:
    final: bool
    kind: str  # refused, prepare-error, create-failed, exited, crash-loop, gone, failed, pending
    text: str  # what happened, in a phrase that follows the pod's name
    quote: str = ""  # the driver's or runtime's own words


def pod_events(
    events: dict[str, dict[str, Any]], pod: dict[str, Any] | None, namespace: str, name: str
) -> list[dict[str, Any]]:
    """The events about this pod (this incarnation when its uid is known), oldest first."""
    uid = ((pod or {}).get("metadata") or {}).get("uid")
    out = []
    for e in events.values():
        inv = e.get("involvedObject") or {}
        if inv.get("kind", "Pod") != "Pod" or inv.get("name") != name:
            continue
        if (inv.get("namespace") or (e.get("metadata") or {}).get("namespace")) != namespace:
            continue
        if uid and inv.get("uid") and inv["uid"] != uid:
            continue
        out.append(e)
    return sorted(
        out,
        key=lambda e: (
            e.get("lastTimestamp") or e.get("eventTime") or "",
            (e.get("metadata") or {}).get("resourceVersion") or "",
        ),
    )


def prepare_cause(message: str) -> Cause:
    """Classify the text of one FailedPrepareDynamicResources event."""
    refused = _REFUSED.search(message)
    if refused:
        return Cause(True, "refused", "the driver refused to prepare it", refused.group(2).strip())
    skipped = _SKIPPED.search(message)
    if skipped:
        return Cause(
            True,
            "prepare-error",
            "the driver left its claim unanswered in NodePrepareResources",
            skipped.group(0),
        )
    rpc = _RPC.search(message)
    if rpc and rpc.group(2) not in _TRANSIENT_RPC:
        return Cause(True, "prepare-error", "the driver's NodePrepareResources failed", rpc.group(1).strip())
    detail = message.strip()
    for prefix in ("Failed to prepare dynamic resources: ", "prepare dynamic resources: "):
        detail = detail.removeprefix(prefix)
    return Cause(False, "pending", "its claims are not prepared yet", detail)


def _container_cause(status: dict[str, Any], restart_policy: str, init: bool = False) -> Cause | None:
    name = status.get("name", "")
    state = status.get("state") or {}
    waiting = state.get("waiting") or {}
    terminated = state.get("terminated")
    if init and terminated is not None and terminated.get("exitCode") == 0:
        return None  # an init container is done when it exits 0
    restarts = status.get("restartCount") or 0
    if waiting.get("reason") in _CREATE_FAILED:
        return Cause(
            True,
            "create-failed",
            f"its container {name} could not be created ({waiting['reason']})",
            (waiting.get("message") or "").strip(),
        )
    if waiting.get("reason") == "CrashLoopBackOff" or (restarts and not state.get("running")):
        last = (status.get("lastState") or {}).get("terminated") or terminated or {}
        return Cause(
            True,
            "crash-loop",
            f"its container {name} keeps exiting ({restarts} restart(s), "
            f"last exit code {last.get('exitCode')}, {last.get('reason') or 'no reason'})",
            (last.get("message") or "").strip(),
        )
    if terminated is not None and (restart_policy == "Never" or terminated.get("reason") == "StartError"):
        return Cause(
            True,
            "exited",
            f"its container {name} exited with code {terminated.get('exitCode')} "
            f"({terminated.get('reason') or 'no reason'}) instead of running",
            (terminated.get("message") or "").strip(),
        )
    return None


def cause_of(pod: dict[str, Any] | None, events: list[dict[str, Any]]) -> Cause | None:
    """Why ``pod`` is not Running (None when nothing speaks against it yet)."""
    if pod is None:
        return Cause(True, "gone", "was deleted before it ran")
    status = pod.get("status") or {}
    policy = (pod.get("spec") or {}).get("restartPolicy", "Always")
    statuses = [(c, True) for c in status.get("initContainerStatuses") or []] + [
        (c, False) for c in status.get("containerStatuses") or []
    ]
    for cstatus, init in statuses:
        found = _container_cause(cstatus, policy, init)
        if found is not None:
            return found
    if status.get("phase") in ("Failed", "Succeeded"):
        detail = ": ".join(x for x in (status.get("reason"), status.get("message")) if x)
        return Cause(True, "failed", f"ended in phase {status['phase']} instead of running", detail)
    prepare = [e for e in events if e.get("reason") == PREPARE_FAILED]
    for e in prepare:
        found = prepare_cause(e.get("message") or "")
        if found.final:
            return found
    if prepare:
        return prepare_cause(prepare[-1].get("message") or "")
    sched: dict[str, Any] = next(
        (c for c in status.get("conditions") or () if c.get("type") == "PodScheduled"), {}
    )
    if sched.get("status") == "False":
        return Cause(
            False,
            "unscheduled",
            f"it is not scheduled ({sched.get('reason') or 'no reason'})",
            (sched.get("message") or "").strip(),
        )
    return None
