"""Deleting a Task: stop its shards, wait for their pods to be gone, then delete or keep its
data per ``deletionPolicy``, and only then let the Task go (remove the finalizer).

Every step is found again from what is observed, so a restarted operator resumes where the
last one stopped: Shards still listed are deleted, pods still running are waited for, and
data is found by name under the Task's prefixes (:mod:`shardkeeper.storage.layout`), not
through Shards that may be gone.
"""

from __future__ import annotations

from collections.abc import Callable

from shardkeeper.api.collection import Collection
from shardkeeper.api.meta import API_VERSION, DeletionPolicy
from shardkeeper.api.task import Task
from shardkeeper.controller.engine import events
from shardkeeper.controller.reconcilers.base import Base, Deps
from shardkeeper.controller.reconcilers.stores import DataPlace, delete_places, store_url
from shardkeeper.controller.specs import names
from shardkeeper.controller.specs.objects import namespaced_name
from shardkeeper.controller.specs.references import task_problems
from shardkeeper.controller.specs.status import task_verdict
from shardkeeper.storage import layout

# Pods are not watched: while they stop, the deletion looks again this often.
POLL_SECONDS = 1.0


def task_data(
    task: Task, collection: Callable[[str], Collection | None]
) -> tuple[list[DataPlace], list[str]]:
    """Where the task's data is: its recovery logs, and in each output Collection (found by
    ``collection``) the journals its shards write; and what cannot be located (an output
    Collection that does not exist)."""
    namespace, name = namespaced_name(task)
    found = [
        DataPlace(
            "recovery logs", task.spec.storage_mapping, layout.task_recovery_dir(namespace, name)
        )
    ]
    unknown = []
    for output in task.spec.outputs:
        target = collection(output)
        if target is None:
            unknown.append(f"journals of Collection {output}, which does not exist")
            continue
        found.append(
            DataPlace(
                f"journals of {output}",
                target.spec.storage_mapping,
                layout.collection_dir(namespace, output),
                writer_task=name,
            )
        )
    return found, unknown


class TaskDeletion:
    def __init__(self, deps: Deps, owner: Base) -> None:
        self.deps = deps
        self.owner = owner

    async def finalize(self, task: Task) -> float | None:
        if names.FINALIZER not in task.metadata.finalizers:
            return None
        namespace, name = namespaced_name(task)
        shards = self.deps.cache.shards_of(namespace, name)
        verdict = task_verdict(task, shards, task_problems(task, self.deps.cache), deleting=True)
        await self.owner.write_status(
            task,
            verdict.verdicts,
            {
                "shards": verdict.shards,
                "readyShards": verdict.ready_shards,
                "shardsByPhase": verdict.by_phase,
            },
        )
        live = [s for s in shards if s.metadata.deletion_timestamp is None]
        for shard in live:
            _, shard_name = namespaced_name(shard)
            await self.deps.kube.delete(
                API_VERSION, "Shard", namespace, shard_name, uid=shard.metadata.uid
            )
        if live:
            await self.deps.recorder.post(
                task,
                events.Notice(events.NORMAL, "StoppingShards", f"deleting {len(live)} shards"),
            )
        if shards:
            return POLL_SECONDS
        pods = await self.deps.kube.list_objects(
            "v1",
            "Pod",
            namespace,
            labels={names.TASK_LABEL: name, names.NAME_LABEL: names.SHARD_APP},
        )
        if pods:
            return POLL_SECONDS
        if task.spec.deletion_policy == DeletionPolicy.DELETE:
            notices = await self.delete_data(task)
        else:
            notices = [self.retained(task)]
        # notices only once the finalizer is off: a second look at a stale copy of the
        # Task finds it gone (404) and says nothing again
        if await self.owner.set_finalizer(task, present=False):
            await self.deps.recorder.post_all(task, notices)
        self.owner.forget(task.metadata.uid)
        return None

    def places(self, task: Task) -> tuple[list[DataPlace], list[str]]:
        namespace, _ = namespaced_name(task)
        return task_data(task, lambda name: self.deps.cache.collection(namespace, name))

    def retained(self, task: Task) -> events.Notice:
        namespace, _ = namespaced_name(task)
        places, _ = self.places(task)
        described = []
        for place in places:
            mapping = self.deps.cache.storage_mapping(namespace, place.mapping)
            where = store_url(mapping.spec.stores[0], place.prefix) if mapping else place.prefix
            suffix = f"{place.writer_task}-*" if place.writer_task is not None else ""
            described.append(f"{place.what} at {where}{suffix}")
        return events.Notice(
            events.NORMAL,
            "DataRetained",
            "deletionPolicy is Retain: kept " + "; ".join(described),
        )

    async def delete_data(self, task: Task) -> list[events.Notice]:
        namespace, _ = namespaced_name(task)
        places, unknown = self.places(task)
        return await delete_places(self.deps, namespace, places, unknown)
