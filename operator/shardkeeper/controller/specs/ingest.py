"""The Service of a capture task: one address for posts, whatever its shards (pure).

Every capture primary accepts posts (a split by r-clock does not route them), so the
Service selects the primary pods of all the task's shards: those whose replica labelled
itself ``shardkeeper.io/role: primary`` (docs/shard-pod.md). Its EndpointSlices then list
every capture primary, and kube-proxy spreads connections over them. Readiness alone
would not do: standbys are Ready, but do not listen.

The Service is the Task's own (owned by it, gone with it), next to the per-shard headless
Services, which name the pods of one shard. Its name ends in ``-ingest``, which no shard
name does (those end in hex range bounds), so it never meets a shard's Service.
"""

from __future__ import annotations

from shardkeeper.api.shard import PRIMARY_ROLE, ROLE_LABEL
from shardkeeper.api.task import Task
from shardkeeper.controller.specs import names
from shardkeeper.controller.specs.objects import Object, namespaced_name, owner_reference
from shardkeeper.controller.specs.workload import ingest_port

SUFFIX = "-ingest"


def ingest_service_name(task: str) -> str:
    return task + SUFFIX


def ingest_selector(task: str) -> dict[str, str]:
    """The primary pods of every shard of ``task``."""
    return {names.NAME_LABEL: names.SHARD_APP, names.TASK_LABEL: task, ROLE_LABEL: PRIMARY_ROLE}


def ingest_service(task: Task) -> Object | None:
    """The Service of a capture with an HTTP endpoint; None for any other task."""
    port = ingest_port(task)
    if port is None:
        return None
    namespace, name = namespaced_name(task)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": ingest_service_name(name),
            "namespace": namespace,
            "labels": {
                names.NAME_LABEL: names.SHARD_APP,
                names.MANAGED_BY_LABEL: names.MANAGED_BY,
                names.TASK_LABEL: name,
            },
            "ownerReferences": [owner_reference(task)],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": ingest_selector(name),
            "ports": [
                {
                    "name": names.INGEST_PORT_NAME,
                    "port": port,
                    "targetPort": names.INGEST_PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }
