"""Container env and argv as the kubelet builds them (sim/kubelet/containers.py, podstatus.py)."""

from __future__ import annotations

import base64
import sys

import pytest

from sim.kubelet.containers import ContainerConfigError, StartError, container_env, expand, resolve_argv
from sim.kubelet.podstatus import ContainerState, pod_phase

POD = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"app": "gpu"}},
    "spec": {"serviceAccountName": "sa"},
}
OBJECTS = {
    ("configmaps", "ns", "cm"): {"data": {"MODE": "fast", "LEVEL": "3"}},
    ("secrets", "ns", "sec"): {"data": {"TOKEN": base64.b64encode(b"s3cret").decode()}},
}


def lookup(resource: str, namespace: str, name: str):
    return OBJECTS.get((resource, namespace, name))


def env_of(container: dict) -> dict[str, str]:
    return container_env(POD, {"name": "c", **container}, "node-1", lookup)


def test_env_values_field_refs_config_maps_secrets_and_expansion():
    env = env_of({
        "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
        "env": [
            {"name": "A", "value": "one"},
            {"name": "B", "value": "$(A)-two-$(MISSING)-$$(A)"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "TOKEN"}}},
            {"name": "OPT",
             "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "nope", "optional": True}}},
        ],
    })  # fmt: skip
    assert env["A"] == "one"
    assert env["B"] == "one-two-$(MISSING)-$(A)"
    assert (env["POD"], env["NODE"], env["APP"], env["TOKEN"]) == ("p", "node-1", "gpu", "s3cret")
    assert env["CM_MODE"] == "fast" and env["HOSTNAME"] == "p" and "OPT" not in env
    assert "PATH" in env


@pytest.mark.parametrize(("var", "fragment"), [
    ({"name": "X", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}},
     'configmap "gone" not found'),
    ({"name": "X", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "nokey"}}},
     "couldn't find key nokey"),
    ({"name": "X", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}, "only fieldRef"),
    ({"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}, "unsupported fieldRef"),
])  # fmt: skip
def test_env_that_cannot_be_built_is_a_config_error_naming_the_source(var, fragment):
    with pytest.raises(ContainerConfigError, match=fragment):
        env_of({"env": [var]})


def test_argv_is_command_plus_args_expanded_without_a_shell():
    env = {"PATH": "/usr/bin:/bin", "WHO": "gpu"}
    argv = resolve_argv({"name": "c", "command": ["echo"], "args": ["$(WHO)", "a b", "$HOME"]}, env)
    assert argv[1:] == ["gpu", "a b", "$HOME"]  # one argument with a space; $HOME is not a shell variable
    assert argv[0].endswith("/echo")


def test_missing_command_or_executable_fails_like_the_runtime():
    with pytest.raises(ContainerConfigError, match="does not pull or run images"):
        resolve_argv({"name": "c", "image": "nvidia/cuda"}, {"PATH": "/bin"})
    with pytest.raises(StartError, match='exec: "nvidia-smi-nope": executable file not found in \\$PATH'):
        resolve_argv({"name": "c", "command": ["nvidia-smi-nope"]}, {"PATH": "/bin"})
    with pytest.raises(StartError, match="no such file or directory"):
        resolve_argv({"name": "c", "command": ["/no/such/bin"]}, {"PATH": "/bin"})
    assert resolve_argv({"name": "c", "command": [sys.executable]}, {})[0] == sys.executable


def terminated(code: int) -> dict:
    return {"terminated": {"exitCode": code}}


@pytest.mark.parametrize(("states", "policy", "done", "want"), [
    ([{"waiting": {"reason": "ContainerCreating"}}], "Always", False, "Pending"),
    ([{"running": {}}, terminated(0)], "Never", False, "Running"),
    ([terminated(0), terminated(0)], "Never", True, "Succeeded"),
    ([terminated(0), terminated(1)], "Never", True, "Failed"),
    ([terminated(1)], "OnFailure", False, "Running"),
    ([terminated(0)], "OnFailure", True, "Succeeded"),
    ([terminated(0)], "Always", False, "Running"),
])  # fmt: skip
def test_pod_phase_follows_the_kubelets_rules(states, policy, done, want):
    containers = [ContainerState(f"c{i}", "x", state=s, done=done) for i, s in enumerate(states)]
    assert pod_phase(containers, policy) == want


def test_expand_keeps_unknown_references_and_unescapes_dollars():
    assert expand("$(A)$(B)$$", {"A": "x"}) == "x$(B)$"
