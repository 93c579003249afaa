"""Which Shards a Task should have, as pure functions of the Task and its existing Shards.

A new Task gets one shard that covers the whole key and r-clock space. After that, shards
only come from splits (splits.py): a task that has shards is never given the initial one
again, because its ranges are already owned by the shards that exist.
"""

from __future__ import annotations

from collections.abc import Sequence

from shardkeeper.api.meta import RANGE_MAX, RANGE_MIN
from shardkeeper.api.shard import Shard, ShardSpec, shard_name
from shardkeeper.api.task import Task
from shardkeeper.controller.specs import names
from shardkeeper.controller.specs.objects import Object, namespaced_name, owner_reference
from shardkeeper.storage.layout import recovery_log_name


def initial_shard(task: Task) -> Shard:
    """The shard that owns everything: keys and r-clocks 00000000 to ffffffff."""
    return new_shard(task, (RANGE_MIN, RANGE_MAX), (RANGE_MIN, RANGE_MAX))


def new_shard(
    task: Task,
    keys: tuple[int, int],
    r_clocks: tuple[int, int],
    *,
    split_source: str | None = None,
) -> Shard:
    """A shard of ``task`` owning ``keys`` and ``r_clocks`` (inclusive), named and logged
    after the begins of its ranges, owned by the Task."""
    namespace, task_name = namespaced_name(task)
    name = shard_name(task_name, keys[0], r_clocks[0])
    return Shard.model_validate(
        {
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": names.shard_labels(task_name, name),
                "ownerReferences": [owner_reference(task)],
            },
            "spec": ShardSpec(
                task=task_name,
                key_begin=keys[0],
                key_end=keys[1],
                r_clock_begin=r_clocks[0],
                r_clock_end=r_clocks[1],
                recovery_log=recovery_log_name(namespace, task_name, keys[0], r_clocks[0]),
                split_source=split_source,
            ),
        }
    )


def shards_to_create(task: Task, existing: Sequence[Shard]) -> list[Shard]:
    """Shards the task lacks. Names are derived from ranges, so creating one twice (after a
    restart, or by two operators) converges on the same object."""
    if existing:
        return []
    return [initial_shard(task)]


def shard_manifest(shard: Shard) -> Object:
    """What the operator applies for a shard: metadata and the spec fields it owns.

    ``spec.split`` is left out: it is the one field people write, and leaving it out of the
    apply is what keeps the operator from ever taking it over or clearing it by accident.
    """
    spec = shard.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    spec.pop("split", None)
    if not spec.get("splitTargets"):
        spec.pop("splitTargets", None)
    meta = shard.metadata
    return {
        "apiVersion": shard.api_version,
        "kind": shard.KIND,
        "metadata": {
            "name": meta.name,
            "namespace": meta.namespace,
            "labels": dict(meta.labels),
            "ownerReferences": [
                r.model_dump(mode="json", by_alias=True) for r in meta.owner_references
            ],
        },
        "spec": spec,
    }
