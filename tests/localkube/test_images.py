"""OCI image tarballs for the local cluster's real nodes (localkube/images.py): deterministic layers, an
archive whose index, manifest and config agree with its blobs, and images whose rootfs really runs (in a
chroot of the extracted layers; containerd itself is not part of these tests)."""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from conformance.session import Suite
from localkube import images
from localkube.images import Dir, File, ImageConfig, Link

REPO = Path(__file__).resolve().parents[2]
CHROOT = shutil.which("chroot")
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or CHROOT is None, reason="chroot into the image's rootfs needs root and chroot(8)"
)
try:
    images.find_busybox()
    NO_BUSYBOX = ""
except images.BusyboxMissing as exc:
    NO_BUSYBOX = str(exc)
needs_busybox = pytest.mark.skipif(bool(NO_BUSYBOX), reason=NO_BUSYBOX or "busybox present")


def _sample_layer(tmp: Path) -> list[images.Entry]:
    script = tmp / "hello.sh"
    script.write_text("#!/bin/sh\necho hello\n")
    script.chmod(0o750)
    return [
        File("/usr/local/bin/hello", script),
        File("/etc/motd", b"hi\n", 0o600),
        Link("/usr/local/bin/hi", "hello"),
        Dir("/tmp", 0o1777),
    ]


def _read_archive(tarball: Path) -> dict[str, bytes]:
    with tarfile.open(tarball) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def _blob(archive: dict[str, bytes], digest: str) -> bytes:
    return archive[f"blobs/sha256/{digest.removeprefix('sha256:')}"]


def _extract_rootfs(tarball: Path, dest: Path) -> Path:
    archive = _read_archive(tarball)
    index = json.loads(archive["index.json"])
    manifest = json.loads(_blob(archive, index["manifests"][0]["digest"]))
    rootfs = dest / "rootfs"
    rootfs.mkdir()
    # Trusted input (we built it): keep absolute symlinks and modes such as /tmp's 1777 as they are.
    trusted = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
    for layer in manifest["layers"]:
        layer_path = dest / "layer.tar.gz"
        layer_path.write_bytes(_blob(archive, layer["digest"]))
        with tarfile.open(layer_path) as tar:
            tar.extractall(rootfs, **trusted)  # type: ignore[arg-type]
        layer_path.unlink()
    return rootfs


def _chroot(rootfs: Path, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHROOT), str(rootfs), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=env if env is not None else {"PATH": "/usr/bin:/bin"},
        check=False,
    )


def test_the_same_entries_give_the_same_digests_whatever_the_host_timestamps(tmp_path: Path) -> None:
    entries = _sample_layer(tmp_path)
    first = images.write_image("localhost/t/img:1", [entries], ImageConfig(cmd=["sh"]), tmp_path / "a")
    os.utime(tmp_path / "hello.sh", (12345, 12345))
    second = images.write_image("localhost/t/img:1", [entries], ImageConfig(cmd=["sh"]), tmp_path / "b")
    assert first.layers[0].descriptor == second.layers[0].descriptor
    assert first.manifest == second.manifest
    assert first.tarball.read_bytes() == second.tarball.read_bytes()

    (tmp_path / "hello.sh").write_text("#!/bin/sh\necho changed\n")
    third = images.write_image("localhost/t/img:1", [entries], ImageConfig(cmd=["sh"]), tmp_path / "b")
    assert third.layers[0].diff_id != first.layers[0].diff_id
    assert third.manifest != first.manifest and third.tarball != second.tarball


def test_a_layer_is_sorted_with_parents_owned_by_root_at_time_zero(tmp_path: Path) -> None:
    layer = images.build_layer(_sample_layer(tmp_path), tmp_path / "cache")
    with gzip.open(layer.blob) as gz:
        raw = gz.read()
    with open(layer.blob, "rb") as f:
        header = f.read(10)
    assert header[4:8] == b"\0\0\0\0"  # gzip mtime
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == ["etc", "etc/motd", "tmp", "usr", "usr/local", "usr/local/bin", "usr/local/bin/hello",
                     "usr/local/bin/hi"]  # fmt: skip
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}
    modes = {m.name: m.mode for m in members}
    assert modes["usr/local/bin/hello"] == 0o750 and modes["etc/motd"] == 0o600 and modes["tmp"] == 0o1777
    assert modes["usr"] == 0o755
    assert members[names.index("usr/local/bin/hi")].linkname == "hello"
    assert layer.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()


def test_a_path_given_twice_differently_or_under_a_non_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(images.ImageError, match="given twice"):
        images.layer_key([File("/a", b"1"), File("/a", b"2")])
    images.layer_key([File("/a", b"1"), File("/a", b"1")])
    with pytest.raises(images.ImageError, match="lies under /lib64, which is not a directory"):
        images.layer_key([Link("/lib64", "lib"), File("/lib64/ld.so", b"")])
    with pytest.raises(images.ImageError, match="not a path inside the image"):
        images.layer_key([File("/../etc/passwd", b"x")])


def test_index_manifest_and_config_agree_with_their_blobs(tmp_path: Path) -> None:
    extra = [File("/etc/issue", b"second layer\n")]
    config = ImageConfig(entrypoint=["sh", "-c"], cmd=["true"], env=["PATH=/bin", "A=1"], working_dir="/tmp")
    image = images.write_image("localhost/t/img:2", [_sample_layer(tmp_path), extra], config, tmp_path / "o")
    archive = _read_archive(image.tarball)
    assert json.loads(archive["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(archive["index.json"])
    assert index["mediaType"] == images.MEDIA_INDEX and len(index["manifests"]) == 1
    entry = index["manifests"][0]
    assert entry["annotations"] == {
        "io.containerd.image.name": "localhost/t/img:2",
        "org.opencontainers.image.ref.name": "localhost/t/img:2",
    }
    assert entry["platform"] == images.host_platform()

    def checked(descriptor: dict[str, object]) -> bytes:
        blob = _blob(archive, str(descriptor["digest"]))
        assert descriptor["digest"] == "sha256:" + hashlib.sha256(blob).hexdigest()
        assert descriptor["size"] == len(blob)
        return blob

    manifest = json.loads(checked(entry))
    assert manifest["mediaType"] == entry["mediaType"] == images.MEDIA_MANIFEST
    assert manifest["config"]["mediaType"] == images.MEDIA_CONFIG
    cfg = json.loads(checked(manifest["config"]))
    layers = [checked(layer) for layer in manifest["layers"]]
    assert [layer["mediaType"] for layer in manifest["layers"]] == [images.MEDIA_LAYER] * 2
    assert cfg["rootfs"] == {
        "type": "layers",
        "diff_ids": ["sha256:" + hashlib.sha256(gzip.decompress(b)).hexdigest() for b in layers],
    }
    assert cfg["architecture"] == images.host_platform()["architecture"] and cfg["os"] == "linux"
    assert cfg["config"] == {"Entrypoint": ["sh", "-c"], "Cmd": ["true"], "Env": ["PATH=/bin", "A=1"],
                             "WorkingDir": "/tmp"}  # fmt: skip
    assert "created" not in cfg
    assert set(archive) == {"oci-layout", "index.json"} | {
        f"blobs/sha256/{d['digest'][7:]}" for d in [entry, manifest["config"], *manifest["layers"]]
    }


def test_an_unchanged_image_is_reused_and_an_unchanged_layer_not_rebuilt(tmp_path: Path) -> None:
    entries = _sample_layer(tmp_path)
    first = images.write_image("localhost/t/img:3", [entries], ImageConfig(), tmp_path / "o")
    os.utime(first.layers[0].blob, (1, 1))
    again = images.write_image("localhost/t/img:3", [entries], ImageConfig(), tmp_path / "o")
    assert again.reused and again.tarball == first.tarball
    renamed = images.write_image("localhost/t/other:3", [entries], ImageConfig(), tmp_path / "o")
    assert not renamed.reused and renamed.tarball != first.tarball
    assert renamed.layers[0].blob.stat().st_mtime == 1  # the cached layer, not a new one


def test_a_reference_that_containerd_would_refuse_is_refused(tmp_path: Path) -> None:
    for ref in ("Localhost/UPPER:1", "localhost/no-tag", "localhost/a b:1"):
        with pytest.raises(images.ImageError, match="is not of the form"):
            images.write_image(ref, [[File("/a", b"")]], ImageConfig(), tmp_path)


@needs_busybox
def test_the_pod_image_is_named_after_the_busybox_in_it_and_holds_its_applets(tmp_path: Path) -> None:
    ref, tarball = images.pod_image(tmp_path)
    version = images.busybox_version(images.find_busybox())
    assert ref == f"localhost/gpu-share-conformance/pod:busybox-{version}"
    archive = _read_archive(tarball)
    manifest = json.loads(_blob(archive, json.loads(archive["index.json"])["manifests"][0]["digest"]))
    with tarfile.open(fileobj=io.BytesIO(_blob(archive, manifest["layers"][0]["digest"]))) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["bin/busybox"].isfile() and members["bin/busybox"].mode == 0o755
    for applet in ("sh", "env", "sleep", "echo", "test", "["):
        link = next(m for name, m in members.items() if name.rsplit("/", 1)[-1] == applet)
        assert link.issym() and link.linkname == "/bin/busybox", applet
    assert {"etc/passwd", "etc/group", "proc", "sys", "dev", "tmp"} <= set(members)
    assert members["tmp"].mode == 0o1777
    assert images.pod_image(tmp_path) == (ref, tarball)


@needs_root
@needs_busybox
def test_the_suites_pod_command_runs_in_a_chroot_of_the_pod_image(tmp_path: Path) -> None:
    _, tarball = images.pod_image(tmp_path / "out")
    rootfs = _extract_rootfs(tarball, tmp_path)
    # The suite's own command (conformance/session.py) with a device-node probe, as a real node runs it.
    profile = SimpleNamespace(
        visibility=SimpleNamespace(method="env", device_nodes=["/dev/nvidia{index}", "/dev/null"])
    )
    gpu = SimpleNamespace(attributes={"index": 0}, device="gpu-0", pool="node-a")
    command = Suite.pod_command(SimpleNamespace(profile=profile, preflight=SimpleNamespace(gpus=[gpu])))  # type: ignore[arg-type]
    assert command[-1].endswith("exec sleep 3600")
    command[-1] = command[-1].removesuffix("3600") + "0"
    result = _chroot(rootfs, *command, env={"PATH": images.PATH_ENV.removeprefix("PATH="), "MARK": "x1"})
    assert result.returncode == 0 and result.stderr == "", result
    assert "MARK=x1" in result.stdout
    assert "device-node-seen: /dev/null" not in result.stdout  # an empty /dev: nothing leaks in a chroot
    assert "device-node-probe-done" in result.stdout


def test_a_missing_busybox_names_the_package_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(images, "BUSYBOX_CANDIDATES", (str(tmp_path / "busybox"),))
    monkeypatch.setattr(images.shutil, "which", lambda _name: None)
    with pytest.raises(
        images.BusyboxMissing, match=r"no /bin/busybox\); install it with `apt-get install busybox-static`"
    ):
        images.pod_image(tmp_path)
    assert not list(tmp_path.iterdir())


def test_a_dynamically_linked_busybox_is_not_taken(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    dynamic = Path(os.path.realpath(shutil.which("ls") or "/bin/ls"))
    monkeypatch.setattr(images, "BUSYBOX_CANDIDATES", (str(dynamic),))
    monkeypatch.setattr(images.shutil, "which", lambda _name: None)
    with pytest.raises(images.BusyboxMissing, match=r"is dynamically linked.*apt-get install busybox-static"):
        images.find_busybox()


def _driver_distributions_missing() -> str:
    for name in images.DRIVER_DISTRIBUTIONS:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            return (
                f"{name} is not installed here (the driver image copies the venv's; make setup installs it)"
            )
    return ""


NO_DRIVER_DISTRIBUTIONS = _driver_distributions_missing()


@needs_root
@pytest.mark.skipif(bool(NO_DRIVER_DISTRIBUTIONS), reason=NO_DRIVER_DISTRIBUTIONS or "all installed")
def test_the_driver_image_imports_the_driver_in_a_chroot_as_its_user(tmp_path: Path) -> None:
    ref, tarball = images.driver_image(REPO, tmp_path / "out")
    assert ref == images.DRIVER_REF
    rootfs = _extract_rootfs(tarball, tmp_path)
    archive = _read_archive(tarball)
    manifest = json.loads(_blob(archive, json.loads(archive["index.json"])["manifests"][0]["digest"]))
    config = json.loads(_blob(archive, manifest["config"]["digest"]))["config"]
    assert config["Entrypoint"] == ["python", "-m", "driver"] and config["User"] == "10001"
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["PYTHONPATH"] == "/app"
    assert not list(rootfs.glob("app/**/__pycache__")) and not (rootfs / "app" / "sim").exists()
    result = subprocess.run(
        [str(CHROOT), f"--userspec={config['User']}:{config['User']}", str(rootfs), "python", "-c",
         "import driver.__main__, grpc, kubernetes, os; print('imported as', os.getuid())"],
        capture_output=True, text=True, timeout=120, env=env, cwd="/", check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "imported as 10001"


def test_the_pause_image_is_tagged_with_its_binarys_digest(tmp_path: Path) -> None:
    pause = tmp_path / "pause"
    with pytest.raises(images.ImageError, match="build it with make kube-bin"):
        images.pause_image(pause, tmp_path / "out")
    pause.write_bytes(b"\x7fELF stand-in")
    pause.chmod(0o755)
    ref, tarball = images.pause_image(pause, tmp_path / "out")
    assert (
        ref == f"localhost/gpu-share-conformance/pause:{hashlib.sha256(pause.read_bytes()).hexdigest()[:12]}"
    )
    archive = _read_archive(tarball)
    manifest = json.loads(_blob(archive, json.loads(archive["index.json"])["manifests"][0]["digest"]))
    assert json.loads(_blob(archive, manifest["config"]["digest"]))["config"] == {
        "Entrypoint": ["/pause"],
        "Env": [],
    }
    pause.write_bytes(b"\x7fELF rebuilt")
    assert images.pause_image(pause, tmp_path / "out")[0] != ref
