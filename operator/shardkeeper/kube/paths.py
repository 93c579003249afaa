"""The API server's REST paths, built in one place (pure).

The core group lives under ``/api/v1``, every other group under ``/apis/{group}/{version}``;
each name in a path is quoted, so a path never depends on what a caller did to its names.
"""

from __future__ import annotations

from urllib.parse import quote


def api_root(api_version: str) -> str:
    """``/api/v1`` for the core group (an apiVersion without a group), else ``/apis/...``."""
    if not api_version or api_version.count("/") > 1:
        raise ValueError(f"not an apiVersion: {api_version!r}")
    return f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"


def resource_path(
    api_version: str,
    plural: str,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """The path of a collection (no ``name``), an object or one of its subresources;
    namespaced when ``namespace`` is given, else cluster-wide (or all namespaces)."""
    if subresource and not name:
        raise ValueError("a subresource needs the object's name")
    path = api_root(api_version)
    if namespace:
        path += f"/namespaces/{_segment(namespace)}"
    path += f"/{_segment(plural)}"
    if name:
        path += f"/{_segment(name)}"
    if subresource:
        path += f"/{_segment(subresource)}"
    return path


def _segment(value: str) -> str:
    return quote(value, safe="")
