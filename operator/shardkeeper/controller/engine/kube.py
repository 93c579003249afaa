"""The operator's writes to the API server: server-side apply, deletes, lists and Events.

Reads come from the watch cache (see cache.py); this module only talks to the API server
when something must change or cannot be watched. Every call runs in a thread pool, so a
slow request holds up one reconcile, not the event loop, and every call is counted in
the operator's metrics.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from shardkeeper import __version__
from shardkeeper.api.meta import API_VERSION
from shardkeeper.controller.engine import metrics
from shardkeeper.controller.specs.names import FIELD_MANAGER
from shardkeeper.kube.client import ApiClientTransport, ApiError, request
from shardkeeper.kube.config import locate
from shardkeeper.kube.paths import resource_path

T = TypeVar("T")
APPLY_PATCH = "application/apply-patch+yaml"
USER_AGENT = f"shardkeeper-operator/{__version__}"

# (apiVersion, kind) -> plural; all of them are namespaced
PLURALS: dict[tuple[str, str], str] = {
    (API_VERSION, "Task"): "tasks",
    (API_VERSION, "Shard"): "shards",
    (API_VERSION, "StorageMapping"): "storagemappings",
    (API_VERSION, "Collection"): "collections",
    ("apps/v1", "StatefulSet"): "statefulsets",
    ("v1", "Service"): "services",
    ("v1", "ServiceAccount"): "serviceaccounts",
    ("v1", "Pod"): "pods",
    ("v1", "Secret"): "secrets",
    ("v1", "Event"): "events",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
    ("rbac.authorization.k8s.io/v1", "Role"): "roles",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "rolebindings",
    ("coordination.k8s.io/v1", "Lease"): "leases",
}

__all__ = ["ApiError", "AsyncKube", "configuration", "connect", "path"]


def path(api_version: str, kind: str, namespace: str, name: str = "", sub: str = "") -> str:
    return resource_path(api_version, PLURALS[(api_version, kind)], namespace, name, sub)


def configuration(kubeconfig: Path | None = None) -> Any:
    """The official client's configuration for the cluster the operator runs against, from
    where :func:`shardkeeper.kube.config.locate` says the credentials are."""
    from kubernetes import client, config

    source = locate(kubeconfig, os.environ)
    configured = client.Configuration()
    if source.kubeconfig is None:
        config.load_incluster_config(client_configuration=configured)
    else:
        config.load_kube_config(config_file=str(source.kubeconfig), client_configuration=configured)
    return configured


def connect(kubeconfig: Path | None = None, *, pool_size: int = 32) -> Any:
    """A client for the cluster the operator runs against (see :func:`configuration`)."""
    from kubernetes import client

    configured = configuration(kubeconfig)
    configured.connection_pool_maxsize = pool_size
    api_client = client.ApiClient(configured)
    api_client.user_agent = USER_AGENT
    return api_client


class AsyncKube:
    """Async calls over the blocking client, each in a bounded thread pool."""

    def __init__(self, api_client: Any, *, threads: int = 16) -> None:
        self.api_client = api_client
        self.transport = ApiClientTransport(api_client)
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="kube")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def run(self, fn: Callable[[], T]) -> T:
        """Run any blocking call (a bucket check, too) in the pool."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def _request(
        self,
        verb: str,
        resource: str,
        method: str,
        url: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        metrics.API_REQUESTS.labels(verb=verb, resource=resource).inc()
        call = functools.partial(
            request, self.transport, method, url, query=query, body=body, content_type=content_type
        )
        return await self.run(call)

    async def apply(self, obj: Mapping[str, Any], *, subresource: str = "") -> Any:
        """Server-side apply as ``shardkeeper-operator``, forcing conflicts: these fields
        are the operator's, and a stray edit of them is put right."""
        meta = obj["metadata"]
        url = path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"], subresource)
        resource = PLURALS[(obj["apiVersion"], obj["kind"])] + (
            f"/{subresource}" if subresource else ""
        )
        return await self._request(
            "apply",
            resource,
            "PATCH",
            url,
            query={"fieldManager": FIELD_MANAGER, "force": "true"},
            body=dict(obj),
            content_type=APPLY_PATCH,
        )

    async def delete(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        *,
        uid: str | None = None,
        propagation: str = "Background",
    ) -> bool:
        """Delete (only the object with ``uid``, if given); False if it was already gone."""
        body: dict[str, Any] = {"propagationPolicy": propagation}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            await self._request(
                "delete",
                PLURALS[(api_version, kind)],
                "DELETE",
                path(api_version, kind, namespace, name),
                body=body,
            )
        except ApiError as err:
            if err.status in (404, 409):  # gone, or replaced by a new object of that name
                return False
            raise
        return True

    async def list_objects(
        self, api_version: str, kind: str, namespace: str, *, labels: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        found = await self._request(
            "list",
            PLURALS[(api_version, kind)],
            "GET",
            path(api_version, kind, namespace),
            query={"labelSelector": selector},
        )
        items: list[dict[str, Any]] = found.get("items", []) if found else []
        return items

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> Any:
        """The object, or None if there is none."""
        try:
            return await self._request(
                "get", PLURALS[(api_version, kind)], "GET", path(api_version, kind, namespace, name)
            )
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    async def json_patch(
        self, api_version: str, kind: str, namespace: str, name: str, ops: list[dict[str, Any]]
    ) -> Any:
        """An RFC 6902 patch; a ``test`` op in it makes the patch conditional (422 if not)."""
        return await self._request(
            "patch",
            PLURALS[(api_version, kind)],
            "PATCH",
            path(api_version, kind, namespace, name),
            body=ops,
            content_type="application/json-patch+json",
        )

    async def create(self, obj: Mapping[str, Any]) -> Any:
        """POST as ``shardkeeper-operator``: fails with 409 if the name is taken."""
        meta = obj["metadata"]
        return await self._request(
            "create",
            PLURALS[(obj["apiVersion"], obj["kind"])],
            "POST",
            path(obj["apiVersion"], obj["kind"], meta["namespace"]),
            query={"fieldManager": FIELD_MANAGER},
            body=dict(obj),
        )
