"""The sim flags that configure the nodes (sim/kubelet/fleet.py): bad input is refused before start."""

from __future__ import annotations

from pathlib import Path

import pytest

from drakit.gpuprofiles import parse_gpus


def test_one_profile_for_every_node_or_one_per_node():
    assert parse_gpus("rtx3090x2", ["node-1", "node-2"]) == {"node-1": "rtx3090x2", "node-2": "rtx3090x2"}
    assert parse_gpus("node-2=mixed", ["node-1", "node-2"]) == {"node-2": "mixed"}


def test_relative_profile_paths_become_absolute_because_drivers_run_from_the_repo(monkeypatch, tmp_path):
    # A valid profile: parse_gpus also parses it, with the driver's parser.
    (tmp_path / "mine.yaml").write_text(
        (Path(__file__).resolve().parents[2] / "drakit/gpus/rtx3090x2.yaml").read_text()
    )
    monkeypatch.chdir(tmp_path)
    assert parse_gpus("mine.yaml", ["n"]) == {"n": str(tmp_path / "mine.yaml")}


@pytest.mark.parametrize(("text", "nodes", "fragment"), [
    ("", ["n"], "--gpus is empty"),
    ("rtx3090x2", [], "add --nodes"),
    ("node-9=rtx3090x2", ["node-1"], "node 'node-9', which is not in --nodes"),
    ("node-1=rtx3090x2,node-1=mixed", ["node-1"], "names node 'node-1' twice"),
    ("node-1=", ["node-1"], "must look like NODE=PROFILE"),
    ("no-such-profile", ["node-1"], "GPU profile 'no-such-profile': not a file and not one of"),
])  # fmt: skip
def test_bad_gpus_flag_names_the_problem(text, nodes, fragment):
    with pytest.raises(ValueError) as err:
        parse_gpus(text, nodes)
    assert fragment in str(err.value)
