"""A damaged checkpoint on a node with running pods: the driver refuses to start with advice, the advice
is followed to the letter, and every running pod's CDI spec survives the restart (the real reference
driver under the sim kubelet, over the HTTP API with the kubeconfig's token)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from driver.checkpoint import Checkpoint
from tests.sim.test_kubelet_e2e import DRIVER, Sim, sim_with

PODS = 8  # 4 sharers of 6Gi on each of the two 24Gi GPUs of rtx3090x2


def test_following_the_corrupt_checkpoint_advice_keeps_every_running_pods_cdi_spec() -> None:
    with sim_with(slice_wipe_delay=30) as handle:
        sim = Sim(handle)
        try:
            sim.setup_class_and_template("six", "6Gi")
            names = [f"p{i}" for i in range(PODS)]
            for name in names:
                sim.pod(name, "six")
            uids = [sim.claim_of(sim.wait_running(name, timeout=90))["metadata"]["uid"] for name in names]
            dirs = sim.kubelet.dirs

            def spec(uid: str) -> Path:
                return dirs.cdi / f"k8s.{DRIVER}-gpu_{uid}.json"

            specs = {uid: spec(uid).read_bytes() for uid in uids}
            checkpoint = dirs.driver_state / "checkpoint.json"
            assert set(Checkpoint(dirs.driver_state).load()) == set(uids)

            supervisor = sim.kubelet.driver
            first = sim.kubelet.plugins.client(DRIVER)
            sim.kubelet.stop_driver()
            checkpoint.write_bytes(checkpoint.read_bytes()[:40])  # a torn write
            exits = len(supervisor.exit_codes)
            sim.kubelet.start_driver()
            with supervisor._cond:
                assert supervisor._cond.wait_for(lambda: len(supervisor.exit_codes) > exits, timeout=60)
            assert supervisor.exit_codes[exits] == 2, sim.driver_log()[-2000:]
            assert {uid: spec(uid).read_bytes() for uid in uids} == specs, "a refused start removed specs"

            advice = re.search(r"\(e\.g\. mv (\S+) (\S+)\)", sim.driver_log())
            assert advice, sim.driver_log()[-2000:]
            shutil.move(advice.group(1), advice.group(2))  # exactly what it says

            sim.kubelet.wait_driver_registered(60, newer_than=first)  # restarted by the supervisor
            assert {uid: spec(uid).read_bytes() for uid in uids} == specs, sim.driver_log()[-3000:]
            assert set(Checkpoint(dirs.driver_state).load()) == set(uids)
            assert f"rebuilt {PODS} prepared claim(s) from the API" in sim.driver_log()

            # The rebuilt state is real state: deleting the pods unprepares and removes every spec.
            for name in names:
                sim.core.delete_namespaced_pod(name, "default")
            for name in names:
                sim.wait_gone(name, timeout=60)
            assert [uid for uid in uids if spec(uid).exists()] == []
            assert Checkpoint(dirs.driver_state).load() == {}
        finally:
            sim.api.close()
