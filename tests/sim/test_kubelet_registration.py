"""Plugin registration and the DRA client over real unix sockets (sim/kubelet/registration.py)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from drakit.draclient import ClaimRef, DRACallError, pick_service
from drakit.nodedirs import NodeDirs
from sim.kubelet.registration import PluginManager
from tests.support.fake_plugin import FakePlugin


@pytest.fixture
def node_dirs():
    root = Path(tempfile.mkdtemp(prefix="klreg", dir="/tmp"))  # short: unix socket paths are limited
    try:
        yield NodeDirs(root / "node-1").create()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def manager(node_dirs):
    changes: list[tuple[str, bool]] = []
    m = PluginManager(node_dirs.plugins_registry, lambda name, ok: changes.append((name, ok))).start()
    m.changes = changes
    try:
        yield m
    finally:
        m.stop()


def plugin(node_dirs: NodeDirs, **kw) -> FakePlugin:
    name = kw.pop("name", "gpu.test.example.dev")
    return FakePlugin(node_dirs.plugins_registry, node_dirs.plugin_dir(name), name=name, **kw)


def test_first_supported_version_in_the_plugins_order_wins():
    assert pick_service(["v1.DRAPlugin", "v1beta1.DRAPlugin"]) == "v1.DRAPlugin"
    assert pick_service(["v1beta1.DRAPlugin", "v1.DRAPlugin"]) == "v1beta1.DRAPlugin"
    assert pick_service(["v1alpha1.DRAResourceHealth", "v1beta1.DRAPlugin"]) == "v1beta1.DRAPlugin"
    assert pick_service(["v1alpha3.Node"]) is None


def test_plugin_socket_appearing_is_registered_and_notified(node_dirs, manager):
    p = plugin(node_dirs).start()
    try:
        client = manager.wait_registered(p.name, timeout=10)
        assert p.wait_notified() == (True, "")
        assert client.service == "v1.DRAPlugin"
        assert client.endpoint == str(p.endpoint)
        assert manager.registered() == [p.name]
    finally:
        p.stop()


def test_v1beta1_only_plugin_is_called_on_v1beta1(node_dirs, manager):
    p = plugin(
        node_dirs,
        versions=["v1beta1.DRAPlugin"],
        prepare_fn=lambda ns, uid, name: (
            [
                {
                    "pool_name": "node-1",
                    "device_name": "gpu-0",
                    "cdi_device_ids": ["k8s.x/gpu=a"],
                    "share_id": "s",
                }
            ],
            "",
        ),
    )
    p.start()
    try:
        client = manager.wait_registered(p.name, timeout=10)
        assert client.service == "v1beta1.DRAPlugin"
        result = client.prepare([ClaimRef("default", "uid-1", "claim-1")])
        assert p.prepare_calls == [("v1beta1.DRAPlugin", ["uid-1"])]
        assert result["uid-1"].devices[0].cdi_device_ids == ("k8s.x/gpu=a",)
        assert result["uid-1"].devices[0].share_id is None  # v1beta1 has no share_id field
    finally:
        p.stop()


def test_plugin_with_no_supported_version_is_rejected_with_reason(node_dirs, manager):
    p = plugin(node_dirs, versions=["v1alpha3.Node"]).start()
    try:
        ok, error = p.wait_notified()
        assert not ok
        assert "none of services supported by the plugin ['v1alpha3.Node']" in error
        assert manager.client(p.name) is None
    finally:
        p.stop()


def test_plugin_of_another_type_is_rejected(node_dirs, manager):
    p = plugin(node_dirs, plugin_type="CSIPlugin").start()
    try:
        ok, error = p.wait_notified()
        assert not ok and "no handler registered for plugin type: 'CSIPlugin'" in error
    finally:
        p.stop()


def test_removed_registration_socket_deregisters_and_reports_unreachable(node_dirs, manager):
    p = plugin(node_dirs).start()
    client = manager.wait_registered(p.name, timeout=10)
    p.stop()
    manager.wait_for(lambda: (p.name, False) in manager.changes, 10, "deregistration")
    assert manager.client(p.name) is None
    with pytest.raises(DRACallError, match="deregistered during the call"):
        client.prepare([ClaimRef("default", "u", "c")], timeout=2)


def test_dead_driver_gives_an_unavailable_rpc_error(node_dirs):
    p = plugin(node_dirs).start()
    from drakit.draclient import DRAClient

    client = DRAClient(p.name, str(p.endpoint), "v1.DRAPlugin")
    try:
        client.wait_connected(5)
        p.stop()
        with pytest.raises(DRACallError, match="rpc error: code = Unavailable"):
            client.prepare([ClaimRef("default", "u", "c")], timeout=2)
    finally:
        client.close()


def test_reregistration_replaces_the_client(node_dirs, manager):
    p = plugin(node_dirs).start()
    first = manager.wait_registered(p.name, timeout=10)
    p.stop()
    p2 = plugin(node_dirs).start()
    try:
        second = manager.wait_registered(p.name, timeout=10, newer_than=first)
        assert second is not first
        assert manager.registered() == [p.name]
    finally:
        p2.stop()


def test_socket_path_over_the_unix_limit_is_refused_naming_the_flag(tmp_path):
    dirs = NodeDirs(tmp_path / ("x" * 80) / "node-1")
    with pytest.raises(ValueError, match=r"--state-dir .* too long"):
        dirs.check_socket_room("gpu.sharing.example.dev")
