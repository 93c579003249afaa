"""What a pod's environment and downward-API files are computed from.

The pod object alone is not enough: its IP is chosen by this node before the API server
has seen it, and resource limits default to what the node has.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from shardkeeper_dev.node.quantity import ceil_ratio, parse_quantity

Obj = Mapping[str, Any]


class ConfigError(Exception):
    """A container cannot be configured (missing ConfigMap, Secret or key); kubelet's
    CreateContainerConfigError. The pod waits and the node retries."""


@dataclasses.dataclass(frozen=True)
class PodContext:
    pod: Obj
    pod_ip: str
    host_ip: str
    node_allocatable: Mapping[str, str]

    @property
    def namespace(self) -> str:
        return str(self.pod["metadata"]["namespace"])

    @property
    def name(self) -> str:
        return str(self.pod["metadata"]["name"])


_KEYED_FIELD = re.compile(r"^metadata\.(labels|annotations)\['([^']*)'\]$")


def field_value(ctx: PodContext, path: str) -> str:
    """The value of a ``fieldRef.fieldPath``, as the downward API formats it."""
    meta = ctx.pod.get("metadata", {})
    spec = ctx.pod.get("spec", {})
    keyed = _KEYED_FIELD.match(path)
    if keyed:
        return str((meta.get(keyed[1]) or {}).get(keyed[2], ""))
    simple: dict[str, str] = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.hostIP": ctx.host_ip,
        "status.hostIPs": ctx.host_ip,
        "status.podIP": ctx.pod_ip,
        "status.podIPs": ctx.pod_ip,
    }
    if path in simple:
        return str(simple[path])
    if path in ("metadata.labels", "metadata.annotations"):
        # the downward API's file format: one key="value" per line, sorted
        values = meta.get(path.split(".")[1]) or {}
        return "".join(f'{k}="{_escape(str(values[k]))}"\n' for k in sorted(values))
    raise ConfigError(f"unsupported fieldPath {path!r}")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def resource_value(ctx: PodContext, ref: Obj, default_container: str | None) -> str:
    """The value of a ``resourceFieldRef``: limits fall back to the node's allocatable,
    as a kubelet does; requests fall back to the limit, then to zero."""
    container_name = ref.get("containerName") or default_container
    containers = {c["name"]: c for c in ctx.pod.get("spec", {}).get("containers", [])}
    if container_name not in containers:
        raise ConfigError(f"resourceFieldRef names no container: {container_name!r}")
    resources = containers[container_name].get("resources") or {}
    kind, _, resource = str(ref["resource"]).partition(".")
    limits = resources.get("limits") or {}
    requests = resources.get("requests") or {}
    if kind == "limits":
        raw = limits.get(resource, ctx.node_allocatable.get(resource, "0"))
    elif kind == "requests":
        raw = requests.get(resource, limits.get(resource, "0"))
    else:
        raise ConfigError(f"unsupported resource {ref['resource']!r}")
    divisor = parse_quantity(ref.get("divisor") or "1")
    if divisor <= 0:
        raise ConfigError(f"resourceFieldRef divisor must be positive: {ref.get('divisor')!r}")
    return str(ceil_ratio(Fraction(parse_quantity(raw)), divisor))
