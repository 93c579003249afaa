"""A container's environment, resolved as a kubelet resolves it.

Order and precedence follow the kubelet: service variables first, then each ``envFrom``
source in order, then each ``env`` entry in order, later ones winning. Plain values may
refer to variables defined before them with ``$(NAME)``.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Mapping
from typing import Any

from shardkeeper_dev.node.expansion import expand
from shardkeeper_dev.node.podcontext import (
    ConfigError,
    Obj,
    PodContext,
    field_value,
    resource_value,
)

# name -> the object as the API returned it, or None when it does not exist
Objects = Mapping[str, Obj | None]


@dataclasses.dataclass(frozen=True)
class References:
    """ConfigMaps and Secrets (by name, in the pod's namespace) something refers to."""

    config_maps: frozenset[str] = frozenset()
    secrets: frozenset[str] = frozenset()

    def __or__(self, other: References) -> References:
        return References(self.config_maps | other.config_maps, self.secrets | other.secrets)


def env_references(container: Obj) -> References:
    config_maps: set[str] = set()
    secrets: set[str] = set()
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            config_maps.add(source["configMapRef"]["name"])
        if "secretRef" in source:
            secrets.add(source["secretRef"]["name"])
    for var in container.get("env") or []:
        value_from = var.get("valueFrom") or {}
        if "configMapKeyRef" in value_from:
            config_maps.add(value_from["configMapKeyRef"]["name"])
        if "secretKeyRef" in value_from:
            secrets.add(value_from["secretKeyRef"]["name"])
    return References(frozenset(config_maps), frozenset(secrets))


def config_map_data(config_maps: Objects, name: str, *, optional: bool) -> dict[str, str] | None:
    """A ConfigMap's string data; None when it is missing and optional."""
    obj = config_maps.get(name)
    if obj is None:
        if optional:
            return None
        raise ConfigError(f'configmap "{name}" not found')
    return dict(obj.get("data") or {})


def secret_data(secrets: Objects, name: str, *, optional: bool) -> dict[str, bytes] | None:
    """A Secret's decoded data; None when it is missing and optional."""
    obj = secrets.get(name)
    if obj is None:
        if optional:
            return None
        raise ConfigError(f'secret "{name}" not found')
    return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}


def is_env_name(name: str) -> bool:
    # the rule since Kubernetes 1.30 (RelaxedEnvironmentVariableValidation): printable
    # ASCII without '='
    return bool(name) and "=" not in name and all(" " <= ch <= "~" for ch in name)


def resolve_env(
    ctx: PodContext,
    container: Obj,
    *,
    config_maps: Objects,
    secrets: Objects,
    service_env: Mapping[str, str],
) -> dict[str, str]:
    """The container's variables; raises ConfigError for what a kubelet refuses to start."""
    env: dict[str, str] = dict(service_env)
    for source in container.get("envFrom") or []:
        env.update(_env_from(source, config_maps, secrets))
    for var in container.get("env") or []:
        value_from = var.get("valueFrom")
        if value_from is None:
            env[var["name"]] = expand(str(var.get("value", "")), env)
            continue
        value = _value_from(ctx, container, value_from, config_maps, secrets)
        if value is not None:
            env[var["name"]] = value
    return env


def _env_from(source: Obj, config_maps: Objects, secrets: Objects) -> dict[str, str]:
    prefix = source.get("prefix", "")
    values: dict[str, str] = {}
    if "configMapRef" in source:
        ref = source["configMapRef"]
        data = config_map_data(config_maps, ref["name"], optional=bool(ref.get("optional")))
        values = data or {}
    elif "secretRef" in source:
        ref = source["secretRef"]
        raw = secret_data(secrets, ref["name"], optional=bool(ref.get("optional")))
        values = {k: v.decode("utf-8", "replace") for k, v in (raw or {}).items()}
    # a kubelet skips keys that are not valid variable names (and records an event)
    return {prefix + k: v for k, v in values.items() if is_env_name(prefix + k)}


def _value_from(
    ctx: PodContext, container: Obj, value_from: Obj, config_maps: Objects, secrets: Objects
) -> str | None:
    if "fieldRef" in value_from:
        return field_value(ctx, value_from["fieldRef"]["fieldPath"])
    if "resourceFieldRef" in value_from:
        return resource_value(ctx, value_from["resourceFieldRef"], container["name"])
    if "configMapKeyRef" in value_from:
        ref = value_from["configMapKeyRef"]
        optional = bool(ref.get("optional"))
        data = config_map_data(config_maps, ref["name"], optional=optional)
        text = _key(data, ref, "configmap", optional)
        return None if text is None else str(text)
    if "secretKeyRef" in value_from:
        ref = value_from["secretKeyRef"]
        optional = bool(ref.get("optional"))
        raw = secret_data(secrets, ref["name"], optional=optional)
        value = _key(raw, ref, "secret", optional)
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else None
    raise ConfigError(f"unsupported valueFrom: {sorted(value_from)}")


def _key(data: Mapping[str, Any] | None, ref: Obj, kind: str, optional: bool) -> Any:
    if data is None:
        return None
    if ref["key"] not in data:
        if optional:
            return None
        raise ConfigError(f'couldn\'t find key {ref["key"]} in {kind} "{ref["name"]}"')
    return data[ref["key"]]
