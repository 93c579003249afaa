"""Names, labels and constants shared by the operator and the objects it writes.

Everything here is part of the contract in docs/shard-pod.md: the runtime finds its Shard
by ``SHARDKEEPER_SHARD``, its data under ``DATA_DIR``, and serves on ``ADMIN_PORT``.
"""

from __future__ import annotations

from shardkeeper.api import pod
from shardkeeper.api.meta import GROUP

FIELD_MANAGER = "shardkeeper-operator"
"""Field manager of every server-side apply the operator makes."""

FINALIZER = f"{GROUP}/cleanup"
"""Holds a Task (and a Collection with deletionPolicy Delete) until its data is dealt with."""

# Labels on every object the operator creates for a shard, and on its pods.
NAME_LABEL = "app.kubernetes.io/name"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
TASK_LABEL = f"{GROUP}/task"
SHARD_LABEL = f"{GROUP}/shard"
SHARD_APP = "shardkeeper-shard"
MANAGED_BY = "shardkeeper"

APPLIED_HASH_ANNOTATION = f"{GROUP}/applied-hash"
"""On each object the operator applies: a hash of what it applied, so that an unchanged
object costs no API request."""

REVISION_LABEL = "controller-revision-hash"
"""Set by the StatefulSet controller on each pod: the revision of the template it runs."""

CONTAINER = "shard"
DATA_VOLUME = "data"
DATA_DIR = "/var/lib/shardkeeper"
ADMIN_PORT = pod.ADMIN_PORT
ADMIN_PORT_NAME = "admin"
INGEST_PORT_NAME = "ingest"
DEFAULT_LEASE_DURATION = 15
# seconds between a replica's progress reports (see runtime/reporting.py)
DEFAULT_STATUS_INTERVAL = 10


def shard_labels(task: str, shard: str) -> dict[str, str]:
    return {
        NAME_LABEL: SHARD_APP,
        MANAGED_BY_LABEL: MANAGED_BY,
        TASK_LABEL: task,
        SHARD_LABEL: shard,
    }


def shard_selector(shard: str) -> dict[str, str]:
    """The labels that select a shard's pods; a StatefulSet's selector is immutable."""
    return {NAME_LABEL: SHARD_APP, SHARD_LABEL: shard}


def runtime_name(shard: str) -> str:
    """The ServiceAccount, Role and RoleBinding of a shard's pods."""
    return f"{shard}-runtime"


# the runtime reads pod names too (which replicas a primary waits for): they live in api/
pod_name = pod.pod_name
pod_ordinal = pod.pod_ordinal
