"""The resourceclaim controller over HTTP: templates to claims, reservedFor cleanup, deallocation."""

from __future__ import annotations

import re

from tests.support.allocator_builders import claim, device, device_class, exactly, slice_
from tests.support.scheduler_sim import bound, control_plane_sim, pod_with_claim, pod_with_template, template

ANNOTATION = "resource.kubernetes.io/pod-claim-name"


def _setup(sim) -> None:
    sim.res.create_device_class(device_class())
    sim.res.create_resource_slice(slice_("s", [device("gpu-0")]))


def test_template_becomes_owned_claim_recorded_in_pod_status() -> None:
    with control_plane_sim() as sim:
        _setup(sim)
        tmpl = template("t", exactly("6Gi"))
        tmpl["spec"]["metadata"] = {"labels": {"team": "ml"}}
        sim.res.create_namespaced_resource_claim_template("default", tmpl)
        created = sim.core.create_namespaced_pod("default", pod_with_template("trainer", "t"))
        pod = sim.wait_pod("trainer", bound, "pod bound with its generated claim")
        statuses = pod["status"]["resourceClaimStatuses"]
        assert [s["name"] for s in statuses] == ["gpu"]
        name = statuses[0]["resourceClaimName"]
        assert re.fullmatch(r"trainer-gpu-[a-z0-9]{5}", name)
        c = sim.claim(name)
        assert c["metadata"]["annotations"][ANNOTATION] == "gpu"
        assert c["metadata"]["labels"] == {"team": "ml"}
        (owner,) = c["metadata"]["ownerReferences"]
        assert owner["kind"] == "Pod" and owner["name"] == "trainer" and owner["controller"] is True
        assert owner["uid"] == created.metadata.uid
        assert c["spec"]["devices"]["requests"][0]["exactly"]["capacity"]["requests"]["memory"] == "6Gi"
        assert [r["uid"] for r in c["status"]["reservedFor"]] == [created.metadata.uid]
        assert "resource.kubernetes.io/delete-protection" in c["metadata"]["finalizers"]


def test_finished_pod_releases_and_deletes_its_generated_claim() -> None:
    with control_plane_sim() as sim:
        _setup(sim)
        sim.res.create_namespaced_resource_claim_template("default", template("t", exactly("6Gi")))
        sim.core.create_namespaced_pod("default", pod_with_template("job", "t"))
        sim.wait_pod("job", bound, "bound")
        sim.core.patch_namespaced_pod_status("job", "default", {"status": {"phase": "Succeeded"}})
        sim.wait_claims(lambda cs: not cs, "the generated claim deleted once its pod finished")
        assert sim.pod("job")["status"]["phase"] == "Succeeded"  # the pod itself stays


def test_missing_template_reported_then_claim_created_when_it_appears() -> None:
    with control_plane_sim() as sim:
        _setup(sim)
        sim.core.create_namespaced_pod("default", pod_with_template("p", "later"))
        sim.quiesce()
        events = [
            e
            for e in sim.core.list_namespaced_event("default").items
            if e.reason == "FailedResourceClaimCreation"
        ]
        assert events and 'resource claim template "later"' in events[0].message
        assert not bound(sim.pod("p"))
        sim.res.create_namespaced_resource_claim_template("default", template("later", exactly("1Gi")))
        sim.wait_pod("p", bound, "bound after the template appeared")


def test_shared_claim_deallocated_only_when_last_consumer_leaves() -> None:
    with control_plane_sim() as sim:
        _setup(sim)
        sim.res.create_namespaced_resource_claim("default", claim("shared", ("gpu", exactly("6Gi"))))
        for name in ("a", "b"):
            sim.core.create_namespaced_pod("default", pod_with_claim(name, "shared"))
            sim.wait_pod(name, bound, f"pod {name} bound")
        assert len(sim.claim("shared")["status"]["reservedFor"]) == 2
        sim.core.delete_namespaced_pod("a", "default")
        sim.wait_claims(
            lambda cs: (
                [r["name"] for c in cs for r in (c.get("status") or {}).get("reservedFor") or []] == ["b"]
            ),
            "pod a removed from reservedFor",
        )
        assert sim.claim("shared")["status"]["allocation"], "still in use by b: stays allocated"
        sim.core.delete_namespaced_pod("b", "default")
        (c,) = sim.wait_claims(
            lambda cs: len(cs) == 1 and not (cs[0].get("status") or {}).get("allocation"),
            "deallocation after the last consumer left",
        )
        assert "reservedFor" not in c["status"]
        assert "resource.kubernetes.io/delete-protection" not in (c["metadata"].get("finalizers") or [])


def test_deleted_claim_waits_for_its_consumer_then_goes() -> None:
    with control_plane_sim() as sim:
        _setup(sim)
        sim.res.create_namespaced_resource_claim("default", claim("c", ("gpu", exactly("6Gi"))))
        sim.core.create_namespaced_pod("default", pod_with_claim("p", "c"))
        sim.wait_pod("p", bound, "bound")
        sim.res.delete_namespaced_resource_claim("c", "default")
        sim.quiesce()
        assert sim.claim("c")["metadata"]["deletionTimestamp"], "delete-protection keeps an in-use claim"
        sim.core.delete_namespaced_pod("p", "default")
        sim.wait_claims(lambda cs: not cs, "the claim removed once its consumer was gone")


def test_pod_entry_naming_existing_claim_is_left_alone() -> None:
    with control_plane_sim() as sim:
        _setup(sim)
        sim.res.create_namespaced_resource_claim("default", claim("mine", ("gpu", exactly("1Gi"))))
        sim.core.create_namespaced_pod("default", pod_with_claim("p", "mine"))
        pod = sim.wait_pod("p", bound, "bound")
        assert not (pod["status"].get("resourceClaimStatuses") or [])
        assert len(sim.res.list_namespaced_resource_claim("default").items) == 1
