"""A thin JSON client for the API server, on top of the official client's transport.

The node works with objects as the API returns them (plain dicts), which keeps the pure
modules free of the client's generated classes. The official client still handles the
kubeconfig, TLS and authentication.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kubernetes import client, config
from kubernetes.watch.watch import iter_resp_lines

from shardkeeper.kube.client import ApiClientTransport, ApiError, call, request
from shardkeeper.kube.paths import resource_path

__all__ = [
    "MERGE_PATCH",
    "STRATEGIC_MERGE_PATCH",
    "ApiError",
    "Kube",
    "ServerInfo",
    "collection",
    "key_of",
    "namespaced",
]
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


@dataclasses.dataclass(frozen=True)
class ServerInfo:
    """Where the API server is, as pods see it (KUBERNETES_SERVICE_HOST/PORT, ca.crt)."""

    host: str
    port: int
    ca_pem: str


class Kube:
    def __init__(self, api_client: Any) -> None:
        self._api = ApiClientTransport(api_client)

    @classmethod
    def from_kubeconfig(cls, path: Path) -> tuple[Kube, ServerInfo]:
        configuration = client.Configuration()
        config.load_kube_config(config_file=str(path), client_configuration=configuration)
        # watches hold connections and pod workers call in parallel
        configuration.connection_pool_maxsize = 64
        url = urlsplit(configuration.host)
        ca_pem = Path(configuration.ssl_ca_cert).read_text() if configuration.ssl_ca_cert else ""
        info = ServerInfo(
            host=url.hostname or "127.0.0.1",
            port=url.port or (443 if url.scheme == "https" else 80),
            ca_pem=ca_pem,
        )
        return cls(client.ApiClient(configuration)), info

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        return request(self._api, method, path, query=query, body=body, content_type=content_type)

    def get(self, path: str, query: Mapping[str, Any] | None = None) -> Any:
        """The object at ``path``, or None if there is none."""
        try:
            return self.request("GET", path, query=query)
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    def create(self, path: str, body: Mapping[str, Any]) -> Any:
        return self.request("POST", path, body=body)

    def patch(self, path: str, body: Mapping[str, Any], content_type: str = MERGE_PATCH) -> Any:
        return self.request("PATCH", path, body=body, content_type=content_type)

    def delete(self, path: str, body: Mapping[str, Any] | None = None) -> bool:
        """Delete; False if it was already gone."""
        try:
            self.request("DELETE", path, body=body)
        except ApiError as err:
            if err.status == 404:
                return False
            raise
        return True

    def watch(
        self, path: str, query: Mapping[str, Any], *, read_timeout: float
    ) -> Iterator[dict[str, Any]]:
        """Watch events, one dict per line, until the server ends the watch."""
        response = call(
            self._api, "GET", path, query={**query, "watch": "true"}, timeout=(10.0, read_timeout)
        )
        try:
            for line in iter_resp_lines(response):
                if line:
                    yield json.loads(line)
        finally:
            response.close()
            response.release_conn()


def namespaced(resource: str, namespace: str, name: str = "", sub: str = "") -> str:
    """The path of a core/v1 namespaced resource (or its collection)."""
    return resource_path("v1", resource, namespace, name, sub)


def collection(resource: str, namespace: str | None) -> str:
    """All namespaces' objects when ``namespace`` is None."""
    return resource_path("v1", resource, namespace)


def key_of(obj: Mapping[str, Any]) -> str:
    meta = obj["metadata"]
    return f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else str(meta["name"])
