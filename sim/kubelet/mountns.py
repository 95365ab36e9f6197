"""A container's CDI edits applied for real: one private mount namespace per container process.

The simulated container shares the host's filesystem, so without this a process would see every
device node of the host (an ``nvidia-smi -L`` probe would list the host's GPUs, not its claim's).
Where the OS lets us (Linux, CAP_SYS_ADMIN: CI runs as root), the kubelet starts each container
through this file run as a helper (``python -I mountns.py PLAN_FD STATUS_FD``) that, before it
execs the container's argv with the container's env unchanged:

1. ``unshare(CLONE_NEWNS)`` and makes every mount private (``mount --make-rprivate /``), so nothing
   below propagates to the host, and the namespace with all its mounts dies with its last process;
2. mounts a fresh tmpfs on ``/dev`` holding only what a process needs (null, zero, full, random,
   urandom, tty, the fd/stdin/stdout/stderr links, a private ``/dev/shm``) and the CDI device nodes
   of its claims, each bind-mounted from its host path;
3. bind-mounts the CDI spec's mounts (a target under ``/dev`` is created in the tmpfs; a target
   elsewhere must exist on the host, because creating it would write to the host's filesystem; the
   kubelet drops those and records why).

Hooks are recorded by the kubelet, never run: NVIDIA's (``nvidia-cdi-hook create-symlinks``,
``update-ldcache``) rewrite the container's root filesystem, which here is the host's.

Setup errors go back to the kubelet over STATUS_FD (closed on exec when all went well), so that a
failed setup is a StartError like a runtime's, not a container that ran. This file must import
nothing outside the standard library: the helper runs it by path, in isolated mode.
"""

from __future__ import annotations

import ctypes
import json
import os
import stat
import sys

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x20, 0x1000, 0x4000, 0x40000
CAP_SYS_ADMIN = 21
BASIC_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
BASIC_LINKS = {
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
    "ptmx": "pts/ptmx",
}
_MOUNT_FLAGS = {"ro": MS_RDONLY, "nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC}


# ---- the decision: can containers get a private mount namespace here? ------------------------------
def unavailable_reason(platform: str, cap_eff: int | None, probe_error: str | None) -> str | None:
    """Why CDI device nodes and mounts cannot be applied on this host (None: they can). Pure, so that
    the decision is tested on any machine without faking root."""
    prefix = "the simulated kubelet cannot give containers a private mount namespace"
    if not platform.startswith("linux"):
        return f"{prefix}: mount namespaces need Linux (this is {platform})"
    if cap_eff is not None and not cap_eff & (1 << CAP_SYS_ADMIN):
        return (
            f"{prefix}: the sim runs without CAP_SYS_ADMIN (uid {os.geteuid()}); run it as root, "
            "as CI does, to have CDI device nodes and mounts applied"
        )
    if probe_error:
        return f"{prefix}: {probe_error}"
    return None


def effective_caps(status_text: str) -> int | None:
    """CapEff from /proc/self/status text (None when absent)."""
    for line in status_text.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return None


_HOST_REASON: list[str | None] = []


def host_unavailable_reason() -> str | None:
    """The decision for this host, probed once per process: the helper does a container's setup in a
    child process (unshare, private propagation, tmpfs /dev, a bind mount) and exits."""
    if _HOST_REASON:
        return _HOST_REASON[0]
    cap_eff = None
    probe_error = None
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/self/status") as f:
                cap_eff = effective_caps(f.read())
        except OSError:
            cap_eff = None
        if cap_eff is None or cap_eff & (1 << CAP_SYS_ADMIN):
            import subprocess

            try:
                done = subprocess.run(
                    [sys.executable, "-I", "-S", __file__, "--probe"],
                    env={},
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
                if done.returncode != 0:
                    probe_error = (
                        f"unshare(CLONE_NEWNS) and a private /dev were refused: "
                        f"{done.stderr.strip() or f'exit code {done.returncode}'}"
                    )
            except (OSError, subprocess.TimeoutExpired) as e:
                probe_error = f"the mount namespace probe could not run: {e}"
    _HOST_REASON.append(unavailable_reason(sys.platform, cap_eff, probe_error))
    return _HOST_REASON[0]


# ---- the helper: runs in the container's process before exec ---------------------------------------
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(
    libc: ctypes.CDLL,
    source: str | None,
    target: str,
    fstype: str | None,
    flags: int,
    data: str | None = None,
) -> None:
    def enc(text: str | None) -> bytes | None:
        return None if text is None else os.fsencode(text)

    _check(
        libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
        f"mount {source or fstype} on {target}",
    )


def _create_target(path: str, like_dir: bool) -> None:
    os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
    if like_dir:
        os.makedirs(path, exist_ok=True)
    elif not os.path.lexists(path):
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))


def _bind(libc: ctypes.CDLL, source_fd: int, target: str, flags: int = 0, recursive: bool = False) -> None:
    # The source is an O_PATH fd opened before /dev was covered: its host node stays reachable.
    _mount(libc, f"/proc/self/fd/{source_fd}", target, None, MS_BIND | (MS_REC if recursive else 0))
    if flags:
        _mount(libc, None, target, None, MS_REMOUNT | MS_BIND | flags)


def enter(plan: dict) -> None:
    """Make this process's mount namespace what ``plan`` says (see the module text)."""
    libc = _libc()
    _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)
    held: dict[str, int] = {}

    def hold(path: str) -> int:
        if path not in held:
            held[path] = os.open(path, os.O_PATH | os.O_CLOEXEC)
        return held[path]

    basics = [n for n in BASIC_DEVICES if os.path.exists(f"/dev/{n}")]
    for name in basics:
        hold(f"/dev/{name}")
    for node in plan.get("deviceNodes", []):
        hold(node["hostPath"])
    for m in plan.get("mounts", []):
        if m["bind"]:
            hold(m["hostPath"])
    _mount(libc, "tmpfs", "/dev", "tmpfs", MS_NOSUID, "mode=755,size=65536k")
    for name in basics:
        _create_target(f"/dev/{name}", like_dir=False)
        _bind(libc, held[f"/dev/{name}"], f"/dev/{name}")
    for name, target in BASIC_LINKS.items():
        os.symlink(target, f"/dev/{name}")
    os.mkdir("/dev/pts", 0o755)
    os.mkdir("/dev/shm", 0o1777)
    _mount(libc, "shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k")
    for node in plan.get("deviceNodes", []):
        _create_target(node["path"], like_dir=False)
        _bind(libc, held[node["hostPath"]], node["path"])
    for m in plan.get("mounts", []):
        target = m["containerPath"]
        flags = 0
        for opt in m.get("options") or ():
            flags |= _MOUNT_FLAGS.get(opt, 0)
        if m["bind"]:
            src = m["hostPath"]
            if target.startswith("/dev/"):
                _create_target(target, like_dir=os.path.isdir(src))
            _bind(libc, held[src], target, flags, recursive="rbind" in (m.get("options") or ()))
        else:
            _mount(
                libc,
                m["hostPath"],
                target,
                m["type"],
                flags,
                ",".join(o for o in m.get("options") or () if o not in _MOUNT_FLAGS) or None,
            )
    for fd in held.values():
        os.close(fd)


def probe() -> None:
    """What a container start does, minus the exec: raises OSError when the OS refuses it."""
    enter({"deviceNodes": [], "mounts": []})
    st = os.stat("/dev/null")
    if not stat.S_ISCHR(st.st_mode):
        raise OSError(0, "the private /dev/null is not a character device")


def main(argv: list[str]) -> int:
    if argv[1:] == ["--probe"]:
        try:
            probe()
        except OSError as e:
            print(e.strerror or str(e), file=sys.stderr)
            return 1
        return 0
    plan_fd, status_fd = int(argv[1]), int(argv[2])
    os.set_inheritable(status_fd, False)  # closed by a successful exec: that is the kubelet's "started"
    try:
        with os.fdopen(plan_fd, "rb") as f:
            plan = json.loads(f.read())
        enter(plan)
        os.chdir(plan["cwd"])
        os.execve(plan["argv"][0], plan["argv"], plan["env"])
    except OSError as e:
        message = e.strerror or str(e)
        os.write(status_fd, message.encode(errors="replace")[:4000])
        return 127
    return 127  # not reached: execve does not return


if __name__ == "__main__":
    sys.exit(main(sys.argv))
