"""The seed's claim templates are kept verbatim and are valid objects for Kubernetes 1.34 to 1.37."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conformance.profiles import load_profile
from conformance.templates import (
    CLAIMS_DIR,
    SCHEMA_VERSIONS,
    TemplateError,
    load_templates,
    retarget,
    schema_version,
    validate_object,
)

# The seed guide's three ```yaml blocks, cut out of it once (the guide itself is not part of the repo).
SEED_CLAIMS = Path(__file__).resolve().parents[1] / "fixtures" / "seed-claims"
SEED_TEMPLATES = ("gpu-6gi-3090.yaml", "gpu-24gi-3090.yaml", "gpu-6gi-any.yaml")


@pytest.mark.parametrize("name", SEED_TEMPLATES)
def test_seed_template_is_kept_verbatim(name: str) -> None:
    assert (CLAIMS_DIR / name).read_text() == (SEED_CLAIMS / name).read_text()


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_seed_templates_are_valid_for_every_supported_version(version: str) -> None:
    names = {t.path.name for t in load_templates(CLAIMS_DIR, version)}
    assert set(SEED_TEMPLATES) <= names


@pytest.mark.parametrize("profile", ["reference", "nvidia-fork", "nvidia-consumable-shares", "dra-example"])
def test_retargeted_templates_stay_valid(profile: str) -> None:
    p = load_profile(profile)
    for t in load_templates(CLAIMS_DIR, "1.34.0"):
        body = retarget(t, p, product="Some GPU")
        validate_object(body, "1.34.0", t.name)
        exactly = body["spec"]["spec"]["devices"]["requests"][0]["exactly"]
        assert exactly["deviceClassName"] == p.device_class
        for sel in exactly.get("selectors") or ():
            domain, ident = p.qualified(p.product_attribute)
            assert sel["cel"]["expression"] == f'device.attributes["{domain}"].{ident} == "Some GPU"'


def test_misspelt_template_field_stops_with_file_and_field(tmp_path: Path) -> None:
    body = yaml.safe_load((CLAIMS_DIR / "gpu-6gi-any.yaml").read_text())
    exactly = body["spec"]["spec"]["devices"]["requests"][0]["exactly"]
    exactly["capacity"] = {"request": exactly["capacity"]["requests"]}  # the classic typo
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(body))
    with pytest.raises(TemplateError) as err:
        load_templates(tmp_path, "1.36.0")
    msg = str(err.value)
    assert "typo.yaml" in msg and "spec.spec.devices.requests.0.exactly.capacity" in msg and "request" in msg


def test_non_template_object_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ns.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n")
    with pytest.raises(TemplateError, match="is a Namespace, not a ResourceClaimTemplate"):
        load_templates(tmp_path, "1.35.0")


def test_cluster_version_maps_onto_a_shipped_schema() -> None:
    assert schema_version("v1.36.2") == "1.36.0"
    assert schema_version("v1.39.0") == "1.37.0"
    assert schema_version("v1.33.1") == "1.34.0"
    assert schema_version("") == "1.37.0"
