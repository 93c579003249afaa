"""Pod volumes as host directories: which kind each volume is, which files the
configMap/secret/downwardAPI/projected volumes hold, and where each container's
volumeMounts come from.

PersistentVolumeClaims map to the directory of their PersistentVolume, emptyDirs and the
file volumes to per-pod directories; the node bind-mounts them inside each container's
own mount namespace.
"""

from __future__ import annotations

import base64
import dataclasses
import posixpath
from collections.abc import Mapping
from pathlib import PurePosixPath

from shardkeeper_dev.node.expansion import expand
from shardkeeper_dev.node.podcontext import (
    ConfigError,
    Obj,
    PodContext,
    field_value,
    resource_value,
)
from shardkeeper_dev.node.podenv import Objects, References, config_map_data, secret_data

DEFAULT_MODE = 0o644
# volumes the node writes files into; a container sees them read-only
FILE_KINDS = frozenset({"configMap", "secret", "downwardAPI", "projected"})
SUPPORTED_KINDS = FILE_KINDS | {"persistentVolumeClaim", "ephemeral", "emptyDir", "hostPath"}


@dataclasses.dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool


@dataclasses.dataclass(frozen=True)
class File:
    data: bytes
    mode: int


@dataclasses.dataclass(frozen=True)
class TokenSource:
    """A projected service-account token; audience "" means the API server's own."""

    audience: str
    expiration_seconds: int


def volume_kind(volume: Obj) -> str:
    kinds = [key for key in volume if key != "name"]
    return kinds[0] if kinds else "emptyDir"


def claim_name(pod: Obj, volume: Obj) -> str | None:
    """The claim behind a volume: its own, or the one the ephemeral-volume controller
    makes for a generic ephemeral volume (``<pod>-<volume>``)."""
    if "persistentVolumeClaim" in volume:
        return str(volume["persistentVolumeClaim"]["claimName"])
    if "ephemeral" in volume:
        return f"{pod['metadata']['name']}-{volume['name']}"
    return None


def volume_references(pod: Obj) -> References:
    config_maps: set[str] = set()
    secrets: set[str] = set()
    for volume in pod.get("spec", {}).get("volumes") or []:
        sources = [volume]
        if "projected" in volume:
            sources = volume["projected"].get("sources") or []
        for source in sources:
            if "configMap" in source:
                config_maps.add(source["configMap"]["name"])
            if "secret" in source:
                secrets.add(source["secret"].get("secretName") or source["secret"]["name"])
    return References(frozenset(config_maps), frozenset(secrets))


def token_sources(pod: Obj) -> frozenset[TokenSource]:
    found = set()
    for volume in pod.get("spec", {}).get("volumes") or []:
        for source in (volume.get("projected") or {}).get("sources") or []:
            token = source.get("serviceAccountToken")
            if token is not None:
                found.add(
                    TokenSource(
                        token.get("audience", ""), int(token.get("expirationSeconds", 3600))
                    )
                )
    return frozenset(found)


def volume_files(
    ctx: PodContext,
    volume: Obj,
    *,
    config_maps: Objects,
    secrets: Objects,
    tokens: Mapping[TokenSource, str],
) -> dict[str, File]:
    """Relative path -> content of a file volume."""
    kind = volume_kind(volume)
    spec = volume[kind]
    default_mode = int(spec.get("defaultMode", DEFAULT_MODE))
    if kind == "projected":
        files: dict[str, File] = {}
        for source in spec.get("sources") or []:
            files.update(
                _source_files(
                    ctx,
                    source,
                    default_mode=default_mode,
                    config_maps=config_maps,
                    secrets=secrets,
                    tokens=tokens,
                )
            )
        return files
    if kind in ("configMap", "secret", "downwardAPI"):
        return _source_files(
            ctx,
            {kind: spec},
            default_mode=default_mode,
            config_maps=config_maps,
            secrets=secrets,
            tokens=tokens,
        )
    raise ConfigError(f"volume {volume['name']!r} of kind {kind} holds no files")


def _source_files(
    ctx: PodContext,
    source: Obj,
    *,
    default_mode: int,
    config_maps: Objects,
    secrets: Objects,
    tokens: Mapping[TokenSource, str],
) -> dict[str, File]:
    if "configMap" in source:
        ref = source["configMap"]
        optional = bool(ref.get("optional"))
        data = config_map_data(config_maps, ref["name"], optional=optional)
        if data is None:
            return {}
        values: dict[str, bytes] = {k: v.encode() for k, v in data.items()}
        obj = config_maps.get(ref["name"]) or {}
        for key, raw in (obj.get("binaryData") or {}).items():
            values[key] = base64.b64decode(raw)
        return _keyed_files(values, ref, default_mode, f'configmap "{ref["name"]}"', optional)
    if "secret" in source:
        ref = source["secret"]
        name = ref.get("secretName") or ref["name"]
        optional = bool(ref.get("optional"))
        raw_data = secret_data(secrets, name, optional=optional)
        if raw_data is None:
            return {}
        return _keyed_files(raw_data, ref, default_mode, f'secret "{name}"', optional)
    if "downwardAPI" in source:
        files = {}
        for item in source["downwardAPI"].get("items") or []:
            if "fieldRef" in item:
                text = field_value(ctx, item["fieldRef"]["fieldPath"])
            else:
                text = resource_value(ctx, item["resourceFieldRef"], None)
            mode = int(item.get("mode", default_mode))
            files[_relative(item["path"])] = File(text.encode(), mode)
        return files
    if "serviceAccountToken" in source:
        spec = source["serviceAccountToken"]
        token = TokenSource(spec.get("audience", ""), int(spec.get("expirationSeconds", 3600)))
        return {_relative(spec["path"]): File(tokens[token].encode(), default_mode)}
    # e.g. clusterTrustBundle: nothing to project here
    return {}


def _keyed_files(
    values: Mapping[str, bytes], ref: Obj, default_mode: int, what: str, optional: bool
) -> dict[str, File]:
    items = ref.get("items")
    if not items:
        return {_relative(k): File(v, default_mode) for k, v in values.items()}
    files = {}
    for item in items:
        if item["key"] not in values:
            if optional:
                continue
            raise ConfigError(f"couldn't find key {item['key']} in {what}")
        mode = int(item.get("mode", default_mode))
        files[_relative(item["path"])] = File(values[item["key"]], mode)
    return files


def _relative(path: str) -> str:
    clean = posixpath.normpath(path)
    if clean.startswith(("/", "..")) or clean == ".":
        raise ConfigError(f"volume file path must be relative and inside the volume: {path!r}")
    return clean


def container_mounts(
    container: Obj,
    volumes: Obj,
    sources: Mapping[str, str],
    env: Mapping[str, str],
) -> list[Mount]:
    """The container's bind mounts, parents before children.

    ``volumes`` maps each volume name to its spec; ``sources`` each volume name to its
    host directory.
    """
    mounts = []
    for mount in container.get("volumeMounts") or []:
        name = mount["name"]
        if name not in sources:
            raise ConfigError(f"volumeMount {name!r} names no volume of the pod")
        target = posixpath.normpath(mount["mountPath"])
        if not target.startswith("/") or target == "/":
            raise ConfigError(f"mountPath must be an absolute path below /: {target!r}")
        source = sources[name]
        sub_path = mount.get("subPath") or ""
        if mount.get("subPathExpr"):
            sub_path = expand(mount["subPathExpr"], env)
        if sub_path:
            source = posixpath.join(source, _relative(sub_path))
        spec = volumes[name]
        read_only = bool(mount.get("readOnly")) or volume_kind(spec) in FILE_KINDS
        read_only = read_only or bool((spec.get("persistentVolumeClaim") or {}).get("readOnly"))
        mounts.append(Mount(source, target, read_only))
    return sorted(mounts, key=lambda m: len(PurePosixPath(m.target).parts))
