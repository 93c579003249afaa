"""What the operator tells a shard pod through its environment (see docs/shard-pod.md)."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from pathlib import Path

from shardkeeper.api.meta import Duration
from shardkeeper.api.task import (
    DEFAULT_PRUNE_EVERY,
    PRUNE_EVERY_MAX,
    PRUNE_EVERY_MIN,
    prune_every_allowed,
)

DEFAULT_DATA_DIR = "/var/lib/shardkeeper"
DEFAULT_ADMIN_PORT = 8081
DEFAULT_LEASE_DURATION = 15.0
DEFAULT_STATUS_INTERVAL = 10.0


class SettingsError(ValueError):
    """The pod's environment is missing or has a bad variable; the message names it."""


@dataclasses.dataclass(frozen=True)
class PodSettings:
    shard: str
    pod: str
    namespace: str
    pod_ip: str
    data_dir: Path
    admin_port: int
    lease_duration: float
    status_interval: float
    prune_every: Duration
    """For a Task that sets no spec.shards.pruneEvery."""
    log_level: str | None
    # set when run by hand; in a pod the service account's in-cluster config is used
    kubeconfig: str | None


def _required(env: Mapping[str, str], name: str, meaning: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise SettingsError(f"{name} is not set: it names {meaning} (see docs/shard-pod.md)")
    return value


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}={raw!r} must be between {low:g} and {high:g}")
    return value


def _prune_every(env: Mapping[str, str]) -> Duration:
    name = "SHARDKEEPER_PRUNE_EVERY"
    raw = env.get(name, "").strip()
    if not raw:
        return DEFAULT_PRUNE_EVERY
    try:
        every = Duration.parse(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a duration like 10m") from None
    if not prune_every_allowed(every):
        raise SettingsError(
            f"{name}={raw!r} must be 0s (never) or from {PRUNE_EVERY_MIN} to {PRUNE_EVERY_MAX}"
        )
    return every


def settings_from_env(env: Mapping[str, str]) -> PodSettings:
    pod_ip = env.get("POD_IP", "").strip() or "127.0.0.1"
    try:
        ipaddress.ip_address(pod_ip)
    except ValueError:
        raise SettingsError(f"POD_IP={pod_ip!r} is not an IP address") from None
    port = _number(env, "SHARDKEEPER_ADMIN_PORT", DEFAULT_ADMIN_PORT, 1, 65535)
    if port != int(port):
        raise SettingsError(f"SHARDKEEPER_ADMIN_PORT={port:g} is not a whole number")
    return PodSettings(
        shard=_required(env, "SHARDKEEPER_SHARD", "the Shard this pod runs"),
        pod=_required(env, "POD_NAME", "this replica (fieldRef metadata.name)"),
        namespace=_required(env, "POD_NAMESPACE", "the namespace (fieldRef metadata.namespace)"),
        pod_ip=pod_ip,
        data_dir=Path(env.get("SHARDKEEPER_DATA_DIR", "").strip() or DEFAULT_DATA_DIR),
        admin_port=int(port),
        lease_duration=_number(env, "SHARDKEEPER_LEASE_DURATION", DEFAULT_LEASE_DURATION, 1, 3600),
        status_interval=_number(
            env, "SHARDKEEPER_STATUS_INTERVAL", DEFAULT_STATUS_INTERVAL, 0.1, 3600
        ),
        prune_every=_prune_every(env),
        log_level=env.get("SHARDKEEPER_LOG_LEVEL", "").strip() or None,
        kubeconfig=env.get("KUBECONFIG", "").strip() or None,
    )
