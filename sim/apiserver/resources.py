"""The table of resource types the simulated apiserver serves.

Names follow kubectl: core resources are bare plurals ("pods"), others are "<plural>.<group>"
("resourceclaims.resource.k8s.io"). Everything else in the server looks types up here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import ApiError


@dataclass(frozen=True)
class ResourceType:
    plural: str
    group: str  # "" for core
    version: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()  # "status", "binding", "log"
    categories: tuple[str, ...] = ()
    # Field selectors the server accepts beyond metadata.name / metadata.namespace.
    field_labels: tuple[str, ...] = ()
    singular: str = field(default="")

    @property
    def name(self) -> str:
        return self.plural if not self.group else f"{self.plural}.{self.group}"

    @property
    def api_version(self) -> str:
        return self.version if not self.group else f"{self.group}/{self.version}"

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    @property
    def singular_name(self) -> str:
        return self.singular or self.kind.lower()


_EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)

RESOURCES: tuple[ResourceType, ...] = (
    # core/v1
    ResourceType(
        "namespaces", "", "v1", "Namespace", False, ("ns",), ("status",), field_labels=("status.phase",)
    ),
    ResourceType(
        "nodes", "", "v1", "Node", False, ("no",), ("status",), field_labels=("spec.unschedulable",)
    ),
    ResourceType(
        "pods",
        "",
        "v1",
        "Pod",
        True,
        ("po",),
        ("status", "binding", "log"),
        ("all",),
        field_labels=(
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ),
    ),
    ResourceType("events", "", "v1", "Event", True, ("ev",), field_labels=_EVENT_FIELDS),
    ResourceType("serviceaccounts", "", "v1", "ServiceAccount", True, ("sa",)),
    ResourceType("configmaps", "", "v1", "ConfigMap", True, ("cm",)),
    ResourceType("secrets", "", "v1", "Secret", True, field_labels=("type",)),
    ResourceType("services", "", "v1", "Service", True, ("svc",), ("status",), ("all",)),
    ResourceType("endpoints", "", "v1", "Endpoints", True, ("ep",)),
    ResourceType("persistentvolumeclaims", "", "v1", "PersistentVolumeClaim", True, ("pvc",), ("status",)),
    ResourceType("resourcequotas", "", "v1", "ResourceQuota", True, ("quota",), ("status",)),
    ResourceType("limitranges", "", "v1", "LimitRange", True, ("limits",)),
    # resource.k8s.io/v1
    ResourceType("deviceclasses", "resource.k8s.io", "v1", "DeviceClass", False),
    ResourceType(
        "resourceslices",
        "resource.k8s.io",
        "v1",
        "ResourceSlice",
        False,
        field_labels=("spec.driver", "spec.nodeName", "spec.pool.name"),
    ),
    ResourceType("resourceclaims", "resource.k8s.io", "v1", "ResourceClaim", True, (), ("status",)),
    ResourceType("resourceclaimtemplates", "resource.k8s.io", "v1", "ResourceClaimTemplate", True),
    # what a DRA driver's Helm chart renders: stored, validated, never run
    ResourceType("deployments", "apps", "v1", "Deployment", True, ("deploy",), ("status",), ("all",)),
    ResourceType("daemonsets", "apps", "v1", "DaemonSet", True, ("ds",), ("status",), ("all",)),
    ResourceType("statefulsets", "apps", "v1", "StatefulSet", True, ("sts",), ("status",), ("all",)),
    ResourceType("replicasets", "apps", "v1", "ReplicaSet", True, ("rs",), ("status",), ("all",)),
    ResourceType("jobs", "batch", "v1", "Job", True, (), ("status",), ("all",)),
    ResourceType("roles", "rbac.authorization.k8s.io", "v1", "Role", True),
    ResourceType("rolebindings", "rbac.authorization.k8s.io", "v1", "RoleBinding", True),
    ResourceType("clusterroles", "rbac.authorization.k8s.io", "v1", "ClusterRole", False),
    ResourceType("clusterrolebindings", "rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", False),
    ResourceType(
        "validatingadmissionpolicies",
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingAdmissionPolicy",
        False,
        (),
        ("status",),
    ),
    ResourceType(
        "validatingadmissionpolicybindings",
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingAdmissionPolicyBinding",
        False,
    ),
    ResourceType(
        "validatingwebhookconfigurations",
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        False,
    ),
    ResourceType(
        "mutatingwebhookconfigurations",
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        False,
    ),
    ResourceType(
        "customresourcedefinitions",
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        False,
        ("crd", "crds"),
        ("status",),
    ),
    ResourceType("priorityclasses", "scheduling.k8s.io", "v1", "PriorityClass", False, ("pc",)),
    ResourceType("poddisruptionbudgets", "policy", "v1", "PodDisruptionBudget", True, ("pdb",), ("status",)),
    ResourceType("leases", "coordination.k8s.io", "v1", "Lease", True),
    ResourceType("runtimeclasses", "node.k8s.io", "v1", "RuntimeClass", False),
)

BY_NAME: dict[str, ResourceType] = {r.name: r for r in RESOURCES}
BY_GVK: dict[tuple[str, str], ResourceType] = {(r.api_version, r.kind): r for r in RESOURCES}
BY_GROUP_VERSION_PLURAL: dict[tuple[str, str, str], ResourceType] = {
    (r.group, r.version, r.plural): r for r in RESOURCES
}


def lookup(resource: str) -> ResourceType:
    """Resolve a Store resource name ("pods", "resourceclaims.resource.k8s.io")."""
    rt = BY_NAME.get(resource)
    if rt is None:
        raise ApiError(
            404,
            "NotFound",
            f"the server could not find the requested resource ({resource}); "
            f"known resources: {', '.join(sorted(BY_NAME))}",
        )
    return rt


def group_versions() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in RESOURCES:
        versions = out.setdefault(r.group, [])
        if r.version not in versions:
            versions.append(r.version)
    return out
