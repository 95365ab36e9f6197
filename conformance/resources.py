"""Where the suite's own data lies: driver profiles, claim templates, kind configs and the scenarios.

They ship inside the ``conformance`` package (``conformance/data/``, declared as package data in
pyproject.toml) and are found through ``importlib.resources``, never by path arithmetic from a source
tree: the same lookup works from a checkout, an editable install and an installed wheel, whatever the
current directory is.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

PACKAGE = "conformance"


def package_path(*parts: str) -> Path:
    """A directory or file shipped in the conformance package, as a real path.

    The suite hands these paths to pytest, helm and kind, which need files on disk; pip always installs
    a wheel unpacked, so the package's resources are plain files (a zipped install is refused here with
    the fix rather than failing later in a tool).
    """
    resource = files(PACKAGE).joinpath(*parts)
    if not isinstance(resource, Path):
        raise RuntimeError(
            f"the {PACKAGE} package is not installed as plain files ({resource!r}); install it with pip "
            "(pip install gpu-share-conformance), which unpacks it."
        )
    return resource


def drivers_dir() -> Path:
    """Driver profiles: ``--driver-profile NAME`` means ``drivers_dir() / NAME.yaml``."""
    return package_path("data", "drivers")


def claims_dir() -> Path:
    """The default ``--claim-templates``: the seed guide's three ResourceClaimTemplates."""
    return package_path("data", "claims")


def kind_config_dir() -> Path:
    """The kind cluster configs (mock GPUs, real GPUs nvkind style) and the GPU node setup script."""
    return package_path("data", "kind-config")


def scenarios_dir() -> Path:
    """The scenarios pytest runs (a package of test modules with the plugin's conftest)."""
    return package_path("scenarios")
