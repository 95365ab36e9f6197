"""Driver profiles: what the driver under test is called, how it is installed and what it claims.

A profile is a YAML file shipped in ``conformance/data/drivers/`` (given by name) or any path. The schema
is strict: an unknown key is an error that names the key, where it sits and the keys that are valid
there, because a misspelt key silently ignored would make the suite test something other than what the
vendor meant.
"""

from __future__ import annotations

import os
import re
import shlex
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from conformance.resources import drivers_dir
from drakit import quantity as q
from drakit.launch import LaunchError, LaunchSpec

PROFILE_DIR = drivers_dir()
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_C_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_TEMPLATE_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# ${NAME} or ${NAME:-default} in the sim: section: a value the user gives when running the suite.
# The default may itself be one plain ${OTHER} reference.
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-((?:[^{}$]|\$\{[A-Za-z_][A-Za-z0-9_]*\})*))?\}")
# Enough for drivers built on upstream's kubeletplugin helper: a 30 s sync delay held back by a one-minute
# mutation cache (29 to 62 s seen).
DEFAULT_REPUBLISH_TIMEOUT = 90.0
# Kubernetes' limits for DRA names (k8s.io/api/resource/v1: DeviceMaxDomainLength, DeviceMaxIDLength).
_MAX_DOMAIN = 63
_MAX_ID = 32


class ProfileError(ValueError):
    """A driver profile is missing, malformed or names unknown keys."""


# The schema: key -> (expected python type(s), required, nested schema | allowed values | None).
_Spec = dict[str, tuple[Any, bool, Any]]

_VISIBILITY: _Spec = {
    "method": (str, True, ("env", "nvidia-smi")),
    # env name template -> value template; placeholders are device attributes plus
    # {device}, {pool}, {shareID} and {granted} (granted capacity in bytes).
    "env": (dict, False, None),
    # device node path templates of one GPU (e.g. "/dev/nvidia{minor}"), placeholders from its attributes:
    # a container must see its GPU's nodes and no other GPU's.
    "deviceNodes": (list, False, None),
}
_CLAIMS: _Spec = {
    "sharing": (bool, True, None),
    "requestPolicy": (str, True, ("range", "values", "none", "any")),
    "visibility": (dict, True, _VISIBILITY),
    "enforcement": (bool, False, None),
}
_IMAGE: _Spec = {"repository": (str, True, None), "tag": (str, False, None)}
_INSTALL: _Spec = {
    "method": (str, True, ("chart", "vendor-chart", "preinstalled")),
    "chart": (str, False, None),
    "release": (str, False, None),
    "namespace": (str, False, None),
    "values": (dict, False, None),
    "image": (dict, False, _IMAGE),
    # label selector of the driver's kubelet-plugin pods (restart and logs on kind/existing)
    "podSelector": (str, False, None),
}
# How to run the driver on the simulated cluster (drakit/launch.py is the contract it fills).
_SIM: _Spec = {
    "command": (list, True, None),
    "args": (list, False, None),
    "env": (dict, False, None),
    "nodeEnv": (dict, False, None),
    "republishTimeout": ((int, float), False, None),
}
_POD: _Spec = {"image": (str, False, None)}
_PROFILE: _Spec = {
    "name": (str, True, None),
    "description": (str, False, None),
    "driver": (str, True, None),
    "deviceClass": (str, True, None),
    "capacity": (str, False, None),
    # capacity -> how a sharer asks for it: share, proportional or a quantity (see _share_requests)
    "shareRequests": (dict, False, None),
    "identityAttribute": (str, False, None),
    "productAttribute": (str, False, None),
    "install": (dict, True, _INSTALL),
    "claims": (dict, True, _CLAIMS),
    "sim": (dict, False, _SIM),
    "pod": (dict, False, _POD),
}


@dataclass(frozen=True)
class Visibility:
    method: str  # "env" or "nvidia-smi"
    env: dict[str, str] = field(default_factory=dict)
    device_nodes: tuple[str, ...] = ()  # path templates of one GPU's device nodes


@dataclass(frozen=True)
class Install:
    method: str  # "chart", "vendor-chart", "preinstalled"
    chart: str = ""
    release: str = ""
    namespace: str = ""
    values: dict[str, Any] = field(default_factory=dict)
    image_repository: str = ""
    image_tag: str = ""
    pod_selector: str = ""


@dataclass(frozen=True)
class SimLaunch:
    """The ``sim:`` section: the driver's command, args, env and per-node env as templates that may use
    the launch contract's {placeholders} and ${VARIABLES} from the run's environment."""

    command: tuple[str, ...]
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    node_env: dict[str, dict[str, str]] = field(default_factory=dict)
    republish_timeout: float | None = None

    def templates(self) -> list[tuple[str, str]]:
        out = [(f"sim.command[{i}]", c) for i, c in enumerate(self.command)]
        out += [(f"sim.args[{i}]", a) for i, a in enumerate(self.args)]
        out += [(f"sim.env.{k}", v) for k, v in self.env.items()]
        out += [(f"sim.nodeEnv.{n}.{k}", v) for n, e in self.node_env.items() for k, v in e.items()]
        return out

    @property
    def mock_gpus(self) -> bool:
        """Whether the driver takes its GPUs from the sim's mock GPU profiles (it uses {gpus})."""
        return any("{gpus}" in template for _, template in self.templates())

    def resolve(
        self, driver: str, environ: Mapping[str, str], command: list[str] | None = None
    ) -> LaunchSpec:
        """The launch spec with every ${VARIABLE} filled from ``environ`` (``command`` replaces sim.command:
        --sim-driver-command). Raises ProfileError naming the field and the variable when one is unset."""

        def expand(where: str, template: str) -> str:
            def one(m: re.Match[str]) -> str:
                value = environ.get(m.group(1))
                if value is None or value == "":
                    if m.group(2) is None:
                        raise ProfileError(
                            f"'{where}' uses ${{{m.group(1)}}}, which is not set; set it in "
                            f"the environment (make {m.group(1)}=...), see "
                            "docs/validate-your-fork.md."
                        )
                    return _VARIABLE.sub(one, m.group(2))
                return value.replace("{", "{{").replace("}", "}}")  # a value is never a placeholder

            return _VARIABLE.sub(one, template)

        data = {
            "name": driver,
            "command": list(command)
            if command
            else [expand(f"sim.command[{i}]", c) for i, c in enumerate(self.command)],
            "args": [expand(f"sim.args[{i}]", a) for i, a in enumerate(self.args)],
            "env": {k: expand(f"sim.env.{k}", v) for k, v in self.env.items()},
            "nodeEnv": {
                n: {k: expand(f"sim.nodeEnv.{n}.{k}", v) for k, v in e.items()}
                for n, e in self.node_env.items()
            },
        }
        try:
            return LaunchSpec.from_dict(data, prefix="sim.")
        except LaunchError as exc:
            raise ProfileError(str(exc)) from None


@dataclass(frozen=True)
class DriverProfile:
    name: str
    driver: str
    device_class: str
    install: Install
    sharing: bool
    request_policy: str  # what the driver claims to publish on capacity
    visibility: Visibility
    enforcement: bool = False
    capacity: str = "memory"
    # capacity key (as the device publishes it) -> "share" | "proportional" | canonical quantity;
    # always holds the shared capacity. Capacities not named get no request (their default applies).
    share_requests: dict[str, str] = field(default_factory=lambda: {"memory": "share"})
    identity_attribute: str = "uuid"
    product_attribute: str = "productName"
    description: str = ""
    sim: SimLaunch | None = None  # the profile's sim: section, None when it has none
    pod_image: str = "busybox:1.36"
    source: str = ""  # file the profile came from

    def republish_bound(self, simulated: bool, wait_timeout: float) -> float:
        """Seconds the driver may take to republish wiped slices: sim.republishTimeout, else enough for
        upstream's kubeletplugin helper (on a real cluster never less than the run's wait bound)."""
        if self.sim is not None and self.sim.republish_timeout is not None:
            return self.sim.republish_timeout
        return DEFAULT_REPUBLISH_TIMEOUT if simulated else max(wait_timeout, DEFAULT_REPUBLISH_TIMEOUT)

    @property
    def shared_capacity(self) -> str:
        """The shared capacity's key as the driver's devices publish it (``memory``)."""
        return q.capacity_key(self.capacity, self.driver)

    def qualified(self, name: str) -> tuple[str, str]:
        """(domain, id) of an attribute or capacity name; unqualified names are the driver's."""
        if "/" in name:
            domain, _, ident = name.partition("/")
            return domain, ident
        return self.driver, name

    def cel_ref(self, kind: str, name: str) -> str:
        """CEL reference to an attribute or capacity, e.g. device.attributes["d"].uuid."""
        domain, ident = self.qualified(name)
        return f'device.{kind}["{domain}"].{ident}'


def _check(data: Any, spec: _Spec, where: str, source: str) -> None:
    if not isinstance(data, dict):
        raise ProfileError(
            f"driver profile {source}: {where or 'the top level'} must be a mapping, "
            f"got {type(data).__name__}; write it as 'key: value' lines."
        )
    for key in data:
        if key not in spec:
            at = f" under '{where}'" if where else ""
            raise ProfileError(
                f"driver profile {source}: unknown key '{key}'{at}; valid keys are: "
                f"{', '.join(sorted(spec))}. Fix or remove the key."
            )
    for key, (typ, required, sub) in spec.items():
        path = f"{where}.{key}" if where else key
        if key not in data:
            if required:
                raise ProfileError(f"driver profile {source}: required key '{path}' is missing; add it.")
            continue
        value = data[key]
        if (
            not isinstance(value, typ)
            or (typ is str and not value)
            or (isinstance(value, bool) and typ is not bool)
        ):
            kind = "number" if isinstance(typ, tuple) else typ.__name__
            raise ProfileError(
                f"driver profile {source}: '{path}' must be a non-empty {kind}, got {value!r}; fix its value."
            )
        if isinstance(sub, tuple) and value not in sub:
            raise ProfileError(
                f"driver profile {source}: '{path}' is {value!r}; valid values are: {', '.join(sub)}."
            )
        if isinstance(sub, dict):
            _check(value, sub, path, source)


def _check_semantics(data: dict[str, Any], source: str) -> None:
    if not _DNS_SUBDOMAIN.match(data["driver"]) or len(data["driver"]) > 63:
        raise ProfileError(
            f"driver profile {source}: 'driver' {data['driver']!r} is not a lower-case DNS "
            "subdomain of at most 63 characters; use the driver name the driver publishes."
        )
    device_class = data["deviceClass"]
    if not _DNS_SUBDOMAIN.match(device_class) or len(device_class) > 253:
        raise ProfileError(
            f"driver profile {source}: 'deviceClass' {device_class!r} is not a lower-case DNS "
            "subdomain (letters a-z, digits, '-' and '.'), as Kubernetes requires of a "
            "DeviceClass name; use the name of the driver's DeviceClass."
        )
    for key in ("capacity", "identityAttribute", "productAttribute"):
        value = data.get(key)
        if value is not None:
            _check_qualified_name(value, key, source)
    install = data["install"]
    if install["method"] in ("chart", "vendor-chart") and "chart" not in install:
        raise ProfileError(
            f"driver profile {source}: 'install.method' is {install['method']!r} but "
            "'install.chart' is missing; name the chart path or reference."
        )
    for key in ("release", "namespace"):
        value = install.get(key)
        if value is not None and (not _DNS_LABEL.match(value) or len(value) > 53):
            raise ProfileError(
                f"driver profile {source}: 'install.{key}' {value!r} is not a lower-case DNS "
                "label of at most 53 characters (what Helm accepts); fix its value."
            )
    vis = data["claims"]["visibility"]
    if vis["method"] == "env":
        env = vis.get("env")
        if not env:
            raise ProfileError(
                f"driver profile {source}: 'claims.visibility.method' is 'env' but "
                "'claims.visibility.env' is empty; list the env names the driver sets."
            )
        for name, value in env.items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise ProfileError(
                    f"driver profile {source}: 'claims.visibility.env' entries must map "
                    f"a name template to a value template (strings), got {name!r}: {value!r}."
                )
            _check_template(name, source)
            _check_template(value, source)
    for node in vis.get("deviceNodes", []):
        if not isinstance(node, str) or not node.startswith("/dev/"):
            raise ProfileError(
                f"driver profile {source}: 'claims.visibility.deviceNodes' entries must be "
                f'path templates under /dev/ (e.g. "/dev/nvidia{{minor}}"), got {node!r}.'
            )
    if "sim" in data:
        _check_sim(data["sim"], data["driver"], source)


def _check_sim(sim: dict[str, Any], driver: str, source: str) -> None:
    """Placeholders, variable references and env names of the sim: section, before anything starts."""
    timeout = sim.get("republishTimeout")
    if timeout is not None and not timeout > 0:
        raise ProfileError(
            f"driver profile {source}: 'sim.republishTimeout' must be a number of seconds "
            f"above 0, got {timeout!r}."
        )
    try:
        launch = _sim_launch(sim)
        for where, template in launch.templates():
            bad = _VARIABLE.sub("", template)
            if "${" in bad:
                raise ProfileError(
                    f"'{where}' has a malformed variable reference in {template!r}; write "
                    "${NAME} or ${NAME:-default}."
                )
        # Variables stand in for their values here; the placeholders around them are checked for real.
        LaunchSpec.from_dict(
            {
                "name": driver,
                "command": [_VARIABLE.sub("x", c) for c in launch.command],
                "args": [_VARIABLE.sub("x", a) for a in launch.args],
                "env": {k: _VARIABLE.sub("x", v) for k, v in launch.env.items()},
                "nodeEnv": {
                    n: {k: _VARIABLE.sub("x", v) for k, v in e.items()} for n, e in launch.node_env.items()
                },
            },
            prefix="sim.",
        )
    except (LaunchError, ProfileError) as exc:
        raise ProfileError(f"driver profile {source}: {exc}") from None


def _sim_launch(sim: dict[str, Any]) -> SimLaunch:
    def strings(key: str) -> tuple[str, ...]:
        value = sim.get(key, [])
        if not all(isinstance(v, str) for v in value):
            raise ProfileError(f"'sim.{key}' must be a list of strings, got {value!r}.")
        return tuple(value)

    def env(value: Any, where: str) -> dict[str, str]:
        if not isinstance(value, dict):
            raise ProfileError(f"'{where}' must be a mapping of NAME: value, got {value!r}.")
        for k, v in value.items():
            if not isinstance(v, str):
                raise ProfileError(f"'{where}.{k}' must be a string, got {v!r}; quote it.")
        return {str(k): v for k, v in value.items()}

    timeout = sim.get("republishTimeout")
    return SimLaunch(
        command=strings("command"),
        args=strings("args"),
        env=env(sim.get("env", {}), "sim.env"),
        node_env={str(n): env(e, f"sim.nodeEnv.{n}") for n, e in sim.get("nodeEnv", {}).items()},
        republish_timeout=float(timeout) if timeout is not None else None,
    )


SHARE_HOW = ("share", "proportional")


def _share_requests(data: dict[str, Any], source: str) -> dict[str, str]:
    """``shareRequests``: capacity -> ``share`` | ``proportional`` | a quantity, checked strictly.

    Whether the driver publishes those capacities is known only once its slices are read: preflight
    checks that. Here: names, values, and that the shared capacity is not asked proportionally."""
    driver = data["driver"]
    shared = q.capacity_key(data.get("capacity", "memory"), driver)
    raw = data.get("shareRequests")
    if raw is None:
        return {shared: "share"}
    if not raw:
        raise ProfileError(
            f"driver profile {source}: 'shareRequests' is empty; name at least "
            f"'{shared}: share' or remove the key."
        )
    out: dict[str, str] = {}
    for name, how in raw.items():
        where = f"'shareRequests.{name}'"
        if (
            not isinstance(name, str)
            or not _C_IDENTIFIER.match(name.rpartition("/")[2])
            or ("/" in name and not _DNS_SUBDOMAIN.match(name.rpartition("/")[0]))
        ):
            raise ProfileError(
                f"driver profile {source}: 'shareRequests' key {name!r} is not a DRA "
                "capacity name (an identifier, optionally prefixed by 'domain/')."
            )
        key = q.capacity_key(name, driver)
        if key in out:
            raise ProfileError(f"driver profile {source}: {where} names capacity {key!r} twice; keep one.")
        if isinstance(how, str) and how in SHARE_HOW:
            if how == "proportional" and key == shared:
                raise ProfileError(
                    f"driver profile {source}: {where} is 'proportional', but {key!r} is the "
                    "shared capacity that the others are proportional to; use 'share' or a "
                    "quantity."
                )
            out[key] = how
            continue
        if isinstance(how, bool) or not isinstance(how, str | int):
            raise ProfileError(
                f"driver profile {source}: {where} is {how!r}; use share, proportional or a "
                'quantity such as "50" or "10Gi".'
            )
        try:
            amount = q.parse_quantity(how, f"shareRequests.{name}")
        except q.QuantityError as exc:
            raise ProfileError(
                f"driver profile {source}: {where} is {how!r}, which is neither share, "
                f"proportional nor a quantity ({exc})."
            ) from None
        if amount.value <= 0:
            raise ProfileError(
                f"driver profile {source}: {where} is {how!r}; a sharer must ask for a positive amount."
            )
        out[key] = str(amount)
    out.setdefault(shared, "share")
    return out


def _check_qualified_name(value: str, key: str, source: str) -> None:
    """A DRA attribute or capacity name: a C identifier of at most 32 characters, optionally prefixed by a
    DNS subdomain of at most 63 characters and '/', as the API server validates it."""
    domain, slash, ident = value.rpartition("/")
    bad_domain = bool(slash) and (not _DNS_SUBDOMAIN.match(domain) or len(domain) > _MAX_DOMAIN)
    if bad_domain or not _C_IDENTIFIER.match(ident) or len(ident) > _MAX_ID:
        raise ProfileError(
            f"driver profile {source}: '{key}' {value!r} is not a DRA qualified name (a C "
            f"identifier of at most {_MAX_ID} characters, optionally prefixed by a DNS "
            f"subdomain and '/'); use the name the driver publishes."
        )


def _check_template(template: str, source: str) -> None:
    """Env templates are filled with str.format: parse them now, not when the visibility check runs."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ProfileError(
            f"driver profile {source}: 'claims.visibility.env' template {template!r} does "
            f"not parse ({exc}); write placeholders as {{name}} and double literal "
            "braces."
        ) from None
    for _, field_name, _, _ in parts:
        if field_name is not None and not _C_IDENTIFIER.match(field_name):
            raise ProfileError(
                f"driver profile {source}: 'claims.visibility.env' template {template!r} has "
                f"placeholder {{{field_name}}}; placeholders must be attribute names such as "
                "{index}, {uuid}, {device}, {pool}, {shareID} or {granted}."
            )


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line: where and what (PyYAML's own text spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + " ".join(str(problem).split())


def template_fields(template: str) -> list[str]:
    return _TEMPLATE_FIELD.findall(template)


def resolve_profile_path(name_or_path: str) -> Path:
    """A profile name (``reference``) is looked up in the shipped profiles (conformance/data/drivers);
    anything else is a path, relative to the current directory."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or "/" in name_or_path:
        return candidate
    return PROFILE_DIR / f"{name_or_path}.yaml"


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name_or_path: str) -> DriverProfile:
    path = resolve_profile_path(name_or_path)
    if not path.is_file():
        raise ProfileError(
            f"driver profile {name_or_path!r} not found (looked for {path}); pass a path to a "
            f"profile file or one of: {', '.join(available_profiles())}."
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ProfileError(
            f"driver profile {path}: not valid YAML ({yaml_problem(exc)}); fix the syntax."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(
            f"driver profile {path} cannot be read ({exc}); pass a readable YAML file."
        ) from None
    return parse_profile(data, str(path))


def parse_profile(data: Any, source: str = "<inline>") -> DriverProfile:
    _check(data, _PROFILE, "", source)
    _check_semantics(data, source)
    install = data["install"]
    claims = data["claims"]
    vis = claims["visibility"]
    image = install.get("image", {})
    return DriverProfile(
        name=data["name"],
        description=data.get("description", ""),
        driver=data["driver"],
        device_class=data["deviceClass"],
        capacity=data.get("capacity", "memory"),
        share_requests=_share_requests(data, source),
        identity_attribute=data.get("identityAttribute", "uuid"),
        product_attribute=data.get("productAttribute", "productName"),
        install=Install(
            method=install["method"],
            chart=install.get("chart", ""),
            release=install.get("release", ""),
            namespace=install.get("namespace", ""),
            values=dict(install.get("values", {})),
            image_repository=image.get("repository", ""),
            image_tag=str(image.get("tag", "")),
            pod_selector=install.get("podSelector", ""),
        ),
        sharing=claims["sharing"],
        request_policy=claims["requestPolicy"],
        visibility=Visibility(
            method=vis["method"], env=dict(vis.get("env", {})), device_nodes=tuple(vis.get("deviceNodes", []))
        ),
        enforcement=claims.get("enforcement", False),
        sim=_sim_launch(data["sim"]) if "sim" in data else None,
        pod_image=data.get("pod", {}).get("image", "busybox:1.36"),
        source=source,
    )


def resolve_sim_launch(
    profile: DriverProfile, driver_command: str | None, nodes: Iterable[str], gpus: str | None
) -> LaunchSpec:
    """The profile's sim: section, with ${VARIABLES} from the environment and --sim-driver-command, as
    the sim kubelet's launch spec; ProfileError names the field and the fix. The input check before a
    run and the sim provider both call this, so they cannot disagree."""
    if profile.sim is None:
        raise ProfileError(
            f"driver profile {profile.name!r} has no 'sim' section, so the sim cannot "
            "run its driver; add sim.command (docs/driver-profiles.md) or use --cluster "
            "kind or existing."
        )
    override = shlex.split(driver_command) if driver_command else None
    fix = "give the driver's path with --sim-driver-command (make SIM_DRIVER_COMMAND=/path/to/driver)"
    try:
        if override:  # the command the user named is checked first: the rest is the profile's
            LaunchSpec.from_dict({"name": profile.driver, "command": override}).executable(
                "--sim-driver-command", fix=fix
            )
        spec = profile.sim.resolve(profile.driver, os.environ, override)
        spec.check_nodes(nodes)
        spec.executable("--sim-driver-command" if override else "sim.command", fix=fix)
    except (ProfileError, LaunchError) as exc:
        raise ProfileError(f"driver profile {profile.name}: {exc}") from None
    if gpus and "gpus" not in spec.placeholders():
        raise ProfileError(
            f"--gpus {gpus} has no effect on driver profile {profile.name}: its sim "
            "section does not use {gpus} (the driver finds its own hardware); drop "
            "--gpus (make GPUS=)."
        )
    return spec
