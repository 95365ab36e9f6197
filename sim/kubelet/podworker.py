"""One worker thread per pod bound to the node: prepare, run, restart, stop, unprepare, final delete."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

from drakit.nodedirs import NodeDirs
from drakit.timeutil import now_rfc3339
from sim.kubelet.cdi import CDIError, Registry
from sim.kubelet.claims import ClaimCache, PodClaim, PrepareError, container_cdi_ids, pod_claims
from sim.kubelet.containers import (
    ContainerConfigError,
    ProcessReaper,
    RunningProcess,
    StartError,
    container_env,
    exit_code,
    resolve_argv,
    start_process,
)
from sim.kubelet.events import EventRecorder
from sim.kubelet.podstatus import ContainerState, conditions, pod_phase, qos_class

log = logging.getLogger(__name__)

# Pod sync retries after an error (prepare, config, CDI): exponential, woken early by pod updates and
# driver registrations.
SYNC_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
# Container restart back-off as the kubelet's: the first restart is immediate, then 10 s doubling to 5 min.
CRASH_BACKOFF_MAX_S = 300.0
DEFAULT_GRACE_S = 30


class PodHost(Protocol):
    """What a pod worker uses of its kubelet (sim/kubelet/kubelet.py's Kubelet is one). A protocol rather
    than the Kubelet class, because kubelet.py imports this module to make workers: importing it back,
    even for types only, made the two modules a circle."""

    store: Any
    node_name: str
    dirs: NodeDirs
    events: EventRecorder
    claims: ClaimCache
    cdi: Registry
    isolation_reason: str | None
    crash_backoff_s: float
    shutdown_grace_s: float

    def worker_done(self, worker: PodWorker) -> None: ...

    def patch_status(self, pod: dict[str, Any], status: dict[str, Any]) -> None: ...

    def final_delete(self, pod: dict[str, Any]) -> None: ...

    def lookup_config(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None: ...


class PodWorker:
    def __init__(self, kubelet: PodHost, pod: dict[str, Any]):
        self.kubelet = kubelet
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.key = (meta.get("namespace", "default"), meta["name"])
        self._cond = threading.Condition()
        self._dirty = False
        self._deleted = False  # the object is gone (forced delete)
        self.saw_deletion = False
        self._stop_kubelet = False
        self.init_containers = [
            ContainerState(c["name"], c.get("image", ""), init=True)
            for c in pod["spec"].get("initContainers") or []
        ]
        self.containers = [ContainerState(c["name"], c.get("image", "")) for c in pod["spec"]["containers"]]
        if self.init_containers:
            for c in self.containers:
                c.state = {"waiting": {"reason": "PodInitializing"}}
        self._procs: dict[str, RunningProcess] = {}
        self._exited: dict[str, int] = {}
        self._next_start: dict[str, float] = {}
        self._crash_backoff: dict[str, float] = {}
        self._claims: list[PodClaim] = []
        self._prepared = False
        self._unprepared = False
        self._start_time = now_rfc3339()
        self._sandbox_ready = False
        self._phase = "Pending"
        self._last_status: dict[str, Any] | None = None
        self.log_dir = kubelet.dirs.pod_logs / f"{self.key[0]}_{self.key[1]}_{self.uid}"
        self.thread = threading.Thread(target=self._run, name=f"pod:{self.key[0]}/{self.key[1]}", daemon=True)

    # -- signals from the kubelet ------------------------------------------------------------------------
    def update(self, pod: dict[str, Any]) -> None:
        with self._cond:
            self.pod = pod
            self._dirty = True
            self._cond.notify_all()

    def deleted(self) -> None:
        with self._cond:
            self.saw_deletion = True
            self._deleted = True
            self._cond.notify_all()

    def stop_for_shutdown(self) -> None:
        with self._cond:
            self._stop_kubelet = True
            self._cond.notify_all()

    def poke(self) -> None:
        with self._cond:
            self._dirty = True
            self._cond.notify_all()

    def _wait(self, timeout: float | None) -> None:
        with self._cond:
            if not self._dirty and not self._exited and not self._stopping():
                self._cond.wait(timeout=timeout)
            self._dirty = False

    def _stopping(self) -> bool:
        return self._deleted or self._stop_kubelet or bool(self.pod["metadata"].get("deletionTimestamp"))

    # -- main loop ------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._sync_until_stopping()
            self._terminate()
        except Exception:
            log.exception("pod worker %s/%s crashed", *self.key)
            self._kill_all(0)
        finally:
            self.kubelet.worker_done(self)

    def _sync_until_stopping(self) -> None:
        if self.pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            # Finished before this kubelet saw it (e.g. the kubelet restarted): never run it again.
            self._adopt_terminal_status()
            while not self._stopping():
                self._wait(None)
            return
        self._publish()
        if not self._prepare_until_ready():
            return
        self._sandbox_ready = True
        attempts = 0
        while not self._stopping():
            self._reap_exits()
            terminal = self._phase_now() in ("Succeeded", "Failed")
            if terminal:
                self._publish()
                self._release_claims()
                # An unprepare that failed (driver away) is retried; otherwise wait for the deletion.
                self._wait(None if self._unprepared else SYNC_BACKOFF_S[-1])
                continue
            errors = self._start_due_containers()
            self._publish()
            delay = self._next_deadline()
            if errors:
                retry_in = SYNC_BACKOFF_S[min(attempts, len(SYNC_BACKOFF_S) - 1)]
                delay = retry_in if delay is None else min(delay, retry_in)
                attempts += 1
            else:
                attempts = 0
            self._wait(delay)

    def _prepare_until_ready(self) -> bool:
        attempt = 0
        while not self._stopping():
            try:
                with self._cond:
                    pod = self.pod
                self._claims = pod_claims(self.kubelet.store, pod)
                self.kubelet.claims.prepare(self.uid, self._claims)
                self._prepared = True
                return True
            except PrepareError as e:
                # The kubelet's words: its event text around the DRA manager's "prepare dynamic
                # resources: ..." error.
                self.kubelet.events.emit(
                    self.pod,
                    "Warning",
                    "FailedPrepareDynamicResources",
                    f"Failed to prepare dynamic resources: prepare dynamic resources: {e}",
                )
            except Exception as e:  # an API error reading a claim: retried like any sync error
                log.warning("pod %s/%s: prepare failed: %s", *self.key, e)
            delay = SYNC_BACKOFF_S[min(attempt, len(SYNC_BACKOFF_S) - 1)]
            attempt += 1
            self._wait(delay)
        return False

    def _adopt_terminal_status(self) -> None:
        by_name = {s["name"]: s for s in self.pod.get("status", {}).get("containerStatuses") or []}
        for c in self.containers:
            old = by_name.get(c.name, {})
            c.state = old.get("state") or {"terminated": {"exitCode": 0, "reason": "Completed"}}
            c.last_state = old.get("lastState") or {}
            c.restart_count = old.get("restartCount", 0)
            c.done = True
        self._unprepared = True  # nothing of it is prepared on this kubelet
        self._last_status = {}  # publish nothing until the deletion

    # -- containers ---------------------------------------------------------------------------------
    def _spec(self, name: str) -> dict[str, Any]:
        spec = self.pod["spec"]
        return next(c for c in (spec.get("initContainers") or []) + spec["containers"] if c["name"] == name)

    def _container(self, name: str) -> ContainerState:
        return next(c for c in self.init_containers + self.containers if c.name == name)

    def _init_succeeded(self, c: ContainerState) -> bool:
        return c.done and c.state.get("terminated", {}).get("exitCode") == 0

    def _init_failed(self) -> bool:
        return any(c.done and not self._init_succeeded(c) for c in self.init_containers)

    def _initialized(self) -> bool:
        return all(self._init_succeeded(c) for c in self.init_containers)

    def _restart_policy(self) -> str:
        return self.pod["spec"].get("restartPolicy", "Always")

    def _start_due_containers(self) -> bool:
        """Start every container that should run now; True when one hit an error that is retried."""
        retry = False
        now = time.monotonic()
        if not self._initialized():
            # Init containers run one at a time, in order, each to a successful exit.
            pending = [c for c in self.init_containers if not self._init_succeeded(c)][:1]
        else:
            pending = self.containers
        for c in pending:
            if c.done or c.running or self._next_start.get(c.name, 0) > now:
                continue
            if not self._start_container(c):
                retry = retry or not c.done
        return retry

    def _start_container(self, c: ContainerState) -> bool:
        spec = self._spec(c.name)
        field_path = f"spec.{'initContainers' if c.init else 'containers'}{{{c.name}}}"
        try:
            if c.init and spec.get("restartPolicy") == "Always":
                raise ContainerConfigError(
                    "sidecar containers (initContainers[].restartPolicy: Always) "
                    "are not supported by the simulated kubelet; use a container"
                )
            env = container_env(self.pod, spec, self.kubelet.node_name, self.kubelet.lookup_config)
            ids = container_cdi_ids(self.pod, spec, self._claims, self.kubelet.claims)
            resolution = self.kubelet.cdi.resolve(ids)
            env = resolution.apply_env(env)
            argv = resolve_argv(spec, env)
            isolation = self.kubelet.isolation_reason
            mounts, dropped = resolution.mount_plan() if isolation is None else (None, [])
        except ContainerConfigError as e:
            c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(e)}}
            self.kubelet.events.emit(self.pod, "Warning", "Failed", f"Error: {e}", field_path)
            return False
        except CDIError as e:
            msg = f"failed to create containerd container: CDI device injection failed: {e}"
            c.state = {"waiting": {"reason": "CreateContainerError", "message": msg}}
            self.kubelet.events.emit(self.pod, "Warning", "Failed", f"Error: {msg}", field_path)
            return False
        except StartError as e:
            self._start_failed(c, e, field_path)
            return False
        log_path = self.log_dir / c.name / f"{c.restart_count}.log"
        (self.log_dir / c.name / f"{c.restart_count}.cdi.json").parent.mkdir(parents=True, exist_ok=True)
        applied: dict[str, Any] = {"mountNamespace": isolation is None, "hooks": "recorded, not run"}
        if isolation is not None:
            applied["notApplied"] = [f"device nodes and mounts: {isolation}"]
        elif dropped:
            applied["notApplied"] = dropped
        _write_json(
            self.log_dir / c.name / f"{c.restart_count}.cdi.json",
            {"cdiDevices": ids, "edits": resolution.edits.to_json(), "argv": argv, "applied": applied},
        )
        cwd = Path(spec["workingDir"]) if spec.get("workingDir") else self.log_dir / c.name
        try:
            proc = start_process(argv, env, cwd, log_path, mounts)
        except StartError as e:
            self._start_failed(c, e, field_path)
            return False
        c.container_id = f"sim://{uuid.uuid4().hex}"
        self.kubelet.events.emit(self.pod, "Normal", "Created", f"Created container: {c.name}", field_path)
        c.state = {"running": {"startedAt": now_rfc3339()}}
        with self._cond:
            self._procs[c.name] = proc
        ProcessReaper(
            proc, lambda p, name=c.name: self._on_exit(name, p), name=f"reap:{self.key[1]}/{c.name}"
        )
        self.kubelet.events.emit(self.pod, "Normal", "Started", f"Started container {c.name}", field_path)
        return True

    def _start_failed(self, c: ContainerState, e: Exception, field_path: str) -> None:
        msg = (
            f"failed to create containerd task: failed to create shim task: OCI runtime create failed: "
            f"runc create failed: unable to start container process: {e}: unknown"
        )
        ts = now_rfc3339()
        c.container_id = f"sim://{uuid.uuid4().hex}"
        c.state = {
            "terminated": {
                "exitCode": 128,
                "reason": "StartError",
                "message": msg,
                "startedAt": "1970-01-01T00:00:00Z",
                "finishedAt": ts,
                "containerID": c.container_id,
            }
        }
        self.kubelet.events.emit(self.pod, "Warning", "Failed", f"Error: {msg}", field_path)
        self._after_exit(c, 128)

    def _on_exit(self, name: str, proc: RunningProcess) -> None:
        with self._cond:
            if self._procs.get(name) is proc:
                self._exited[name] = exit_code(proc.popen.returncode)
            self._cond.notify_all()

    def _reap_exits(self) -> None:
        with self._cond:
            exited, self._exited = self._exited, {}
            for name in exited:
                self._procs.pop(name, None)
        for name, code in exited.items():
            c = self._container(name)
            started = c.state.get("running", {}).get("startedAt", now_rfc3339())
            c.state = {
                "terminated": {
                    "exitCode": code,
                    "reason": "Completed" if code == 0 else "Error",
                    "startedAt": started,
                    "finishedAt": now_rfc3339(),
                    "containerID": c.container_id,
                }
            }
            self._after_exit(c, code)

    def _after_exit(self, c: ContainerState, code: int) -> None:
        policy = self._restart_policy()
        # An init container is finished by success; on failure it restarts unless the policy is Never.
        finished = code == 0 if c.init else policy == "OnFailure" and code == 0
        if self._stopping() or policy == "Never" or finished:
            c.done = True
            return
        # Restart: the terminated state moves to lastState and the container waits out the back-off.
        backoff = self._crash_backoff.get(c.name)
        c.last_state = c.state
        c.restart_count += 1
        if backoff is None:
            self._crash_backoff[c.name] = self.kubelet.crash_backoff_s
            self._next_start[c.name] = 0
            c.state = {"waiting": {"reason": "ContainerCreating"}}
        else:
            self._next_start[c.name] = time.monotonic() + backoff
            self._crash_backoff[c.name] = min(backoff * 2, CRASH_BACKOFF_MAX_S)
            c.state = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off {backoff:g}s restarting failed container={c.name} "
                    f"pod={self.key[1]}_{self.key[0]}({self.uid})",
                }
            }
            self.kubelet.events.emit(
                self.pod,
                "Warning",
                "BackOff",
                "Back-off restarting failed container "
                f"{c.name} in pod {self.key[1]}_{self.key[0]}({self.uid})",
                f"spec.{'initContainers' if c.init else 'containers'}{{{c.name}}}",
            )

    def _next_deadline(self) -> float | None:
        now = time.monotonic()
        pending = [t - now for n, t in self._next_start.items() if t > now and not self._container(n).running]
        return max(min(pending), 0.0) if pending else None

    def _phase_now(self) -> str:
        if self._init_failed():
            return "Failed"
        if not self._initialized():
            return "Pending"
        return pod_phase(self.containers, self._restart_policy())

    # -- stop ---------------------------------------------------------------------------------------
    def _grace_seconds(self) -> float:
        if self._deleted or self._stop_kubelet:
            return 0 if self._deleted else min(self.kubelet.shutdown_grace_s, self._spec_grace())
        meta = self.pod["metadata"]
        grace = meta.get("deletionGracePeriodSeconds")
        return float(grace) if grace is not None else self._spec_grace()

    def _spec_grace(self) -> float:
        g = self.pod["spec"].get("terminationGracePeriodSeconds")
        return float(g) if g is not None else DEFAULT_GRACE_S

    def _kill_all(self, grace: float) -> None:
        with self._cond:
            procs = list(self._procs.items())
        threads = []
        for name, proc in procs:
            if not self._stop_kubelet:
                kind = "initContainers" if self._container(name).init else "containers"
                self.kubelet.events.emit(
                    self.pod, "Normal", "Killing", f"Stopping container {name}", f"spec.{kind}{{{name}}}"
                )
            t = threading.Thread(target=proc.terminate, args=(grace,), daemon=True)
            t.start()
            threads.append(t)
        for t in threads:
            t.join()

    def _terminate(self) -> None:
        grace = self._grace_seconds()
        for c in self.init_containers + self.containers:
            c.done = True
        self._kill_all(grace)
        # Wait for the reaper threads to hand over the exit codes (the processes are already reaped).
        with self._cond:
            self._cond.wait_for(lambda: not (set(self._procs) - set(self._exited)), timeout=10)
        self._reap_exits()
        if self._stop_kubelet:
            return  # the sim is shutting down; the API server goes with it
        if not self._deleted:
            self._publish()
        self._release_claims(until_done=True)
        if not self._deleted:
            self.kubelet.final_delete(self.pod)

    def _release_claims(self, until_done: bool = False) -> None:
        """Unprepare what this pod holds (also claims prepared before a later claim failed)."""
        if self._unprepared:
            return
        attempt = 0
        while True:
            try:
                self.kubelet.claims.release(self.uid)
                self._unprepared = True
                return
            except PrepareError as e:
                log.warning("pod %s/%s: unprepare failed (will retry): %s", *self.key, e)
            if not until_done or self._stop_kubelet:
                return
            delay = SYNC_BACKOFF_S[min(attempt, len(SYNC_BACKOFF_S) - 1)]
            attempt += 1
            with self._cond:
                self._cond.wait_for(lambda: self._stop_kubelet, timeout=delay)

    # -- status -------------------------------------------------------------------------------------
    def _publish(self) -> None:
        if self._deleted:
            return
        phase = self._phase_now() if self._prepared else "Pending"
        if self._stopping() and all(c.done and not c.running for c in self.containers):
            # A pod the kubelet stopped gets a terminal phase before it is deleted (KEP-3329 behaviour):
            # Succeeded only when every container ran and exited 0.
            phase = (
                "Succeeded"
                if all(c.state.get("terminated", {}).get("exitCode") == 0 for c in self.containers)
                else "Failed"
            )
        now = now_rfc3339()
        with self._cond:
            previous = list(self.pod.get("status", {}).get("conditions") or [])
        status = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self._start_time,
            "qosClass": qos_class(self.pod),
            "containerStatuses": [c.to_status() for c in self.containers],
        }
        if self.init_containers:
            status["initContainerStatuses"] = [c.to_status() for c in self.init_containers]
        uninitialized = [c.name for c in self.init_containers if not self._init_succeeded(c)]
        conds = conditions(
            self.pod, self.containers, phase, self._sandbox_ready, now, previous, uninitialized
        )
        # Publish only real changes: timestamps alone do not make a new status.
        comparable = {**status, "conditions": [(x["type"], x["status"], x.get("reason")) for x in conds]}
        if comparable == self._last_status:
            return
        status["conditions"] = conds
        self._last_status = comparable
        self._phase = phase
        self.kubelet.patch_status(self.pod, status)

    def cdi_devices(self, container: str) -> list[str]:
        if container not in {c.name for c in self.init_containers + self.containers}:
            raise KeyError(f"pod {self.key[0]}/{self.key[1]} has no container {container!r}")
        runs = sorted(self.log_dir.glob(f"{container}/*.cdi.json"), key=lambda p: int(p.name.split(".")[0]))
        if not runs:
            return []
        return list(json.loads(runs[-1].read_text())["cdiDevices"])

    # -- logs ---------------------------------------------------------------------------------------
    def log_path(self, container: str, previous: bool) -> Path | None:
        c = next((x for x in self.init_containers + self.containers if x.name == container), None)
        if c is None:
            return None
        index = c.restart_count - 1 if previous else c.restart_count
        if previous and index < 0:
            return None
        path = self.log_dir / container / f"{index}.log"
        if not previous and not path.exists() and "terminated" in c.state:
            return None
        return path if path.exists() else None


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)
