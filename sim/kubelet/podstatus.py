"""Pod and container status the way the real kubelet reports them (phase, conditions, container states)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ContainerState:
    name: str
    image: str
    restart_count: int = 0
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict[str, Any] = field(default_factory=dict)
    container_id: str = ""
    # True once this container will not run again (restart policy says so, or the pod is stopping).
    done: bool = False
    init: bool = False

    @property
    def running(self) -> bool:
        return "running" in self.state

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": "",
            # A completed init container reads ready, as the kubelet reports it.
            "ready": self.state.get("terminated", {}).get("exitCode") == 0 if self.init else self.running,
            "restartCount": self.restart_count,
            "started": self.running,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.container_id:
            out["containerID"] = self.container_id
        return out


def pod_phase(containers: list[ContainerState], restart_policy: str) -> str:
    """kubelet getPhase for pods without init containers."""
    waiting = running = stopped = succeeded = 0
    for c in containers:
        if "running" in c.state:
            running += 1
        elif "terminated" in c.state:
            stopped += 1
            if c.state["terminated"].get("exitCode") == 0:
                succeeded += 1
        elif "terminated" in c.last_state:
            stopped += 1  # waiting to restart counts as stopped, as upstream does
            if c.last_state["terminated"].get("exitCode") == 0:
                succeeded += 1
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if restart_policy == "Always" and not all(c.done for c in containers):
        return "Running"
    if stopped == succeeded:
        return "Succeeded"
    if restart_policy == "OnFailure" and not all(c.done for c in containers):
        return "Running"
    return "Failed"


def qos_class(pod: dict[str, Any]) -> str:
    containers = pod.get("spec", {}).get("containers", [])
    requests_any = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        if req or lim:
            requests_any = True
        for r in ("cpu", "memory"):
            if r not in lim or req.get(r, lim.get(r)) != lim.get(r):
                guaranteed = False
    if not requests_any:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def conditions(
    pod: dict[str, Any],
    containers: list[ContainerState],
    phase: str,
    sandbox_ready: bool,
    now: str,
    previous: list[dict[str, Any]],
    uninitialized: list[str] | None = None,
) -> list[dict[str, Any]]:
    old = {c["type"]: c for c in previous}

    def cond(ctype: str, ok: bool, reason: str | None = None, message: str | None = None) -> dict[str, Any]:
        status = "True" if ok else "False"
        prior = old.get(ctype)
        out: dict[str, Any] = {
            "type": ctype,
            "status": status,
            "lastProbeTime": None,
            "lastTransitionTime": prior["lastTransitionTime"]
            if prior and prior.get("status") == status and prior.get("lastTransitionTime")
            else now,
        }
        if reason:
            out["reason"] = reason
        if message:
            out["message"] = message
        return out

    unready = [c.name for c in containers if not c.running]
    if phase == "Succeeded":
        ready_reason, ready_msg = "PodCompleted", None
    elif unready:
        ready_reason = "ContainersNotReady"
        ready_msg = f"containers with unready status: [{' '.join(unready)}]"
    else:
        ready_reason, ready_msg = None, None
    out = [
        cond("PodReadyToStartContainers", sandbox_ready and phase not in ("Succeeded", "Failed")),
        cond("Initialized", True, "PodCompleted" if phase == "Succeeded" else None)
        if not uninitialized
        else cond(
            "Initialized",
            False,
            "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(uninitialized)}]",
        ),
        cond("Ready", not unready, ready_reason, ready_msg),
        cond("ContainersReady", not unready, ready_reason, ready_msg),
    ]
    if "PodScheduled" in old:
        out.append(old["PodScheduled"])
    else:
        out.append(cond("PodScheduled", True))
    return out
