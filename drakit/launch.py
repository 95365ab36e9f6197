"""The driver launch contract: how the sim kubelet starts any driver on a node, as a DaemonSet would.

A driver is a command. On every node that runs it, the kubelet gives it the node's paths twice: as
environment variables (the names NVIDIA's gpu-kubelet-plugin reads, where one exists) and as
``{placeholders}`` in its command, args and env values. Nothing else is added: no flag of the reference
driver reaches a driver unless its spec says so. The reference driver is started through this same
contract (``reference_spec``, which is what ``python -m sim --gpus`` builds).

    spec = LaunchSpec.from_dict({"name": "gpu.nvidia.com", "command": ["/opt/gpu-kubelet-plugin"],
                                 "env": {"NVIDIA_DRIVER_ROOT": "/opt/mock"},
                                 "nodeEnv": {"node-1": {"MOCK_NVML_CONFIG": "/cfg/node-1.yaml"}}})
    launch = spec.render(node_values("node-1", NodeDirs(root), spec.name, kubeconfig, None), "node-1")
    launch.argv, launch.env          # what the kubelet runs, and the env it adds to the host's
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drakit.nodedirs import NodeDirs

# Placeholder -> what it stands for (docs/architecture.md, "Driver launch contract").
PLACEHOLDERS: dict[str, str] = {
    "node": "the node's name",
    "kubeconfig": "a kubeconfig for the sim's API server",
    "registrar_dir": "the kubelet's plugin registration directory (<node>/plugins_registry)",
    "plugins_dir": "the kubelet's plugins directory (<node>/plugins)",
    "plugin_dir": "this driver's own plugin directory (<node>/plugins/<driver name>)",
    "cdi_dir": "the node's CDI spec directory the kubelet reads (<node>/cdi)",
    "state_dir": "a state directory of the driver's own (<node>/driver-state)",
    "python": "the Python interpreter that runs the sim",
    "gpus": "the node's mock GPU profile (python -m sim --gpus), for drivers with a mock GPU backend",
}
# The environment every driver gets, like the env a DaemonSet manifest sets; the names are the ones
# NVIDIA's gpu-kubelet-plugin reads (STATE_DIR is ours: upstream keeps its state in the plugin dir).
CONTRACT_ENV: dict[str, str] = {
    "NODE_NAME": "node",
    "KUBECONFIG": "kubeconfig",
    "KUBELET_REGISTRAR_DIRECTORY_PATH": "registrar_dir",
    "KUBELET_PLUGINS_DIRECTORY_PATH": "plugins_dir",
    "CDI_ROOT": "cdi_dir",
    "STATE_DIR": "state_dir",
}
SPEC_KEYS = ("name", "command", "args", "env", "nodeEnv")
# Lines `python -m sim` prints about each node's driver; the conformance sim provider reads them.
REGISTERED_MARK = "sim: driver registered: "  # + "<node> <driver name>"
EXITED_MARK = "sim: driver exited: "  # + "<node>: <one sentence with the driver's last output>"
# It exited before registering but had published ResourceSlices: it reached the cluster, and what it
# published is for the suite to judge (e.g. fields an apiserver with a feature gate off dropped).
PUBLISHED_EXIT_MARK = "sim: driver exited after publishing: "  # + "<node>: <sentence>"

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class LaunchError(ValueError):
    """A launch spec is malformed, or its command cannot be run; the message names the field."""


def placeholders_in(template: str, where: str) -> list[str]:
    """The placeholders a template uses; unknown ones and stray braces are errors naming ``where``."""
    names = [m.group(1) for m in _TOKEN.finditer(template) if m.group(1) is not None]
    rest = _TOKEN.sub("", template)
    if "{" in rest or "}" in rest:
        raise LaunchError(
            f"'{where}' has an unbalanced brace in {template!r}; write {{{{ or }}}} for a literal brace."
        )
    for name in names:
        if name not in PLACEHOLDERS:
            raise LaunchError(
                f"'{where}' uses unknown placeholder {{{name}}} in {template!r}; known "
                f"placeholders are: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}."
            )
    return names


def fill(template: str, values: Mapping[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        if m.group(1) is None:
            return m.group(0)[0]
        return values[m.group(1)]

    return _TOKEN.sub(one, template)


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise LaunchError(f"'{where}' must be a list of strings, got {value!r}.")
    return tuple(value)


def _env(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise LaunchError(f"'{where}' must be a mapping of NAME: value, got {value!r}.")
    out = {}
    for name, v in value.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise LaunchError(f"'{where}' has {name!r}, which is not an environment variable name.")
        if name in CONTRACT_ENV:
            raise LaunchError(
                f"'{where}.{name}' is set by the sim kubelet for every driver "
                f"({PLACEHOLDERS[CONTRACT_ENV[name]]}); remove it."
            )
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            raise LaunchError(f"'{where}.{name}' must be a string, got {v!r}.")
        out[name] = str(v)
    return out


@dataclass(frozen=True)
class NodeLaunch:
    """One node's driver process: argv, and the env the kubelet adds to its own."""

    driver_name: str
    argv: list[str]
    env: dict[str, str]

    def process_env(self, repo_root: Path) -> dict[str, str]:
        # The host's env (PATH, a virtualenv), with the sim's tree importable so a Python driver in it
        # can be named by module, then the contract's and the spec's variables.
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo_root), env.get("PYTHONPATH", "")) if p)
        env.update(self.env)
        return env


@dataclass(frozen=True)
class LaunchSpec:
    """How to run one driver on every node: ``name`` is the driver name it registers."""

    name: str
    command: tuple[str, ...]
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    node_env: dict[str, dict[str, str]] = field(default_factory=dict)
    prefix: str = ""  # field names in errors: "sim." for a driver profile

    @classmethod
    def from_dict(cls, data: Any, prefix: str = "") -> LaunchSpec:
        if not isinstance(data, dict):
            raise LaunchError(
                f"a driver launch spec must be a mapping with keys {', '.join(SPEC_KEYS)}, "
                f"got {type(data).__name__}."
            )
        for key in data:
            if key not in SPEC_KEYS:
                raise LaunchError(f"unknown key '{prefix}{key}'; valid keys are: {', '.join(SPEC_KEYS)}.")
        name = data.get("name")
        if not isinstance(name, str) or len(name) > 63 or not _DNS_SUBDOMAIN.match(name):
            raise LaunchError(
                f"'{prefix}name' must be the driver name (a lower-case DNS subdomain of at "
                f"most 63 characters), got {name!r}."
            )
        command = _strings(data.get("command"), f"{prefix}command")
        node_env = data.get("nodeEnv", {})
        if not isinstance(node_env, dict):
            raise LaunchError(f"'{prefix}nodeEnv' must map node names to env mappings, got {node_env!r}.")
        spec = cls(
            name=name,
            command=command,
            args=_strings(data.get("args", []), f"{prefix}args"),
            env=_env(data.get("env", {}), f"{prefix}env"),
            node_env={str(n): _env(e, f"{prefix}nodeEnv.{n}") for n, e in node_env.items()},
            prefix=prefix,
        )
        spec.placeholders()
        return spec

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "command": list(self.command),
            "args": list(self.args),
            "env": dict(self.env),
            "nodeEnv": {n: dict(e) for n, e in self.node_env.items()},
        }

    def templates(self) -> list[tuple[str, str]]:
        """(field, template) for every string that may hold placeholders."""
        p = self.prefix
        out = [(f"{p}command[{i}]", c) for i, c in enumerate(self.command)]
        out += [(f"{p}args[{i}]", a) for i, a in enumerate(self.args)]
        out += [(f"{p}env.{k}", v) for k, v in self.env.items()]
        out += [(f"{p}nodeEnv.{n}.{k}", v) for n, e in self.node_env.items() for k, v in e.items()]
        return out

    def placeholders(self) -> set[str]:
        """Every placeholder the spec uses (and the check that each is known)."""
        if not self.command or not self.command[0]:
            raise LaunchError(f"'{self.prefix}command' is empty; name the driver's executable.")
        first = placeholders_in(self.command[0], f"{self.prefix}command[0]")
        if set(first) - {"python"}:
            raise LaunchError(
                f"'{self.prefix}command[0]' may use only {{python}}: the executable is the "
                "same on every node."
            )
        return {n for where, t in self.templates() for n in placeholders_in(t, where)}

    def check_nodes(self, nodes: Iterable[str]) -> None:
        known = set(nodes)
        for node in self.node_env:
            if node not in known:
                raise LaunchError(
                    f"'{self.prefix}nodeEnv' names node {node!r}, which is not one of the "
                    f"cluster's nodes ({', '.join(sorted(known))})."
                )

    def executable(self, field_name: str = "", fix: str = "") -> str:
        """The absolute path of the command, or a LaunchError saying it is missing or not executable
        (``field_name`` is where the command came from, ``fix`` how to give another one)."""
        what = field_name or f"{self.prefix}command"
        exe = fill(self.command[0], {"python": sys.executable})
        if "/" not in exe:
            found = shutil.which(exe)
            if found is None:
                raise LaunchError(
                    f"the driver command {exe!r} ({what}) is not on PATH; {fix or 'give its full path'}."
                )
            return found
        path = Path(exe)
        if not path.exists():
            raise LaunchError(
                f"the driver command {exe} ({what}) does not exist; {fix or 'build it or fix the path'}."
            )
        if path.is_dir() or not os.access(path, os.X_OK):
            raise LaunchError(
                f"the driver command {exe} ({what}) is not an executable file; "
                f"{fix or 'chmod +x it or fix the path'}."
            )
        return str(path.absolute())

    def render(self, values: Mapping[str, str], node: str) -> NodeLaunch:
        argv = [fill(t, values) for t in (*self.command, *self.args)]
        env = {name: values[ph] for name, ph in CONTRACT_ENV.items()}
        for k, v in {**self.env, **self.node_env.get(node, {})}.items():
            env[k] = fill(v, values)
        return NodeLaunch(driver_name=self.name, argv=argv, env=env)

    def describe(self) -> str:
        return shlex.join([*self.command, *self.args])


def node_values(
    node: str, dirs: NodeDirs, driver_name: str, kubeconfig: Path, gpus: str | None
) -> dict[str, str]:
    """The placeholder values of one node."""
    values = {
        "node": node,
        "kubeconfig": str(kubeconfig),
        "registrar_dir": str(dirs.plugins_registry),
        "plugins_dir": str(dirs.plugins),
        "plugin_dir": str(dirs.plugin_dir(driver_name)),
        "cdi_dir": str(dirs.cdi),
        "state_dir": str(dirs.driver_state),
        "python": sys.executable,
    }
    if gpus is not None:
        values["gpus"] = gpus
    return values


REFERENCE_DRIVER_NAME = "gpu.sharing.example.dev"
# How the reference driver runs on a sim node; conformance/data/drivers/reference.yaml says the same (a test
# keeps the two equal).
REFERENCE_ARGS = (
    "--node-name",
    "{node}",
    "--kubeconfig",
    "{kubeconfig}",
    "--gpus",
    "{gpus}",
    "--registry-dir",
    "{registrar_dir}",
    "--plugin-dir",
    "{plugin_dir}",
    "--cdi-dir",
    "{cdi_dir}",
    "--state-dir",
    "{state_dir}",
)


def reference_spec(
    command: list[str] | None = None, extra_args: list[str] | tuple[str, ...] = ()
) -> LaunchSpec:
    """``python -m sim --gpus P [--driver-command C] [--driver-arg A ...]``: the reference driver (or a
    variant of it, such as a mutant) with its flags, plus the extra args; its name is its --driver-name."""
    name = REFERENCE_DRIVER_NAME
    extra = list(extra_args)
    for i, a in enumerate(extra):
        if a == "--driver-name" and i + 1 < len(extra):
            name = extra[i + 1]
        elif a.startswith("--driver-name="):
            name = a.split("=", 1)[1]
    return LaunchSpec.from_dict(
        {
            "name": name,
            "command": list(command or ["{python}", "-m", "driver"]),
            "args": [*REFERENCE_ARGS, *extra],
        }
    )
