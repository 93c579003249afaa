"""Plain-JSON requests to the API server over the official client's transport.

The operator and the process node work with objects as the API returns them (dicts),
which keeps their pure modules free of the client's generated classes; the official
client still handles the kubeconfig, TLS and authentication.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

REQUEST_TIMEOUT = 30.0


class ApiError(Exception):
    """The API server refused a request; ``status`` is its HTTP status."""

    def __init__(self, status: int, reason: str, body: Any) -> None:
        message = body.get("message", body) if isinstance(body, dict) else body
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.body = body


def call(
    api_client: Any,
    method: str,
    path: str,
    *,
    query: Mapping[str, Any] | None = None,
    body: Any = None,
    content_type: str = "application/json",
    timeout: float | tuple[float, float] = REQUEST_TIMEOUT,
) -> Any:
    """The raw response (not yet read: watches stream it), or :class:`ApiError`."""
    from kubernetes.client.exceptions import ApiException

    try:
        return api_client.call_api(
            path,
            method,
            query_params=[(key, _param(value)) for key, value in (query or {}).items()],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _return_http_data_only=True,
            _request_timeout=timeout,
        )
    except ApiException as err:
        try:
            parsed: Any = json.loads(err.body) if err.body else None
        except ValueError:
            parsed = err.body
        raise ApiError(err.status or 0, err.reason or "", parsed) from None


def request(
    api_client: Any,
    method: str,
    path: str,
    *,
    query: Mapping[str, Any] | None = None,
    body: Any = None,
    content_type: str = "application/json",
) -> Any:
    """One request, JSON in and out; None for an empty response."""
    response = call(api_client, method, path, query=query, body=body, content_type=content_type)
    data = response.data
    return json.loads(data) if data else None


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
