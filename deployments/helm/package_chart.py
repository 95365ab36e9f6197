"""`make chart`: lint the reference driver's chart for every supported Kubernetes minor and package it.

Helm's own engine through helm-python-sdk (the `test` extra), so no helm binary is needed; a machine
with helm can equally run `helm lint` and `helm package` on the same directory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import helm_python as hp

CHART = Path(__file__).resolve().parent / "gpu-sharing-dra-driver"
KUBE_VERSIONS = ("v1.34.0", "v1.35.0", "v1.36.0", "v1.37.0")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--destination", default="dist", help="directory for the .tgz (default dist)")
    args = parser.parse_args(argv)
    for version in KUBE_VERSIONS:
        report = hp.lint(CHART, strict=True, kube_version=version)
        problems = report["errors"] + report["messages"]
        if problems:
            print(f"helm lint ({version}) of {CHART} found: {problems}; fix the chart.", file=sys.stderr)
            return 1
    Path(args.destination).mkdir(parents=True, exist_ok=True)
    archive = hp.package(CHART, destination=args.destination)
    print(f"linted for {', '.join(KUBE_VERSIONS)}; packaged {archive}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
