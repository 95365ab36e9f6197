"""Real nodes on one machine: a kubelet and a containerd v2 (CDI on, runc, a CNI bridge) per node.

Each node is what a kind node container is, minus the container. It gets

* a private mount namespace (held by one ``sleep`` process) where the node's own directories are bound
  over the paths every node uses: ``/var/lib/kubelet``, ``/var/run/cdi``, ``/run/containerd``,
  ``/var/log/pods`` and ``/var/log/containers``. A DaemonSet's hostPath (``/var/lib/kubelet/plugins``)
  therefore means this node's directory, exactly as on a kind node, and every mount the kubelet,
  containerd or a container makes stays in the namespace and vanishes with its last process;
* a bridge of its own (``gsc<run><n>``) holding the node's IP, the gateway of its pod subnet;
* a cgroup root of its own (``/gsc-<run>-<node>``, cgroupfs driver) under which its pods' cgroups live;
* its own containerd (socket, root, state, runc root) and kubelet (root dir, ports on its IP).

The network namespace stays the host's: the kubelets and their drivers reach the API server on loopback.
Nothing here survives ``stop()``: the pods' and the node's processes are killed (found by cgroup and by
mount namespace), then the cgroups, the bridge and the directories are removed. ``sweep`` does the same
from the state a node wrote, for a runner that was killed before it could.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from localkube import versions
from localkube.controlplane import Process

CGROUP_FS = Path("/sys/fs/cgroup")
# Controllers the kubelet needs on cgroup v1 (it refuses to start without them); hugetlb and others it
# uses when present.
REQUIRED_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "pids")
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
# Paths every node uses, bound to the node's own directory in its mount namespace (host path -> the
# name of the node's directory).
NODE_PATHS = {
    "/var/lib/kubelet": "kubelet",
    "/var/run/cdi": "cdi",
    "/run/containerd": "run-containerd",
    "/var/log/pods": "pod-logs",
    "/var/log/containers": "container-logs",
}
KUBELET_ROOT = "/var/lib/kubelet"
CDI_DIR = "/var/run/cdi"
KUBELET_PORT = 10250
HEALTHZ_PORT = 10248
NODE_STATE = "node.json"
CLUSTER_STATE = "cluster.json"
READY_TIMEOUT_S = 90.0


class NodeError(RuntimeError):
    """The machine cannot run a real node: one sentence naming what and how to fix it."""


# ---- what the host must give ----------------------------------------------------------------------
def cni_bin_dir() -> Path | None:
    for d in CNI_BIN_DIRS:
        if all(os.access(Path(d) / p, os.X_OK) for p in CNI_PLUGINS):
            return Path(d)
    return None


def host_problems(release: str) -> list[str]:
    """Why this machine cannot run real nodes (empty: it can). Each entry says how to fix it."""
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append("real nodes need root (a kubelet and containerd manage mounts, cgroups and bridges)")
    missing = versions.missing_node_binaries(release)
    if missing:
        problems.append(
            f"{', '.join(missing)} missing in {versions.bin_dir(release)} / {versions.node_bin_dir()}; "
            f"build them with: make kube-bin KUBE_VERSION={versions.minor_of(release)}"
        )
    if shutil.which("runc") is None:
        problems.append("runc is not installed; install it (Debian: apt-get install runc)")
    if cni_bin_dir() is None:
        problems.append(
            f"the CNI plugins {', '.join(CNI_PLUGINS)} are not in {' or '.join(CNI_BIN_DIRS)}; install "
            "them (Debian: apt-get install containernetworking-plugins)"
        )
    for tool in ("unshare", "nsenter", "mount", "ip", "setpriv"):
        if shutil.which(tool) is None:
            problems.append(f"{tool} is not on PATH; install util-linux and iproute2")
    if shutil.which("iptables") is None:
        problems.append(
            "iptables is not installed, which kube-proxy needs; install it (Debian: apt-get install iptables)"
        )
    try:
        filesystems = Path("/proc/filesystems").read_text()
    except OSError:
        filesystems = ""
    if "overlay" not in filesystems:
        problems.append("the kernel has no overlay filesystem, which containerd's snapshotter needs")
    absent = [c for c in REQUIRED_CONTROLLERS if not (CGROUP_FS / c / "cgroup.procs").exists()]
    if absent:
        problems.append(
            f"the cgroup v1 controllers {', '.join(absent)} are not mounted under {CGROUP_FS}; the "
            "kubelet needs them (cgroupfs driver)"
        )
    return problems


def cgroup_hierarchies() -> list[Path]:
    """Every mounted cgroup hierarchy (v1 controllers, the named systemd one, the unified v2 one)."""
    return sorted(p for p in CGROUP_FS.iterdir() if (p / "cgroup.procs").exists())


# ---- the plan: names, addresses and paths of the run's nodes --------------------------------------
@dataclass(frozen=True)
class NodePlan:
    name: str
    index: int
    dir: str  # host path of the node's tree
    bridge: str
    subnet: str
    ip: str
    cgroup_root: str
    kubeconfig: str = ""  # the kubelet's client identity (system:node:<name>)
    serving_cert: str = ""
    serving_key: str = ""

    @property
    def root(self) -> Path:
        return Path(self.dir)

    def host_path(self, node_path: str) -> Path:
        """Where a path the node sees (``/var/lib/kubelet/...``) lives on the host."""
        for prefix, name in NODE_PATHS.items():
            if node_path == prefix or node_path.startswith(prefix + "/"):
                return self.root / name / node_path[len(prefix) :].lstrip("/")
        return Path(node_path)


def _used_networks() -> list[ipaddress.IPv4Network]:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=False)
    nets = []
    for line in out.stdout.splitlines():
        parts = line.split()
        if "inet" in parts:
            with contextlib.suppress(ValueError):
                nets.append(ipaddress.IPv4Interface(parts[parts.index("inet") + 1]).network)
    return nets


@dataclass(frozen=True)
class ClusterPlan:
    """The run's network: a free 10.<x>.0.0/16; the API server's address on a bridge of its own (no
    ports: only this host reaches it, pods through their gateway), one /24 per node."""

    token: str
    cluster_cidr: str
    api_bridge: str
    api_ip: str
    nodes: tuple[NodePlan, ...]
    kube_proxy_kubeconfig: str = ""

    @property
    def state_file(self) -> Path:
        return Path(self.nodes[0].dir).parent / CLUSTER_STATE

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "nodes": [asdict(n) for n in self.nodes]}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ClusterPlan:
        nodes = tuple(NodePlan(**n) for n in data["nodes"])  # type: ignore[attr-defined]
        return cls(**{**data, "nodes": nodes})  # type: ignore[arg-type]

    def save(self, release: str) -> None:
        """What ``sweep`` needs to undo the cluster's network if its runner dies unseen."""
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        state = {"plan": self.to_dict(), "kube_proxy": str(versions.bin_dir(release) / "kube-proxy")}
        self.state_file.write_text(json.dumps(state, indent=2))

    def make_api_bridge(self) -> None:
        make_bridge(self.api_bridge, f"{self.api_ip}/24")

    def remove_network(self, kube_proxy: Path | None) -> None:
        if kube_proxy is not None:
            cleanup_service_rules(kube_proxy)
        delete_bridge(self.api_bridge)


def plan_nodes(names: Iterable[str], state_dir: Path) -> list[NodePlan]:
    return list(plan_cluster(names, state_dir).nodes)


def plan_cluster(names: Iterable[str], state_dir: Path) -> ClusterPlan:
    names = list(names)
    token = secrets.token_hex(2)
    used = _used_networks()
    for second in range(200, 251):
        net = ipaddress.IPv4Network(f"10.{second}.0.0/16")
        if not any(net.overlaps(u) for u in used):
            break
    else:
        raise NodeError("no free 10.200-250.0.0/16 network for the pods; remove stale bridges (ip link)")
    plans = []
    for i, name in enumerate(names, start=1):
        subnet = ipaddress.IPv4Network(f"10.{second}.{i}.0/24")
        plans.append(
            NodePlan(
                name=name,
                index=i,
                dir=str(state_dir / name),
                bridge=f"gsc{token}n{i}",
                subnet=str(subnet),
                ip=str(subnet.network_address + 1),
                cgroup_root=f"/gsc-{token}-{name}",
            )
        )
    return ClusterPlan(
        token=token,
        cluster_cidr=str(net),
        api_bridge=f"gsc{token}a",
        api_ip=str(net.network_address + 1),
        nodes=tuple(plans),
    )


BRIDGE_ALIAS = "gpu-share-conformance pid="


def make_bridge(name: str, address: str) -> None:
    """A bridge holding ``address`` (CIDR), up, its alias naming the process that owns it, so a later run
    can tell a bridge whose owner died (``sweep_stale_bridges``) from one in use."""
    _run(["ip", "link", "add", name, "type", "bridge"], f"creating bridge {name}")
    try:
        _run(["ip", "link", "set", name, "alias", f"{BRIDGE_ALIAS}{os.getpid()}"], f"naming {name}")
        _run(["ip", "addr", "add", address, "dev", name], f"addressing {name}")
        _run(["ip", "link", "set", name, "up"], f"bringing {name} up")
    except NodeError:
        delete_bridge(name)
        raise


def delete_bridge(name: str) -> None:
    subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)


def sweep_stale_bridges() -> list[str]:
    """Delete the bridges of runs whose owning process is gone (a runner killed with SIGKILL)."""
    out = subprocess.run(["ip", "-d", "-o", "link", "show", "type", "bridge"], capture_output=True, text=True)
    gone = []
    for line in out.stdout.splitlines():
        if BRIDGE_ALIAS not in line:
            continue
        name = line.split(":")[1].strip().split("@")[0]
        with contextlib.suppress(ValueError, IndexError):
            pid = int(line.split(BRIDGE_ALIAS, 1)[1].split()[0])
            if not Path(f"/proc/{pid}").exists():
                delete_bridge(name)
                gone.append(name)
    return gone


# ---- one node ---------------------------------------------------------------------------------------
@dataclass
class NodeConfig:
    release: str
    ca_cert: str
    feature_gates: dict[str, bool] = field(default_factory=dict)
    images: tuple[str, ...] = ()  # OCI archives imported into every node (pause first)
    sandbox_image: str = ""


def _run(argv: list[str], what: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        said = (proc.stderr or proc.stdout).strip().splitlines()
        raise NodeError(f"{what} failed: {said[-1] if said else f'exit {proc.returncode}'}")
    return proc.stdout


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a TOML basic string is JSON's string syntax for these paths


class RealNode:
    def __init__(self, plan: NodePlan, config: NodeConfig, log: Callable[[str], None]) -> None:
        self.plan = plan
        self.config = config
        self.log = log
        self.holder: Process | None = None
        self.containerd: Process | None = None
        self.kubelet: Process | None = None
        self.created_host_dirs: list[str] = []

    # -- paths --------------------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return self.plan.root

    @property
    def socket(self) -> Path:
        return self.root / "containerd" / "containerd.sock"

    def in_node(self, argv: list[str]) -> list[str]:
        """``argv`` run in the node's mount namespace."""
        assert self.holder is not None and self.holder.proc is not None
        return ["nsenter", "-t", str(self.holder.proc.pid), "-m", "--", *argv]

    # -- start --------------------------------------------------------------------------------------
    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for sub in (*NODE_PATHS.values(), "containerd", "cni", "logs", "driver-state"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._save_state()
        self._bridge()
        self._cgroups()
        self._namespace()
        self._start_containerd()
        self._import_images()
        self._start_kubelet()

    def _save_state(self) -> None:
        state = {
            "plan": asdict(self.plan),
            "created_host_dirs": self.created_host_dirs,
            "holder_pid": self.holder.proc.pid if self.holder and self.holder.proc else None,
        }
        (self.root / NODE_STATE).write_text(json.dumps(state, indent=2))

    def _bridge(self) -> None:
        p = self.plan
        make_bridge(p.bridge, f"{p.ip}/{ipaddress.IPv4Network(p.subnet).prefixlen}")

    def _cgroups(self) -> None:
        for h in cgroup_hierarchies():
            d = h / self.plan.cgroup_root.lstrip("/")
            try:
                d.mkdir(exist_ok=True)
            except OSError as e:
                raise NodeError(f"cannot create cgroup {d} ({e.strerror}); the VM refuses cgroups") from None
            if h.name == "cpuset":
                # A v1 cpuset starts empty and takes no task until given CPUs and memory nodes.
                for f in ("cpuset.cpus", "cpuset.mems"):
                    (d / f).write_text((h / f).read_text())

    def _namespace(self) -> None:
        for host in NODE_PATHS:
            if not os.path.lexists(host):
                os.makedirs(host, exist_ok=True)
                self.created_host_dirs.append(host)
        holder = Process(
            f"{self.plan.name}-mountns",
            ["unshare", "--mount", "--propagation", "private", "--", "sleep", "infinity"],
            self.root / "logs" / "mountns.log",
        )
        holder.start()
        self.holder = holder
        assert holder.proc is not None
        own = os.readlink("/proc/self/ns/mnt")
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{holder.proc.pid}/ns/mnt") == own:  # until unshare(2) has run
            if holder.exited() is not None or time.monotonic() > deadline:
                raise NodeError(
                    f"node {self.plan.name}: unshare --mount did not start ({holder.last_words()}); the VM "
                    "must allow mount namespaces (CAP_SYS_ADMIN)"
                )
            time.sleep(0.01)
        self._save_state()
        for host, name in NODE_PATHS.items():
            _run(
                [
                    "nsenter",
                    "-t",
                    str(holder.proc.pid),
                    "-m",
                    "--",
                    "mount",
                    "--bind",
                    str(self.root / name),
                    host,
                ],
                f"node {self.plan.name}: binding {self.root / name} over {host}",
            )

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Process:
        p = Process(
            f"{self.plan.name}-{name}", self.in_node(argv), self.root / "logs" / f"{name}.log", env=env
        )
        p.start()
        return p

    def _containerd_config(self) -> Path:
        cni = cni_bin_dir()
        d = self.root / "containerd"
        # Version 3 is containerd 2's schema. CDI is what DRA needs from the runtime; the OOM score is
        # restricted because the VM withholds CAP_SYS_RESOURCE (a pause container's -998 is refused).
        text = f"""version = 3
root = {_toml_str(str(d / "root"))}
state = "/run/containerd"
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.blockfile",
  "io.containerd.snapshotter.v1.erofs", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing", "io.containerd.nri.v1.nri",
]

[grpc]
  address = {_toml_str(str(self.socket))}

[ttrpc]
  address = {_toml_str(str(self.socket) + ".ttrpc")}

[plugins.'io.containerd.cri.v1.runtime']
  enable_cdi = true
  cdi_spec_dirs = [{_toml_str(CDI_DIR)}]
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = {_toml_str(shutil.which("runc") or "runc")}
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = [{_toml_str(str(cni))}]
    conf_dir = {_toml_str(str(self.root / "cni"))}

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = {_toml_str(self.config.sandbox_image)}

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"""
        path = d / "config.toml"
        d.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def _cni_config(self) -> None:
        p = self.plan
        conf = {
            "cniVersion": "1.0.0",
            "name": "gsc",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": p.bridge,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": p.subnet, "gateway": p.ip}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.root / "cni" / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (self.root / "cni").mkdir(parents=True, exist_ok=True)
        (self.root / "cni" / "10-bridge.conflist").write_text(json.dumps(conf, indent=2))

    def _start_containerd(self) -> None:
        self._cni_config()
        cfg = self._containerd_config()
        bins = versions.node_bin_dir()
        env = {**os.environ, "PATH": f"{bins}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"}
        self.containerd = self._spawn("containerd", [str(bins / "containerd"), "--config", str(cfg)], env)
        self._wait(lambda: self.socket.is_socket(), self.containerd, "containerd to serve", 30)

    def _import_images(self) -> None:
        ctr = str(versions.node_bin_dir() / "ctr")
        t0 = time.monotonic()
        for tar in self.config.images:
            _run(
                [
                    ctr,
                    "--address",
                    str(self.socket),
                    "-n",
                    "k8s.io",
                    "images",
                    "import",
                    "--all-platforms",
                    tar,
                ],
                f"node {self.plan.name}: importing {tar}",
            )
        self.log(
            f"localkube: node {self.plan.name}: {len(self.config.images)} image(s) imported in "
            f"{time.monotonic() - t0:.1f}s"
        )

    def _kubelet_config(self) -> Path:
        p = self.plan
        # JSON is YAML: the kubelet reads it as its config file. cgroup v1 needs failCgroupV1: false from
        # 1.35 on; eviction and image GC would act on the host's disk, which all nodes share here, so they
        # are off (as kind turns eviction off).
        config: dict[str, object] = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": self.config.ca_cert},
            },
            "authorization": {"mode": "Webhook"},
            "address": p.ip,
            "port": KUBELET_PORT,
            "readOnlyPort": 0,
            "healthzBindAddress": p.ip,
            "healthzPort": HEALTHZ_PORT,
            "tlsCertFile": p.serving_cert,
            "tlsPrivateKeyFile": p.serving_key,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": p.cgroup_root,
            "failCgroupV1": False,
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "evictionHard": {
                "memory.available": "0%",
                "nodefs.available": "0%",
                "nodefs.inodesFree": "0%",
                "imagefs.available": "0%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "podCIDR": p.subnet,
            "resolvConf": "",
            "serializeImagePulls": False,
            "fileCheckFrequency": "5s",
            # A pod whose claims could not be prepared (its driver was restarting) is tried again at the
            # kubelet's next sync of it: every 10 s rather than the default minute, which only slows the
            # suite's waits (the verdict is the same).
            "syncFrequency": "10s",
            "nodeStatusReportFrequency": "10s",
        }
        if self.config.feature_gates:
            config["featureGates"] = dict(sorted(self.config.feature_gates.items()))
        path = self.root / "kubelet-config.yaml"
        self.root.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config, indent=2))
        return path

    def _start_kubelet(self) -> None:
        p = self.plan
        cfg = self._kubelet_config()
        kubelet = versions.bin_dir(self.config.release) / "kubelet"
        self.kubelet = self._spawn(
            "kubelet",
            [
                str(kubelet),
                f"--config={cfg}",
                f"--kubeconfig={p.kubeconfig}",
                f"--root-dir={KUBELET_ROOT}",
                f"--hostname-override={p.name}",
                f"--node-ip={p.ip}",
                "--v=1",
            ],
        )

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until the kubelet's healthz answers ok (it has synced with the runtime and registered)."""
        url = f"http://{self.plan.ip}:{HEALTHZ_PORT}/healthz"

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    return bool(r.status == 200 and r.read().strip() == b"ok")
            except OSError:
                return False

        assert self.kubelet is not None
        self._wait(healthy, self.kubelet, "the kubelet to be healthy", timeout)

    def _wait(self, ready: Callable[[], bool], proc: Process | None, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.02
        while not ready():
            if proc is not None and proc.exited() is not None:
                raise NodeError(
                    f"node {self.plan.name}: {proc.name} exited with code {proc.exited()} while waiting for "
                    f"{what}: {proc.last_words()} (log {proc.log_path})"
                )
            if time.monotonic() > deadline:
                last = proc.last_words() if proc else ""
                raise NodeError(
                    f"node {self.plan.name}: timed out after {timeout:.0f}s waiting for {what}: {last}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    # -- stop ---------------------------------------------------------------------------------------
    def stop(self) -> None:
        if self.kubelet is not None:
            self.kubelet.stop(grace=5)
        holder_pid = self.holder.proc.pid if self.holder and self.holder.proc else None
        kill_node_processes(self.plan, holder_pid)
        for p in (self.containerd, self.holder):
            if p is not None:
                p.stop(grace=2)
        remove_node(self.plan, self.created_host_dirs if self.holder else [])


# ---- the Service network: one kube-proxy for all nodes (they share the host's network namespace) ------
class KubeProxy:
    """kube-proxy in iptables mode, so that a pod reaches the API server at the ``kubernetes`` Service's
    ClusterIP, as the in-cluster config of a DaemonSet pod does. One serves every node: kind runs one per
    node because each node there has a network namespace of its own; here they share the host's."""

    def __init__(self, cluster: ClusterPlan, release: str, work: Path) -> None:
        self.cluster = cluster
        self.binary = versions.bin_dir(release) / "kube-proxy"
        self.work = work
        self.proc: Process | None = None

    def config(self) -> Path:
        from localkube.controlplane import free_port

        # conntrack sizes 0: leave the host's as they are (the VM may refuse the sysctls).
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": self.cluster.kube_proxy_kubeconfig},
            "mode": "iptables",
            "clusterCIDR": self.cluster.cluster_cidr,
            "hostnameOverride": self.cluster.nodes[0].name,
            "bindAddress": "127.0.0.1",
            "healthzBindAddress": f"127.0.0.1:{free_port()}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            "conntrack": {"maxPerCore": 0, "min": 0},
            "iptables": {"syncPeriod": "10s", "minSyncPeriod": "0s"},
        }
        path = self.work / "kube-proxy.yaml"
        self.work.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config, indent=2))
        return path

    def start(self) -> None:
        self.proc = Process(
            "kube-proxy", [str(self.binary), f"--config={self.config()}"], self.work / "kube-proxy.log"
        )
        self.proc.start()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(grace=5)
            self.proc = None
        cleanup_service_rules(self.binary)


def cleanup_service_rules(kube_proxy: Path) -> None:
    """kube-proxy's own removal of the iptables and nftables rules it wrote (they outlive it)."""
    if os.access(kube_proxy, os.X_OK):
        subprocess.run([str(kube_proxy), "--cleanup"], capture_output=True, check=False, timeout=60)


# Chains a kubelet (its iptables canary and hint) and kube-proxy (its localnet firewall) leave in the host's
# tables, which all nodes share here: (table, chain, the built-in chains that jump to it).
HOST_CHAINS = (
    ("mangle", "KUBE-IPTABLES-HINT", ()),
    ("mangle", "KUBE-KUBELET-CANARY", ()),
    ("nat", "KUBE-KUBELET-CANARY", ()),
    ("filter", "KUBE-KUBELET-CANARY", ()),
    ("filter", "KUBE-FIREWALL", ("INPUT", "OUTPUT")),
)


def _others_running(names: tuple[str, ...] = ("kubelet", "kube-proxy")) -> bool:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() in names:
                    return True
    return False


def remove_host_rules() -> None:
    """The chains kubelets and kube-proxy left in the host's iptables, once none of them runs here (another
    cluster's would still need them)."""
    if _others_running():
        return
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            continue
        for table, chain, jumps in HOST_CHAINS:
            steps = [["-D", parent, "-j", chain] for parent in jumps] + [["-F", chain], ["-X", chain]]
            for step in steps:
                subprocess.run([tool, "-t", table, *step], capture_output=True, check=False)


# ---- teardown, shared by stop() and sweep() --------------------------------------------------------
def _cgroup_pids(cgroup_root: str) -> set[int]:
    pids: set[int] = set()
    for h in cgroup_hierarchies():
        base = h / cgroup_root.lstrip("/")
        if not base.is_dir():
            continue
        for procs in base.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids |= {int(x) for x in procs.read_text().split()}
    return pids


def _namespace_pids(holder_pid: int | None) -> set[int]:
    if holder_pid is None:
        return set()
    try:
        ns = os.readlink(f"/proc/{holder_pid}/ns/mnt")
    except OSError:
        return set()
    if ns == os.readlink("/proc/self/ns/mnt"):
        return set()
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(entry / "ns" / "mnt") == ns:
                    found.add(int(entry.name))
    return found


def kill_node_processes(plan: NodePlan, holder_pid: int | None, timeout: float = 10.0) -> None:
    """SIGKILL the node's pods (its cgroups) and its own processes (its mount namespace: containerd, the
    shims, the drivers), until none is left."""
    deadline = time.monotonic() + timeout
    while True:
        pids = (_cgroup_pids(plan.cgroup_root) | _namespace_pids(holder_pid)) - {os.getpid()}
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise NodeError(f"node {plan.name}: processes {sorted(pids)} survived SIGKILL for {timeout:.0f}s")
        time.sleep(0.05)


def remove_node(plan: NodePlan, created_host_dirs: Iterable[str]) -> None:
    """The node's cgroups (deepest first, once empty), its bridge, its tree, and the empty mount points it
    had to create on the host."""
    for h in cgroup_hierarchies():
        base = h / plan.cgroup_root.lstrip("/")
        if not base.is_dir():
            continue
        dirs = sorted((d for d in base.rglob("*") if d.is_dir()), key=lambda d: len(d.parts), reverse=True)
        for d in [*dirs, base]:
            for _ in range(50):  # a killed task leaves its cgroup a moment after it is reaped
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
    delete_bridge(plan.bridge)
    shutil.rmtree(plan.dir, ignore_errors=True)
    # Only once no kubelet runs here: removing a directory that another run's node namespace has a bind
    # mount on detaches that mount there (Linux >= 3.18), and its kubelet would then write to the host.
    if _others_running(("kubelet",)):
        return
    for host in created_host_dirs:
        with contextlib.suppress(OSError):
            os.removedirs(host)


def sweep(state_dir: Path) -> list[str]:
    """Remove what nodes under ``state_dir`` left (their runner was killed): the names swept."""
    swept: list[str] = []
    if not state_dir.is_dir():
        return swept
    cluster: tuple[ClusterPlan, Path] | None = None
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        state = json.loads((state_dir / CLUSTER_STATE).read_text())
        cluster = ClusterPlan.from_dict(state["plan"]), Path(state["kube_proxy"])
    for state_file in sorted(state_dir.glob(f"*/{NODE_STATE}")):
        try:
            state = json.loads(state_file.read_text())
            plan = NodePlan(**state["plan"])
        except (OSError, ValueError, TypeError, KeyError):
            continue
        holder = state.get("holder_pid")
        if holder is not None and not _is_holder(holder):
            holder = None
        kill_node_processes(plan, holder)
        remove_node(plan, state.get("created_host_dirs") or [])
        swept.append(plan.name)
    if cluster is not None:
        cluster[0].remove_network(cluster[1])
        (state_dir / CLUSTER_STATE).unlink(missing_ok=True)
        remove_host_rules()
    return swept


def _is_holder(pid: int) -> bool:
    """Whether ``pid`` is still this node's mount-namespace holder (not a recycled pid)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"sleep" in argv and b"infinity" in argv
