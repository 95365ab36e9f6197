"""Device nodes a container must see: its GPU's, from the profile's path templates, and no other GPU's.

The probe is a shell loop in the pod's command that prints each candidate path the container can see,
then an end mark; candidates are every published GPU's paths, so a leak of another GPU shows.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable

from conformance.inventory import Gpu
from conformance.profiles import DriverProfile, template_fields

SEEN_PREFIX = "device-node-seen: "
END_MARK = "device-node-probe-done"


def device_node_paths(profile: DriverProfile, gpu: Gpu) -> set[str]:
    """The device node paths of ``gpu`` (empty when the profile names none or the GPU lacks a field)."""
    values = {
        **{k: str(v) for k, v in gpu.attributes.items() if "/" not in k},
        "device": gpu.device,
        "pool": gpu.pool,
    }
    out = set()
    for template in profile.visibility.device_nodes:
        if all(f in values for f in template_fields(template)):
            out.add(template.format(**values))
    return out


def device_node_probe(profile: DriverProfile, gpus: Iterable[Gpu]) -> str:
    """Shell text for the pod command ('' when the profile names no device nodes)."""
    if not profile.visibility.device_nodes:
        return ""
    candidates = sorted({p for g in gpus for p in device_node_paths(profile, g)})
    # Paths come from what the driver published: quoted, never interpreted by the pod's shell.
    listed = " ".join(shlex.quote(p) for p in candidates)
    return (
        (f'for p in {listed}; do [ -e "$p" ] && echo "{SEEN_PREFIX}$p"; done; echo {END_MARK}; ')
        if candidates
        else f"echo {END_MARK}; "
    )


def seen_device_nodes(log_text: str) -> set[str]:
    return set(re.findall(rf"^{re.escape(SEEN_PREFIX)}(.*)$", log_text, re.M))
