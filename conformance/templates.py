"""Claim templates given to the suite (the seed's three by default): load, validate, re-target.

Templates are validated strictly against the Kubernetes OpenAPI schema of the cluster's version
before anything is created, so a misspelt field stops the run instead of being silently dropped.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from conformance.profiles import DriverProfile, yaml_problem
from conformance.resources import claims_dir

CLAIMS_DIR = claims_dir()
SCHEMA_VERSIONS = ("1.34.0", "1.35.0", "1.36.0", "1.37.0")
SEED_DRIVER = "gpu.nvidia.com"


class TemplateError(ValueError):
    """A claim template is not a valid ResourceClaimTemplate; the message names file and field."""


@dataclass(frozen=True)
class ClaimTemplate:
    path: Path
    body: dict[str, Any]

    @property
    def name(self) -> str:
        return self.body["metadata"]["name"]

    def request(self) -> dict[str, Any]:
        return self.body["spec"]["spec"]["devices"]["requests"][0]["exactly"]


def schema_version(server_version: str) -> str:
    """Map the cluster's version (v1.36.2, 1.37) onto the closest schema kubernetes-validate ships."""
    m = re.match(r"v?(\d+)\.(\d+)", server_version or "")
    if not m:
        return SCHEMA_VERSIONS[-1]
    minor = int(m.group(2))
    clamped = min(max(minor, 34), 37)
    return f"1.{clamped}.0"


def validate_object(body: dict[str, Any], version: str, source: str) -> None:
    try:
        kubernetes_validate.validate(body, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path) or "the object"
        message = " ".join(str(exc.message).split())[:300]
        raise TemplateError(
            f"claim template {source} is not a valid {body.get('kind', 'object')} for "
            f"Kubernetes {version}: {where}: {message}; fix that field."
        ) from None
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise TemplateError(
            f"claim template {source}: no schema for {body.get('apiVersion')}/"
            f"{body.get('kind')} in Kubernetes {version} ({exc}); use resource.k8s.io/v1 "
            "ResourceClaimTemplate."
        ) from None


def load_templates(directory: Path, version: str) -> list[ClaimTemplate]:
    """Every ``*.yaml`` in ``directory``, each strictly valid and usable by the suite. A missing or empty
    directory is an error: running the selector checks on nothing would read as a pass."""
    if not directory.is_dir():
        what = "is not a directory" if directory.exists() else "does not exist"
        raise TemplateError(
            f"--claim-templates {directory} {what}; pass a directory of "
            "ResourceClaimTemplate YAML files (default: the shipped seed templates)."
        )
    paths = sorted(directory.glob("*.yaml"))
    if not paths:
        raise TemplateError(
            f"--claim-templates {directory} holds no *.yaml file; put at least one "
            "ResourceClaimTemplate there or leave the option out to use the shipped seed templates."
        )
    out = []
    for path in paths:
        try:
            body = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise TemplateError(
                f"claim template {path} is not valid YAML ({yaml_problem(exc)}); fix the syntax."
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise TemplateError(
                f"claim template {path} cannot be read ({exc}); make it a readable YAML file."
            ) from None
        if not isinstance(body, dict):
            raise TemplateError(
                f"claim template {path} does not hold one object; put one ResourceClaimTemplate per file."
            )
        if body.get("kind") != "ResourceClaimTemplate":
            raise TemplateError(
                f"claim template {path} is a {body.get('kind')}, not a "
                f"ResourceClaimTemplate; "
                "move it out of the claim templates directory."
            )
        validate_object(body, version, str(path))
        _check_usable(body, path)
        out.append(ClaimTemplate(path, body))
    return out


def _check_usable(body: dict[str, Any], path: Path) -> None:
    """What the schema allows but the suite cannot use: no request, or a first request that is not
    ``exactly`` (the suite re-aims and sizes that one)."""
    requests = (((body.get("spec") or {}).get("spec") or {}).get("devices") or {}).get("requests")
    if not requests:
        raise TemplateError(
            f"claim template {path}: spec.spec.devices.requests is empty; add one request "
            "with 'exactly' (deviceClassName, and capacity or selectors)."
        )
    for i, req in enumerate(requests):
        if not isinstance(req, dict) or not isinstance(req.get("exactly"), dict):
            raise TemplateError(
                f"claim template {path}: spec.spec.devices.requests[{i}] has no 'exactly' "
                "section; the suite sizes and re-targets exact requests, so write the "
                "request as 'exactly: {deviceClassName: ...}'."
            )
        if not req["exactly"].get("deviceClassName"):
            raise TemplateError(
                f"claim template {path}: spec.spec.devices.requests[{i}].exactly."
                "deviceClassName is missing; name a DeviceClass (the seed's gpu.nvidia.com "
                "is re-aimed at the profile's)."
            )


def retarget(template: ClaimTemplate, profile: DriverProfile, product: str | None = None) -> dict[str, Any]:
    """The template re-aimed at the driver under test: its device class, attribute domain and
    product attribute; a product comparison is pointed at ``product`` when given."""
    body = copy.deepcopy(template.body)
    body.pop("status", None)
    meta = body.setdefault("metadata", {})
    meta.pop("namespace", None)
    domain, prod_ident = profile.qualified(profile.product_attribute)
    for req in body["spec"]["spec"]["devices"]["requests"]:
        exactly = req.get("exactly") or {}
        if exactly.get("deviceClassName") == SEED_DRIVER:
            exactly["deviceClassName"] = profile.device_class
        for sel in exactly.get("selectors") or ():
            expr = sel["cel"]["expression"]
            expr = re.sub(
                r"device\.attributes\[['\"]" + re.escape(SEED_DRIVER) + r"['\"]\]\.productName",
                f'device.attributes["{domain}"].{prod_ident}',
                expr,
            )
            expr = expr.replace(f"['{SEED_DRIVER}']", f'["{profile.driver}"]')
            if product is not None:
                expr = re.sub(r"(\.\w+\s*==\s*)(['\"])[^'\"]*\2", lambda m: f'{m.group(1)}"{product}"', expr)
            sel["cel"]["expression"] = expr
    return body
