"""Container images for ``--cluster local``'s real nodes, without Docker and without a registry.

The nodes' containerd gets its images from OCI image-layout tarballs (``ctr -n k8s.io images import``),
which this module writes with the standard library alone: deterministic layers (sorted entries, mtime 0,
uid/gid 0, gzip mtime 0), so the same inputs give the same digests and a cache keyed by them is sound.

Two images come from what is installed on this machine:

- the pod image: Debian's statically linked busybox with its applets, enough for the suite's pod command
  (``sh -c "env; <probe>; exec sleep 3600"``), named after the busybox version really in it;
- the reference driver's image: what ``deployments/container/Dockerfile`` describes, assembled from the
  interpreter running us, the site-packages of the driver's pinned distributions and the shared
  libraries they load.

``python -m localkube.images pod|driver --out DIR`` builds one and prints its reference and tarball.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.metadata
import io
import json
import os
import platform
import re
import shutil
import stat
import struct
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
# containerd's importer names an image by this annotation first; other OCI tools read the standard one.
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"

POD_REPOSITORY = "localhost/gpu-share-conformance/pod"
DRIVER_REF = "localhost/gpu-share-conformance/driver:local"
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
DRIVER_IMAGE_TOOLS = ("sh", "test", "[", "ls", "cat")
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# deployments/container/requirements.txt pins these; their own runtime requirements come along.
DRIVER_DISTRIBUTIONS = (
    "kubernetes",
    "grpcio",
    "protobuf",
    "PyYAML",
    "nvidia-ml-py",
    "prometheus-client",
    "urllib3",
)
# Parts of the standard library a driver never imports (tests alone are 120 MB); site-packages and the
# static library for embedding are not the standard library at all.
_STDLIB_SKIP_TOP = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "site-packages", "lib2to3"}
_STDLIB_SKIP_ANYWHERE = {"__pycache__", "test", "tests"}
# lib-dynload modules whose libraries the dropped packages would need (Tk is often not even installed).
_STDLIB_SKIP_EXT = re.compile(r"^_tkinter\.")
_CHUNK = 1 << 20
# The tarballs go from this disk to a local containerd, never over a network: level 1 builds the driver
# image in 2.5 s instead of 6 s on 2 cores for 20% more bytes.
COMPRESSLEVEL = 1


class ImageError(RuntimeError):
    """An image cannot be built from what this machine has; the message says what to install."""


class BusyboxMissing(ImageError):
    pass


@dataclass(frozen=True)
class File:
    """A regular file: ``source`` is a host file (mode defaults to its own) or the content itself."""

    path: str
    source: Path | bytes
    mode: int | None = None


@dataclass(frozen=True)
class Dir:
    path: str
    mode: int = 0o755


@dataclass(frozen=True)
class Link:
    """A symbolic link to ``target`` (absolute or relative, as the image should see it)."""

    path: str
    target: str


Entry = File | Dir | Link


@dataclass(frozen=True)
class ImageConfig:
    entrypoint: Sequence[str] | None = None
    cmd: Sequence[str] | None = None
    env: Sequence[str] = (PATH_ENV,)
    working_dir: str | None = None
    user: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    def as_json(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Layer:
    descriptor: Descriptor
    diff_id: str
    blob: Path


@dataclass(frozen=True)
class Image:
    ref: str
    tarball: Path
    manifest: Descriptor
    layers: tuple[Layer, ...]
    reused: bool

    @property
    def size(self) -> int:
        return self.tarball.stat().st_size


# ---------------------------------------------------------------------------------------------- layers


def _image_path(path: str) -> str:
    """The tar member name of an image path: relative, normalised, never escaping the root."""
    parts = [p for p in PurePosixPath("/" + path).parts[1:] if p not in ("", ".")]
    if not parts or ".." in parts:
        raise ImageError(f"image path {path!r} is not a path inside the image")
    return "/".join(parts)


def _complete(entries: Iterable[Entry]) -> dict[str, Entry]:
    """Entries by member name, with every missing parent directory added (0755) so the layer says who
    owns each directory instead of leaving it to the unpacker."""
    out: dict[str, Entry] = {}
    for entry in entries:
        name = _image_path(entry.path)
        previous = out.get(name)
        if previous is not None and _identity(previous) != _identity(entry):
            raise ImageError(f"image path /{name} is given twice, differently: {previous} and {entry}")
        out[name] = entry
    for name in list(out):
        parent = PurePosixPath(name).parent
        while str(parent) != ".":
            above = out.setdefault(str(parent), Dir("/" + str(parent)))
            if not isinstance(above, Dir):
                # An unpacker would have to follow a link (or replace a file) to put it there.
                raise ImageError(f"image path /{name} lies under /{parent}, which is not a directory")
            parent = parent.parent
    return out


def _identity(entry: Entry) -> tuple[object, ...]:
    if isinstance(entry, File):
        return ("file", _file_mode(entry), _content_digest(entry.source))
    if isinstance(entry, Dir):
        return ("dir", entry.mode)
    return ("link", entry.target)


def _file_mode(entry: File) -> int:
    if entry.mode is not None:
        return entry.mode
    if isinstance(entry.source, bytes):
        return 0o644
    return stat.S_IMODE(entry.source.stat().st_mode)


def _content_digest(source: Path | bytes) -> str:
    if isinstance(source, bytes):
        return hashlib.sha256(source).hexdigest()
    digest = hashlib.sha256()
    with source.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _sorted(entries: dict[str, Entry]) -> list[tuple[str, Entry]]:
    # By path components, so a directory's members follow it directly ("a/b" before "a-b/...").
    return sorted(entries.items(), key=lambda item: item[0].split("/"))


def layer_key(entries: Iterable[Entry]) -> str:
    """A digest of everything a layer's bytes depend on (contents, not host timestamps): its cache key."""
    digest = hashlib.sha256(b"gsc-layer-v1\n")
    for name, entry in _sorted(_complete(entries)):
        digest.update(json.dumps([name, *_identity(entry)]).encode() + b"\n")
    return digest.hexdigest()


class _Hashing(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to ``sink``."""

    def __init__(self, sink: BinaryIO | None) -> None:
        self.sink = sink
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.digest.update(data)
        self.size += len(data)
        if self.sink is not None:
            self.sink.write(data)
        return len(data)


def _tarinfo(name: str, kind: bytes, mode: int, size: int = 0, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.linkname = target
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_layer_tar(entries: Iterable[Entry], out: BinaryIO) -> None:
    """The uncompressed layer: a deterministic tar of the entries (and their parent directories)."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name, entry in _sorted(_complete(entries)):
            if isinstance(entry, Dir):
                tar.addfile(_tarinfo(name, tarfile.DIRTYPE, entry.mode))
            elif isinstance(entry, Link):
                tar.addfile(_tarinfo(name, tarfile.SYMTYPE, 0o777, target=entry.target))
            elif isinstance(entry.source, bytes):
                info = _tarinfo(name, tarfile.REGTYPE, _file_mode(entry), len(entry.source))
                tar.addfile(info, io.BytesIO(entry.source))
            else:
                with entry.source.open("rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    tar.addfile(_tarinfo(name, tarfile.REGTYPE, _file_mode(entry), size), f)


def build_layer(entries: Sequence[Entry], cache_dir: Path, compresslevel: int = COMPRESSLEVEL) -> Layer:
    """The layer's gzip blob in ``cache_dir``, reused when the same entries built it before."""
    key = layer_key(entries)
    meta_path = cache_dir / f"layer-{key}.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        blob = cache_dir / meta["blob"]
        if blob.is_file() and blob.stat().st_size == meta["size"]:
            return Layer(Descriptor(MEDIA_LAYER, meta["digest"], meta["size"]), meta["diff_id"], blob)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cache_dir, prefix=".layer-", delete=False) as raw:
        try:
            compressed = _Hashing(raw)  # type: ignore[arg-type]
            # filename="" and mtime=0: the gzip header would otherwise carry the temp name and the clock.
            with gzip.GzipFile(
                filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=compresslevel
            ) as gz:
                uncompressed = _Hashing(gz)  # type: ignore[arg-type]
                write_layer_tar(entries, uncompressed)  # type: ignore[arg-type]
            digest = "sha256:" + compressed.digest.hexdigest()
            blob = cache_dir / f"blob-{digest[7:]}.tar.gz"
            _publish(raw.name, blob)
        except BaseException:
            os.unlink(raw.name)
            raise
    meta = {"blob": blob.name, "digest": digest, "size": compressed.size}
    meta["diff_id"] = "sha256:" + uncompressed.digest.hexdigest()
    _write_atomic(meta_path, json.dumps(meta).encode())
    return Layer(Descriptor(MEDIA_LAYER, digest, compressed.size), str(meta["diff_id"]), blob)


def _write_atomic(path: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".tmp-", delete=False) as f:
        f.write(data)
    _publish(f.name, path)


def _publish(temp: str, path: Path) -> None:
    # Temporary files are created 0600; what lands in the cache is readable like any build output.
    os.chmod(temp, 0o644)
    os.replace(temp, path)


# ---------------------------------------------------------------------------------------------- images


def host_platform() -> dict[str, str]:
    """The OCI platform of this machine (GOARCH names, as containerd matches them)."""
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine)
    if arch is None:
        arch = {"ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}.get(machine, machine)
    return {"architecture": arch, "os": "linux"}


def _canonical(document: object) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _config_document(config: ImageConfig, layers: Sequence[Layer]) -> dict[str, object]:
    runtime: dict[str, object] = {"Env": list(config.env)}
    if config.entrypoint is not None:
        runtime["Entrypoint"] = list(config.entrypoint)
    if config.cmd is not None:
        runtime["Cmd"] = list(config.cmd)
    if config.working_dir:
        runtime["WorkingDir"] = config.working_dir
    if config.user:
        runtime["User"] = config.user
    if config.labels:
        runtime["Labels"] = dict(config.labels)
    # No "created" and no history timestamps: the digest must depend on the inputs only.
    return {
        **host_platform(),
        "config": runtime,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created_by": "gpu-share-conformance localkube.images"} for _ in layers],
    }


def _check_ref(ref: str) -> None:
    # Lower-case repository path with a tag: what containerd's reference parser and the kubelet accept.
    if not re.fullmatch(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?::\d+)?(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*"
                        r":[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", ref):  # fmt: skip
        raise ImageError(f"image reference {ref!r} is not of the form host/path/name:tag")


def _slug(ref: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", ref.split("/", 1)[-1])


def write_image(
    ref: str,
    layers: Sequence[Sequence[Entry]],
    config: ImageConfig,
    out_dir: Path,
    compresslevel: int = COMPRESSLEVEL,
) -> Image:
    """An OCI image-layout tarball of ``layers`` (bottom first) named ``ref``, in ``out_dir``.

    Layers are cached in ``out_dir/layers`` by :func:`layer_key`; the tarball is named after its
    manifest digest and reused when it exists, so an unchanged image costs one pass hashing its inputs.
    """
    _check_ref(ref)
    out_dir = Path(out_dir)
    built = tuple(build_layer(entries, out_dir / "layers", compresslevel) for entries in layers)
    config_bytes = _canonical(_config_document(config, built))
    config_desc = Descriptor(
        MEDIA_CONFIG, "sha256:" + hashlib.sha256(config_bytes).hexdigest(), len(config_bytes)
    )
    manifest_bytes = _canonical(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": config_desc.as_json(),
            "layers": [layer.descriptor.as_json() for layer in built],
        }
    )
    manifest = Descriptor(
        MEDIA_MANIFEST, "sha256:" + hashlib.sha256(manifest_bytes).hexdigest(), len(manifest_bytes)
    )
    # The name is part of the tarball (index.json), so it is part of the tarball's file name too.
    name_key = hashlib.sha256(f"{ref}\n{manifest.digest}".encode()).hexdigest()[:16]
    tarball = out_dir / f"{_slug(ref)}-{name_key}.tar"
    if tarball.is_file():
        return Image(ref, tarball, manifest, built, reused=True)
    index_bytes = _canonical(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": [
                {
                    **manifest.as_json(),
                    "platform": host_platform(),
                    "annotations": {ANNOTATION_CONTAINERD_NAME: ref, ANNOTATION_REF_NAME: ref},
                }
            ],
        }
    )
    members: list[tuple[str, bytes | Path]] = [
        ("oci-layout", _canonical({"imageLayoutVersion": "1.0.0"})),
        ("index.json", index_bytes),
        (f"blobs/sha256/{config_desc.digest[7:]}", config_bytes),
        (f"blobs/sha256/{manifest.digest[7:]}", manifest_bytes),
    ]
    members += [(f"blobs/sha256/{layer.descriptor.digest[7:]}", layer.blob) for layer in built]
    seen: set[str] = set()
    with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".image-", delete=False) as raw:
        try:
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for directory in ("blobs", "blobs/sha256"):
                    tar.addfile(_tarinfo(directory, tarfile.DIRTYPE, 0o755))
                for name, content in members:
                    if name in seen:  # two identical layers share one blob
                        continue
                    seen.add(name)
                    if isinstance(content, bytes):
                        tar.addfile(_tarinfo(name, tarfile.REGTYPE, 0o644, len(content)), io.BytesIO(content))
                    else:
                        with content.open("rb") as f:
                            info = _tarinfo(name, tarfile.REGTYPE, 0o644, os.fstat(f.fileno()).st_size)
                            tar.addfile(info, f)
            _publish(raw.name, tarball)
        except BaseException:
            os.unlink(raw.name)
            raise
    return Image(ref, tarball, manifest, built, reused=False)


# ------------------------------------------------------------------------------------------ host files


def host_tree(
    source: Path, dest: str, skip: Callable[[PurePosixPath], bool] | None = None
) -> Iterator[Entry]:
    """A host directory as entries under ``dest``; symlinks stay symlinks. ``skip`` gets each path
    relative to ``source`` and prunes it (and, for a directory, everything below)."""
    source = Path(source)
    for root, dirs, files in os.walk(source):
        here = Path(root)
        rel_root = PurePosixPath(here.relative_to(source).as_posix())
        kept = []
        for name in sorted(dirs):
            rel = rel_root / name
            if skip is not None and skip(rel):
                continue
            if (here / name).is_symlink():
                yield Link(f"{dest}/{rel}", os.readlink(here / name))
            else:
                kept.append(name)
                yield Dir(f"{dest}/{rel}", stat.S_IMODE((here / name).stat().st_mode))
        dirs[:] = kept
        for name in sorted(files):
            rel = rel_root / name
            if skip is not None and skip(rel):
                continue
            path = here / name
            if path.is_symlink():
                yield Link(f"{dest}/{rel}", os.readlink(path))
            elif path.is_file():
                yield File(f"{dest}/{rel}", path)


def host_path(path: str) -> list[Entry]:
    """A host file at its own path in the image, with every symlink on the way to it (a shared
    library's soname link, /lib64's loader link) kept as a symlink and its target copied too."""
    out: list[Entry] = []
    current = path
    for _ in range(40):
        if not os.path.islink(current):
            out.append(File(current, Path(current)))
            return out
        target = os.readlink(current)
        out.append(Link(current, target))
        current = os.path.normpath(os.path.join(os.path.dirname(current), target))
    raise ImageError(f"{path}: too many levels of symbolic links")


def _is_static_elf(path: Path) -> bool:
    """True for an ELF executable without a program interpreter (PT_INTERP), i.e. statically linked."""
    with path.open("rb") as f:
        ident = f.read(64)
        if len(ident) < 64 or ident[:4] != b"\x7fELF":
            return False
        is64 = ident[4] == 2
        order = "<" if ident[5] == 1 else ">"
        if is64:
            (phoff,) = struct.unpack_from(order + "Q", ident, 0x20)
            phentsize, phnum = struct.unpack_from(order + "HH", ident, 0x36)
        else:
            (phoff,) = struct.unpack_from(order + "I", ident, 0x1C)
            phentsize, phnum = struct.unpack_from(order + "HH", ident, 0x2A)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    pt_interp = 3
    return all(struct.unpack_from(order + "I", table, i * phentsize)[0] != pt_interp for i in range(phnum))


# ------------------------------------------------------------------------------------------- pod image


def find_busybox() -> Path:
    on_path = shutil.which("busybox")
    candidates = [*BUSYBOX_CANDIDATES, *([on_path] if on_path else [])]
    for candidate in candidates:
        path = Path(candidate)
        if path.is_file() and _is_static_elf(path):
            return path
    found = [c for c in candidates if Path(c).is_file()]
    what = f"{found[0]} is dynamically linked" if found else "no /bin/busybox"
    raise BusyboxMissing(
        f"the pod image needs a statically linked busybox ({what}); install it with "
        "`apt-get install busybox-static`"
    )


def busybox_version(busybox: Path) -> str:
    result = subprocess.run([str(busybox), "--help"], capture_output=True, text=True, check=False)
    first = (result.stdout or result.stderr).splitlines()[:1]
    match = re.match(r"BusyBox v(\d+(?:\.\d+)+)", first[0] if first else "")
    if match is None:
        raise ImageError(f"{busybox} --help does not start with 'BusyBox v<version>': {first!r}")
    return match.group(1)


def busybox_applets(busybox: Path) -> list[str]:
    """Image paths of the applets (``--list-full`` gives each its usual directory)."""
    result = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True, check=False)
    paths = [line.strip() for line in result.stdout.splitlines() if "/" in line]
    if result.returncode != 0 or not paths:
        result = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True)
        paths = [f"bin/{name.strip()}" for name in result.stdout.splitlines() if name.strip()]
    return sorted({"/" + p for p in paths if PurePosixPath(p).name != "busybox"})


def _etc(users: Sequence[tuple[str, int, str, str]]) -> list[Entry]:
    passwd = "".join(f"{n}:x:{uid}:{uid}:{n}:{home}:{shell}\n" for n, uid, home, shell in users)
    group = "".join(f"{n}:x:{uid}:\n" for n, uid, _, _ in users)
    return [File("/etc/passwd", passwd.encode(), 0o644), File("/etc/group", group.encode(), 0o644)]


def _base_dirs(root_home: int = 0o700) -> list[Entry]:
    # Mount points the runtime fills; /tmp sticky and world-writable as on any Linux root.
    return [
        Dir("/proc", 0o555),
        Dir("/sys", 0o555),
        Dir("/dev"),
        Dir("/tmp", 0o1777),
        Dir("/root", root_home),
    ]


def pod_rootfs(busybox: Path) -> list[Entry]:
    entries: list[Entry] = [File("/bin/busybox", busybox, 0o755)]
    for applet in busybox_applets(busybox):
        entries.append(Link(applet, "/bin/busybox"))
    entries += _etc([("root", 0, "/root", "/bin/sh"), ("nobody", 65534, "/nonexistent", "/bin/false")])
    entries += _base_dirs()
    return entries


def pod_image(out_dir: Path) -> tuple[str, Path]:
    """The image of the suite's pods: busybox's sh, env, sleep, test and the rest of its applets."""
    busybox = find_busybox()
    ref = f"{POD_REPOSITORY}:busybox-{busybox_version(busybox)}"
    image = write_image(ref, [pod_rootfs(busybox)], ImageConfig(cmd=["sh"]), Path(out_dir))
    return image.ref, image.tarball


PAUSE_REPOSITORY = "localhost/gpu-share-conformance/pause"


def pause_image(pause: Path, out_dir: Path) -> tuple[str, Path]:
    """The pod sandbox's image: the pause process ``make kube-bin`` built (localkube/pause), alone. Tagged
    with its content digest, so a rebuilt binary is a new image rather than a stale one under an old tag."""
    if not os.access(pause, os.X_OK):
        raise ImageError(f"the pause binary {pause} is missing; build it with make kube-bin")
    tag = _content_digest(pause)[:12]
    config = ImageConfig(entrypoint=["/pause"], env=())
    image = write_image(f"{PAUSE_REPOSITORY}:{tag}", [[File("/pause", pause, 0o755)]], config, Path(out_dir))
    return image.ref, image.tarball


# ---------------------------------------------------------------------------------------- driver image


def _canonical_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def distribution_closure(names: Iterable[str]) -> list[importlib.metadata.Distribution]:
    """The installed distributions ``names`` need at run time: themselves and, transitively, every
    requirement whose environment marker holds here without extras."""
    try:
        from packaging.requirements import Requirement
    except ImportError as exc:  # pragma: no cover - pytest and pip bring it into every venv we run from
        raise ImageError("reading requirement markers needs `packaging`; pip install packaging") from exc
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        key = _canonical_name(name)
        if key in found:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError as exc:
            raise ImageError(
                f"the driver image needs the distribution {name!r}, which is not installed in "
                f"{sys.prefix}; run make setup"
            ) from exc
        found[key] = dist
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return [found[k] for k in sorted(found)]


def distribution_entries(dist: importlib.metadata.Distribution, site_packages: str) -> list[Entry]:
    """The distribution's installed files (its RECORD) under ``site_packages`` in the image; scripts
    outside site-packages and byte code are left out."""
    if dist.files is None:
        raise ImageError(f"{dist.metadata['Name']} has no RECORD of its files; reinstall it with pip")
    entries: list[Entry] = []
    for rel in dist.files:
        parts = PurePosixPath(str(rel)).parts
        if parts[0] == ".." or "__pycache__" in parts or str(rel).endswith(".pyc"):
            continue
        host = Path(str(dist.locate_file(rel)))
        if host.is_symlink():
            entries.append(Link(f"{site_packages}/{rel}", os.readlink(host)))
        elif host.is_file():
            entries.append(File(f"{site_packages}/{rel}", host))
    return entries


_LDD_LINE = re.compile(r"^\s*(?:(\S+)\s+=>\s+)?(\S+)?\s*\(0x[0-9a-f]+\)\s*$")


def shared_library_closure(binaries: Iterable[str]) -> tuple[list[str], list[str]]:
    """(libraries, missing): every shared library and loader ``ldd`` resolves for the binaries, and
    'binary: library' for each it cannot find. ldd walks the whole dependency tree itself."""
    binaries = sorted(set(binaries))
    libraries: set[str] = set()
    missing: list[str] = []
    for start in range(0, len(binaries), 200):
        batch = binaries[start : start + 200]
        result = subprocess.run(["ldd", *batch], capture_output=True, text=True, check=False)
        current = batch[0]
        for line in result.stdout.splitlines():
            if not line.startswith(("\t", " ")) and line.endswith(":"):
                current = line[:-1]
                continue
            if "=> not found" in line:
                missing.append(f"{current}: {line.split()[0]}")
                continue
            match = _LDD_LINE.match(line)
            if match and match.group(2) and match.group(2).startswith("/"):
                libraries.add(match.group(2))
    return sorted(libraries), missing


def _interpreter() -> tuple[Path, Path, str]:
    """(prefix, real interpreter binary, pythonX.Y) of the Python running us, seen through any venv."""
    prefix = Path(sys.base_prefix)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    binary = Path(os.path.realpath(sys.executable))
    if not str(binary).startswith(str(prefix) + "/"):
        binary = prefix / "bin" / version
    if not binary.is_file():
        raise ImageError(f"cannot find the interpreter binary of {sys.executable} under {prefix}")
    return prefix, binary, version


def _skip_stdlib(rel: PurePosixPath) -> bool:
    parts = rel.parts
    if parts[0] in _STDLIB_SKIP_TOP or parts[0].startswith("config-"):
        return True
    if _STDLIB_SKIP_ANYWHERE.intersection(parts) or rel.suffix == ".pyc":
        return True
    return parts[0] == "lib-dynload" and bool(_STDLIB_SKIP_EXT.match(rel.name))


def driver_layers(repo_root: Path) -> tuple[list[list[Entry]], list[str]]:
    """([runtime, dependencies, app], missing libraries): three layers, so that a change to the driver's
    code rebuilds only the small top one."""
    prefix, binary, version = _interpreter()
    stdlib = Path(sysconfig.get_paths(vars={"installed_base": str(prefix), "base": str(prefix)})["stdlib"])
    site_packages = f"{prefix}/lib/{version}/site-packages"
    runtime: list[Entry] = [*host_path(str(binary)), *host_tree(stdlib, str(stdlib), _skip_stdlib)]
    bin_dir = f"{prefix}/bin"
    for alias in (
        f"{bin_dir}/python3",
        f"{bin_dir}/python",
        "/usr/local/bin/python",
        "/usr/local/bin/python3",
    ):
        if alias != str(binary):
            runtime.append(Link(alias, str(binary)))
    runtime += _etc(
        [("root", 0, "/root", "/bin/false"), ("driver", 10001, "/nonexistent", "/usr/sbin/nologin")]
    )
    # The interpreter keeps its own path (its RUNPATH names its prefix), which may lie under /root: the
    # image's non-root user must be able to walk there.
    runtime += _base_dirs(root_home=0o755)
    # The tools the chart's probes exec (``test -S <registration socket>``) and a shell to look around
    # with, which the Dockerfile's base image has from coreutils: busybox's, static.
    busybox = find_busybox()
    runtime.append(File("/bin/busybox", busybox, 0o755))
    runtime += [Link(f"/bin/{tool}", "/bin/busybox") for tool in DRIVER_IMAGE_TOOLS]

    dependencies: list[Entry] = [Dir(site_packages)]
    for dist in distribution_closure(DRIVER_DISTRIBUTIONS):
        dependencies += distribution_entries(dist, site_packages)

    native = [str(binary)]
    native += [str(e.source) for e in runtime + dependencies if isinstance(e, File) and _is_shared(e)]
    libraries, missing = shared_library_closure(native)
    taken = {_image_path(e.path) for e in runtime + dependencies}
    for library in libraries:
        for entry in host_path(library):
            if _image_path(entry.path) not in taken:
                runtime.append(entry)
                taken.add(_image_path(entry.path))

    repo_root = Path(repo_root)
    app: list[Entry] = [Dir("/app")]
    for package in ("driver", "drakit"):
        if not (repo_root / package / "__init__.py").is_file():
            raise ImageError(f"{repo_root} is not the repository root (no {package}/__init__.py)")
        app += host_tree(repo_root / package, f"/app/{package}", _skip_app)
    return [runtime, dependencies, app], missing


def _is_shared(entry: File) -> bool:
    name = PurePosixPath(entry.path).name
    return name.endswith(".so") or ".so." in name


def _skip_app(rel: PurePosixPath) -> bool:
    return "__pycache__" in rel.parts or rel.suffix == ".pyc"


def driver_config() -> ImageConfig:
    prefix, _, _ = _interpreter()
    return ImageConfig(
        entrypoint=["python", "-m", "driver"],
        env=[
            f"PATH=/usr/local/sbin:/usr/local/bin:{prefix}/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "PYTHONDONTWRITEBYTECODE=1",
            "PYTHONUNBUFFERED=1",
            "PYTHONPATH=/app",
        ],
        working_dir="/app",
        # As the Dockerfile: non-root by default; the chart runs it as uid 0 for the kubelet's directories.
        user="10001",
        labels={
            "org.opencontainers.image.title": "gpu-sharing-dra-driver",
            "org.opencontainers.image.description": "Reference DRA driver sharing GPUs by memory",
            "org.opencontainers.image.licenses": "Apache-2.0",
        },
    )


def driver_image(repo_root: Path, out_dir: Path, ref: str = DRIVER_REF) -> tuple[str, Path]:
    """The reference driver's image, from this machine's interpreter and the venv's distributions."""
    layers, missing = driver_layers(Path(repo_root))
    if missing:
        print(f"images: shared libraries not found, left out: {', '.join(missing)}", file=sys.stderr)
    image = write_image(ref, layers, driver_config(), Path(out_dir))
    return image.ref, image.tarball


# --------------------------------------------------------------------------------------------------- cli


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localkube.images", description=__doc__.splitlines()[0])
    parser.add_argument("image", choices=["pod", "driver"])
    parser.add_argument("--out", required=True, type=Path, help="directory for the tarball and its cache")
    parser.add_argument("--ref", default=DRIVER_REF, help=f"the driver image's name (default {DRIVER_REF})")
    parser.add_argument(
        "--repo-root", type=Path, default=Path(__file__).resolve().parents[1], help="where driver/ lives"
    )
    args = parser.parse_args(argv)
    try:
        if args.image == "pod":
            ref, tarball = pod_image(args.out)
        else:
            ref, tarball = driver_image(args.repo_root, args.out, args.ref)
    except ImageError as exc:
        print(f"images: {exc}", file=sys.stderr)
        return 4
    print(ref)
    print(tarball)
    return 0


if __name__ == "__main__":
    sys.exit(main())
