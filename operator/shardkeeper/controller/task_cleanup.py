"""Deleting a Task: stop its shards, wait for their pods to be gone, then delete or keep its
data per ``deletionPolicy``, and only then let the Task go (remove the finalizer).

Every step is found again from what is observed, so a restarted operator resumes where the
last one stopped: Shards still listed are deleted, pods still running are waited for, and
data is found by name under the Task's prefixes, not through Shards that may be gone.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

from shardkeeper.api.meta import API_VERSION, DeletionPolicy
from shardkeeper.api.storagemapping import Store
from shardkeeper.api.task import Task
from shardkeeper.controller import buckets, events, names
from shardkeeper.controller.credentials import CredentialsProblem, store_credentials
from shardkeeper.controller.datapaths import (
    collection_prefix,
    recovery_prefix,
    store_url,
    written_by,
)
from shardkeeper.controller.objects import namespaced_name
from shardkeeper.controller.reconciler import Base, Deps
from shardkeeper.controller.references import mapping_readiness, task_problems
from shardkeeper.controller.status import task_verdict
from shardkeeper.storage import errors

# Pods are not watched: while they stop, the deletion looks again this often.
POLL_SECONDS = 2.0


@dataclasses.dataclass(frozen=True)
class DataPlace:
    """Objects of the task under one prefix of one store."""

    what: str
    mapping: str
    prefix: str
    """Relative to the store's own prefix."""
    where: Callable[[str, str], bool] | None = None
    """Selects objects by (full prefix, key); None means everything under the prefix."""


class TaskCleanup:
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
        """Where the task's data is, and what cannot be located (a missing Collection)."""
        namespace, name = namespaced_name(task)
        found = [
            DataPlace("recovery logs", task.spec.storage_mapping, recovery_prefix(namespace, name))
        ]
        unknown = []
        for output in task.spec.outputs:
            collection = self.deps.cache.collection(namespace, output)
            if collection is None:
                unknown.append(f"journals of Collection {output}, which does not exist")
                continue
            prefix = collection_prefix(namespace, output)
            found.append(
                DataPlace(
                    f"journals of {output}",
                    collection.spec.storage_mapping,
                    prefix,
                    where=functools.partial(_journal_of, name),
                )
            )
        return found, unknown

    def retained(self, task: Task) -> events.Notice:
        namespace, _ = namespaced_name(task)
        places, _ = self.places(task)
        described = []
        for place in places:
            mapping = self.deps.cache.storage_mapping(namespace, place.mapping)
            where = store_url(mapping.spec.stores[0], place.prefix) if mapping else place.prefix
            suffix = f"{task.metadata.name}-*" if place.where is not None else ""
            described.append(f"{place.what} at {where}{suffix}")
        return events.Notice(
            events.NORMAL,
            "DataRetained",
            "deletionPolicy is Retain: kept " + "; ".join(described),
        )

    async def delete_data(self, task: Task) -> list[events.Notice]:
        namespace, _ = namespaced_name(task)
        places, unknown = self.places(task)
        deleted: list[str] = []
        skipped = list(unknown)
        for place in places:
            mapping = self.deps.cache.storage_mapping(namespace, place.mapping)
            problem = mapping_readiness(mapping, place.mapping)
            if mapping is None or problem is not None:
                skipped.append(f"{place.what}: {problem.message if problem else ''}")
                continue
            for store in mapping.spec.stores:
                try:
                    count = await self._delete_from(namespace, store, place)
                except (
                    CredentialsProblem,
                    errors.AccessDenied,
                    errors.UnexpectedStorageError,
                ) as exc:
                    skipped.append(f"{place.what} at {store_url(store, place.prefix)}: {exc}")
                    continue
                deleted.append(
                    f"{count} objects of {place.what} at {store_url(store, place.prefix)}"
                )
        notices = [events.Notice(events.NORMAL, "DataDeleted", "deleted " + "; ".join(deleted))]
        if skipped:
            notices.append(
                events.Notice(
                    events.WARNING,
                    "DataNotDeleted",
                    "deletionPolicy is Delete, but these were not deleted (delete them by "
                    "hand): " + "; ".join(skipped),
                )
            )
        return notices

    async def _delete_from(self, namespace: str, store: Store, place: DataPlace) -> int:
        credentials = await store_credentials(self.deps.kube, namespace, store)
        prefix = store.prefix + place.prefix

        def run() -> int:
            objects = buckets.open_store(store, credentials)
            where = None if place.where is None else functools.partial(place.where, prefix)
            try:
                return buckets.delete_under(objects, prefix, where)
            except errors.BucketNotFound:
                return 0  # no bucket, so nothing of the task's in it

        return await self.deps.kube.run(run)


def _journal_of(task: str, prefix: str, key: str) -> bool:
    return written_by(task, key, prefix)
