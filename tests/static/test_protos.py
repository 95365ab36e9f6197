"""The committed gRPC stubs are exactly what the committed .proto files generate, and they speak the
wire names the kubelet dials."""

import shutil
import subprocess
import sys
from pathlib import Path

from drakit.api import dra_v1_pb2, dra_v1beta1_pb2, pluginregistration_pb2

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ["dra_v1.proto", "dra_v1beta1.proto", "pluginregistration.proto"]


def test_committed_stubs_match_regenerated_ones(tmp_path: Path) -> None:
    api = tmp_path / "drakit" / "api"
    api.mkdir(parents=True)
    for proto in PROTOS:
        shutil.copy(ROOT / "drakit" / "api" / proto, api / proto)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I.",
            "--python_out=.",
            "--pyi_out=.",
            "--grpc_python_out=.",
            *[f"drakit/api/{p}" for p in PROTOS],
        ],
        cwd=tmp_path,
        check=True,
    )
    generated = sorted(p.name for p in api.iterdir() if p.suffix in {".py", ".pyi"})
    assert generated, "protoc produced nothing"
    for name in generated:
        fresh = (api / name).read_text()
        committed = (ROOT / "drakit" / "api" / name).read_text()
        assert fresh == committed, f"drakit/api/{name} is stale: run `make protos` and commit"


def test_service_paths_match_the_kubelet() -> None:
    v1 = dra_v1_pb2.DESCRIPTOR.services_by_name["DRAPlugin"]
    assert v1.full_name == "k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin"
    assert (
        dra_v1beta1_pb2.DESCRIPTOR.services_by_name["DRAPlugin"].full_name
        == "k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin"
    )
    assert pluginregistration_pb2.DESCRIPTOR.services_by_name["Registration"].full_name == (
        "pluginregistration.Registration"
    )


def test_share_id_is_field_5_of_the_v1_device_only() -> None:
    v1 = dra_v1_pb2.Device.DESCRIPTOR.fields_by_name
    assert v1["share_id"].number == 5
    assert v1["share_id"].has_presence
    assert "share_id" not in dra_v1beta1_pb2.Device.DESCRIPTOR.fields_by_name
    assert [f.number for f in dra_v1_pb2.Claim.DESCRIPTOR.fields] == [1, 2, 3]
