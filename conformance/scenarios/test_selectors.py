"""selectors: the seed's templates, aimed at the driver under test, select by product."""

from __future__ import annotations

from collections import Counter

import pytest

from conformance.templates import ClaimTemplate, retarget
from conformance.workloads import Scenario

pytestmark = pytest.mark.selectors

WRONG_PRODUCT = "No Such GPU Model (conformance)"


def _template(sc: Scenario, name: str) -> ClaimTemplate:
    for t in sc.suite.templates:
        if t.name == name:
            return t
    pytest.skip(f"claim template {name!r} is not among the templates given (--claim-templates)")


def _fits(sc: Scenario, template: ClaimTemplate) -> None:
    from conformance.capacity import parse

    asked = (template.request().get("capacity") or {}).get("requests", {}).get("memory")
    if asked and not any(g.capacity and g.capacity.value >= parse(asked) for g in sc.suite.usable_gpus()):
        pytest.skip(f"no GPU under test has {asked} for template {template.name}")


def test_product_selector_matches_only_that_model(scenario: Scenario) -> None:
    sc = scenario
    # The rarest model makes the selector choose: every other card is a wrong answer.
    models = Counter(g.product for g in sc.suite.usable_gpus())
    gpu = min(sc.suite.usable_gpus(), key=lambda g: models[g.product])
    tmpl = _template(sc, "gpu-6gi-3090")
    _fits(sc, tmpl)
    ns = sc.namespace("a")
    name = sc.create_template_object(ns, retarget(tmpl, sc.profile, product=gpu.product))
    pod = sc.pod(ns, "by-product", name)
    sc.wait_running([pod])
    result = sc.single_result(pod)
    landed = [g for g in sc.suite.preflight.gpus if (g.pool, g.device) == (result["pool"], result["device"])]
    assert landed and landed[0].product == gpu.product, (
        f"a selector on {sc.profile.product_attribute} == {gpu.product!r} got {result['pool']}/"
        f"{result['device']} ({landed[0].product if landed else 'unknown device'})"
    )


def test_wrong_product_stays_pending(scenario: Scenario) -> None:
    sc = scenario
    ns = sc.namespace("a")
    name = sc.create_template_object(
        ns, retarget(_template(sc, "gpu-6gi-3090"), sc.profile, product=WRONG_PRODUCT)
    )
    sc.wait_rejected(sc.pod(ns, "wrong-product", name))


def test_any_model_template_schedules(scenario: Scenario) -> None:
    sc = scenario
    tmpl = _template(sc, "gpu-6gi-any")
    _fits(sc, tmpl)
    ns = sc.namespace("a")
    pod = sc.pod(ns, "any-model", sc.create_template_object(ns, retarget(tmpl, sc.profile)))
    sc.wait_running([pod])
    assert sc.results_of(pod), f"{pod.key} runs but its claim has no allocation from {sc.profile.driver}"
