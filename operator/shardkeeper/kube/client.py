"""Plain-JSON requests to the API server, over any :class:`Transport`.

The operator, the process node and the shard runtime work with objects as the API returns
them (dicts), which keeps their pure modules free of the official client's generated
classes. How a request reaches the server is a transport's business: the operator and the
node use the official client's (:class:`ApiClientTransport`: its kubeconfig loading, TLS
and authentication); the shard runtime uses :mod:`shardkeeper.kube.transport`, which never
imports the official client. Encoding, status checks and :class:`ApiError` live here only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlencode

import urllib3

REQUEST_TIMEOUT = 30.0

Timeout = float | tuple[float, float]


class Transport(Protocol):
    """Sends one request to the API server and returns its answer unread, whatever its
    status. ``path`` starts with ``/`` and carries the query string."""

    def send(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str],
        body: bytes | None,
        timeout: urllib3.Timeout,
    ) -> urllib3.BaseHTTPResponse: ...


class ApiError(Exception):
    """The API server refused a request; ``status`` is its HTTP status, ``message`` the
    API's own words (the Status object's message, else the body)."""

    def __init__(self, status: int, reason: str, body: Any) -> None:
        message = body.get("message", body) if isinstance(body, dict) else body
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.body = body
        self.message = str(message)


def call(
    transport: Transport,
    method: str,
    path: str,
    *,
    query: Mapping[str, Any] | None = None,
    body: Any = None,
    content_type: str = "application/json",
    timeout: Timeout = REQUEST_TIMEOUT,
    accept: str = "application/json",
) -> urllib3.BaseHTTPResponse:
    """The raw response (not yet read: watches stream it), or :class:`ApiError`."""
    if query:
        path += "?" + urlencode([(key, _param(value)) for key, value in query.items()])
    headers = {"Accept": accept, "Content-Type": content_type}
    # an apply-patch+yaml body is sent as JSON, which is YAML too
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    response = transport.send(method, path, headers=headers, body=data, timeout=_timeout(timeout))
    if 200 <= response.status <= 299:
        return response
    raw = response.data
    response.release_conn()
    try:
        parsed: Any = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw.decode(errors="replace")
    raise ApiError(response.status, response.reason or "", parsed)


def request(
    transport: Transport,
    method: str,
    path: str,
    *,
    query: Mapping[str, Any] | None = None,
    body: Any = None,
    content_type: str = "application/json",
    timeout: Timeout = REQUEST_TIMEOUT,
) -> Any:
    """One request, JSON in and out; None for an empty response."""
    response = call(
        transport, method, path, query=query, body=body, content_type=content_type, timeout=timeout
    )
    data = response.data
    return json.loads(data) if data else None


class ApiClientTransport:
    """The official client's connection pool, server and credentials (a
    ``kubernetes.client.ApiClient``), as its generated APIs use them."""

    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client

    def send(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str],
        body: bytes | None,
        timeout: urllib3.Timeout,
    ) -> urllib3.BaseHTTPResponse:
        api = self.api_client
        headers = {**headers, **api.default_headers}
        if api.cookie:
            headers["Cookie"] = api.cookie
        # a bearer token goes in a header; its refresh hook (in-cluster, exec) runs here
        api.update_params_for_auth(headers, [], ["BearerToken"])
        response: urllib3.BaseHTTPResponse = api.rest_client.pool_manager.request(
            method,
            api.configuration.host + path,
            body=body,
            headers=headers,
            timeout=timeout,
            preload_content=False,
        )
        return response


def _timeout(timeout: Timeout) -> urllib3.Timeout:
    # as the official client reads ``_request_timeout``: a total, or (connect, read)
    if isinstance(timeout, tuple):
        return urllib3.Timeout(connect=timeout[0], read=timeout[1])
    return urllib3.Timeout(total=timeout)


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
