"""The API server through the official `kubernetes` client. Objects are handled as the JSON the server
sends (raw dicts), so nothing the server stored is lost or reshaped by client-side models."""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from driver.config import ConfigError


class ApiCallError(RuntimeError):
    pass


def api_client(kubeconfig: str | None) -> client.ApiClient:
    """From a kubeconfig file, or the in-cluster service account when none is given."""
    configuration = client.Configuration()
    if kubeconfig:
        try:
            config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        except (config.ConfigException, OSError, ValueError) as err:
            raise ConfigError(
                f"--kubeconfig {kubeconfig}: cannot be used ({err}); pass a kubeconfig file "
                "for this cluster, or leave --kubeconfig and KUBECONFIG unset in a pod"
            ) from err
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException as err:
            raise ApiCallError(
                f"no --kubeconfig given and not running in a cluster ({err}); pass "
                "--kubeconfig PATH or set KUBECONFIG"
            ) from err
    return client.ApiClient(configuration)


def body(response: Any) -> Any:
    """The decoded JSON of a call made with _preload_content=False."""
    return json.loads(response.data)


class ClaimLister:
    """Every ResourceClaim in the cluster (the driver filters them; claims have no field selector for
    their allocation), read page by page."""

    def __init__(self, api: client.ApiClient, timeout: float = 30.0, page: int = 500) -> None:
        self.resource = client.ResourceV1Api(api)
        self.timeout = timeout
        self.page = page

    def __call__(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        token = None
        while True:
            try:
                doc = body(
                    self.resource.list_resource_claim_for_all_namespaces(
                        limit=self.page,
                        _continue=token,
                        _preload_content=False,
                        _request_timeout=self.timeout,
                    )
                )
            except ApiException as err:
                raise ApiCallError(
                    f"listing ResourceClaims to rebuild the checkpoint: HTTP {err.status} {err.reason}"
                ) from err
            items += doc.get("items") or []
            token = (doc.get("metadata") or {}).get("continue")
            if not token:
                return items


class ClaimReader:
    def __init__(self, api: client.ApiClient, timeout: float = 10.0) -> None:
        self.resource = client.ResourceV1Api(api)
        self.timeout = timeout

    def __call__(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The claim as stored, or None when it does not exist."""
        try:
            return body(
                self.resource.read_namespaced_resource_claim(
                    name, namespace, _preload_content=False, _request_timeout=self.timeout
                )
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise ApiCallError(
                f"reading ResourceClaim {namespace}/{name}: HTTP {err.status} {err.reason}"
            ) from err
