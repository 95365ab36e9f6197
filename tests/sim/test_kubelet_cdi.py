"""CDI resolution as a container runtime does it (sim/kubelet/cdi.py)."""

from __future__ import annotations

import json

import pytest

from sim.kubelet.cdi import CDIError, Registry

KIND = "k8s.gpu.sharing.example.dev/gpu"


def write(path, spec):
    path.write_text(json.dumps(spec) if path.suffix == ".json" else spec)
    return path


def spec(devices, edits=None, version="1.0.0", kind=KIND):
    out = {
        "cdiVersion": version,
        "kind": kind,
        "devices": [{"name": n, "containerEdits": {"env": env}} for n, env in devices],
    }
    if edits is not None:
        out["containerEdits"] = edits
    return out


def test_spec_level_edits_apply_once_then_device_edits_in_request_order(tmp_path):
    write(
        tmp_path / "a.json",
        spec(
            [("c1-gpu-0-s1", ["GPU=0", "MEM=1"]), ("c1-gpu-1", ["GPU=1"])],
            edits={"env": ["SPEC=yes", "MEM=0"]},
        ),
    )
    res = Registry([tmp_path]).resolve([f"{KIND}=c1-gpu-0-s1", f"{KIND}=c1-gpu-1"])
    assert res.edits.env == ["SPEC=yes", "MEM=0", "GPU=0", "MEM=1", "GPU=1"]
    env = res.apply_env({"MEM": "pod", "POD": "1"})
    assert env == {"MEM": "1", "POD": "1", "SPEC": "yes", "GPU": "1"}  # later entries win, as AddProcessEnv


def test_yaml_specs_and_later_directories_override_earlier_ones(tmp_path):
    static, dynamic = tmp_path / "etc", tmp_path / "run"
    static.mkdir()
    dynamic.mkdir()
    write(
        static / "s.yaml",
        f"cdiVersion: 0.6.0\nkind: {KIND}\ndevices:\n- name: d\n  containerEdits:\n    env: [WHO=static]\n",
    )
    write(dynamic / "d.json", spec([("d", ["WHO=dynamic"])]))
    assert Registry([static, dynamic]).resolve([f"{KIND}=d"]).edits.env == ["WHO=dynamic"]


def test_missing_device_fails_with_unresolvable_message(tmp_path):
    with pytest.raises(CDIError, match=f"unresolvable CDI devices {KIND}=nope .no spec file defines them."):
        Registry([tmp_path]).resolve([f"{KIND}=nope"])


@pytest.mark.parametrize(("body", "fragment"), [
    ("{not json", "malformed spec"),
    (json.dumps({"cdiVersion": "9.9.9", "kind": KIND, "devices": []}), "cdiVersion: unsupported version "
                                                                       "'9.9.9'"),
    (json.dumps({"cdiVersion": "1.0.0", "kind": "nokind", "devices": []}), "kind: invalid kind 'nokind'"),
    (json.dumps(spec([("d", ["NOEQUALS"])])), "env[0]: invalid environment variable 'NOEQUALS'"),
    (json.dumps({**spec([("d", ["A=1"])]), "extra": 1}), "unknown field(s) extra"),
    (json.dumps(spec([("d", [])])), "empty device edits"),
    (json.dumps({"cdiVersion": "1.0.0", "kind": KIND, "containerEdits": [], "devices": [{"name": "d"}]}),
     "containerEdits: expected an object"),
    (json.dumps(spec([("0abc", ["A=1"])], version="0.4.0")), "starting with a digit requires cdiVersion "
                                                             ">= 0.5.0"),
])  # fmt: skip
def test_malformed_spec_makes_its_devices_unresolvable_with_the_reason(tmp_path, body, fragment):
    (tmp_path / "bad.json").write_text(body)
    write(tmp_path / "good.json", spec([("ok", ["A=1"])], kind="k8s.other.dev/gpu"))
    reg = Registry([tmp_path])
    assert reg.resolve(["k8s.other.dev/gpu=ok"]).edits.env == ["A=1"]  # other specs keep working
    with pytest.raises(CDIError) as err:
        reg.resolve([f"{KIND}=d"])
    assert "unresolvable CDI devices" in str(err.value)
    assert fragment in str(err.value)
    assert "bad.json" in str(err.value)


def test_same_device_in_two_specs_of_one_directory_is_a_conflict(tmp_path):
    write(tmp_path / "a.json", spec([("d", ["A=1"])]))
    write(tmp_path / "b.json", spec([("d", ["A=2"])]))
    with pytest.raises(CDIError, match="conflicting device"):
        Registry([tmp_path]).resolve([f"{KIND}=d"])


def test_spec_rewritten_in_place_is_reread(tmp_path):
    reg = Registry([tmp_path])
    p = write(tmp_path / "a.json", spec([("d", ["V=1"])]))
    assert reg.resolve([f"{KIND}=d"]).edits.env == ["V=1"]
    p.write_text(json.dumps(spec([("d", ["V=22"])])))
    assert reg.resolve([f"{KIND}=d"]).edits.env == ["V=22"]
    p.unlink()
    with pytest.raises(CDIError):
        reg.resolve([f"{KIND}=d"])


def test_device_node_that_does_not_exist_fails_the_start(tmp_path):
    s = spec([("d", ["A=1"])])
    s["devices"][0]["containerEdits"]["deviceNodes"] = [{"path": "/dev/nvidia-sim-missing0"}]
    write(tmp_path / "a.json", s)
    with pytest.raises(CDIError, match="device node /dev/nvidia-sim-missing0 does not exist"):
        Registry([tmp_path]).resolve([f"{KIND}=d"])


def test_unqualified_device_id_is_rejected(tmp_path):
    with pytest.raises(CDIError, match="not a qualified device name"):
        Registry([tmp_path]).resolve(["gpu-0"])
