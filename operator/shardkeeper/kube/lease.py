"""What a ``coordination.k8s.io/v1`` Lease says and what to write into it: the pure part of
the election (:mod:`shardkeeper.kube.election`) that shard replicas
(``runtime/shell/lease.py``) and operator replicas (``controller/engine/leader.py``) both run.

Expiry is judged on the observer's own clock, never by comparing ``renewTime`` with it
(clocks of two machines differ): a Lease held by another counts as expired only once its
``leaseDurationSeconds`` have passed since *the observer saw* the record last change.
"""

from __future__ import annotations

import dataclasses
import enum
import secrets
from datetime import UTC, datetime
from typing import Any

LEASE_API_VERSION = "coordination.k8s.io/v1"


@dataclasses.dataclass(frozen=True)
class LeaseRecord:
    """The spec of a Lease, as far as election goes."""

    holder: str | None
    duration_seconds: int
    acquire_time: str | None
    renew_time: str | None
    transitions: int

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> LeaseRecord:
        return cls(
            holder=spec.get("holderIdentity") or None,
            duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "leaseDurationSeconds": self.duration_seconds,
            "leaseTransitions": self.transitions,
        }
        if self.holder:
            spec["holderIdentity"] = self.holder
        if self.acquire_time:
            spec["acquireTime"] = self.acquire_time
        if self.renew_time:
            spec["renewTime"] = self.renew_time
        return spec


def process_identity(name: str) -> str:
    """A holder identity of this process alone: ``<name>_<8 random hex digits>``. Two
    processes of one name (a pod's old container still running, paused or cut off, while
    its new one starts) must not both find the Lease to be theirs."""
    return f"{name}_{secrets.token_hex(4)}"


def identity_name(identity: str) -> str:
    """The name a :func:`process_identity` was made from (a pod's, for a shard replica)."""
    return identity.rsplit("_", 1)[0]


def micro_time(moment: datetime) -> str:
    """A metav1.MicroTime: RFC 3339 with exactly six fractional digits, in UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Verdict(enum.Enum):
    ABSENT = "absent"  # no Lease object yet
    MINE = "mine"
    FREE = "free"  # released: no holder
    EXPIRED = "expired"  # held by another, not renewed for a whole duration as we saw it
    HELD = "held"  # held by another replica


@dataclasses.dataclass(frozen=True)
class Sighting:
    """The Lease as this replica last saw it, and since when it has looked so."""

    record: LeaseRecord
    version: str | None  # metadata.resourceVersion: every write changes it
    since: float  # monotonic


def sight(
    previous: Sighting | None, record: LeaseRecord, version: str | None, now: float
) -> Sighting:
    """The clock restarts whenever the Lease is written (a renewal, a new holder), even if
    the holder's clock gave its renewal the same ``renewTime`` as the last one."""
    if previous is not None and (previous.record, previous.version) == (record, version):
        return previous
    return Sighting(record, version, now)


def resource_version(obj: dict[str, Any]) -> str | None:
    version = (obj.get("metadata") or {}).get("resourceVersion")
    return None if version is None else str(version)


def assess(sighting: Sighting | None, me: str, now: float) -> Verdict:
    if sighting is None:
        return Verdict.ABSENT
    record = sighting.record
    if record.holder == me:
        return Verdict.MINE
    if not record.holder:
        return Verdict.FREE
    if now - sighting.since >= record.duration_seconds:
        return Verdict.EXPIRED
    return Verdict.HELD


def claimed(previous: LeaseRecord | None, me: str, duration: int, now: datetime) -> LeaseRecord:
    """The record that makes ``me`` the holder, from ``previous`` (``None``: no Lease yet)."""
    stamp = micro_time(now)
    if previous is not None and previous.holder == me:
        return dataclasses.replace(previous, duration_seconds=duration, renew_time=stamp)
    transitions = 0 if previous is None else previous.transitions + 1
    return LeaseRecord(me, duration, stamp, stamp, transitions)


def released(previous: LeaseRecord) -> LeaseRecord:
    """The record after a clean hand-over: no holder, so the next replica need not wait."""
    return dataclasses.replace(previous, holder=None)
