"""Collection: whether its StorageMapping is usable, which shards write its journals, and
its journals' fate when it is deleted.

With ``deletionPolicy: Delete`` the Collection carries the operator's finalizer (and only
then: with Retain there is nothing to do at deletion, so nothing to hold it). Deleting it
waits until no Task reads or writes it any more, then deletes every journal under
``collections/<namespace>/<name>/`` in every store of its StorageMapping.

With ``spec.retention`` it also deletes, every ``--retention-every`` (5 minutes by
default), the old beginning of its journals that every reading shard has checkpointed past
(``storage/retention.py``), in the first store of its StorageMapping (the only one shards
read), and says so in ``status.retention``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from shardkeeper.api.collection import Collection, Retention, RetentionStatus
from shardkeeper.api.meta import DeletionPolicy
from shardkeeper.api.storagemapping import StorageMapping
from shardkeeper.controller.reconcilers import stores
from shardkeeper.controller.reconcilers.base import Base
from shardkeeper.controller.reconcilers.stores import DataPlace, delete_places
from shardkeeper.controller.specs import conditions as cond
from shardkeeper.controller.specs import names
from shardkeeper.controller.specs import retention as retention_spec
from shardkeeper.controller.specs.objects import namespaced_name
from shardkeeper.controller.specs.references import mapping_readiness
from shardkeeper.controller.specs.status import collection_verdicts
from shardkeeper.storage import errors, layout
from shardkeeper.storage import retention as retention_io

log = logging.getLogger(__name__)

# Tasks are watched, so this is only a safety net while a deletion waits for them.
WAIT_SECONDS = 10.0


class CollectionReconciler(Base):
    kind = Collection.KIND

    async def reconcile(self, namespace: str, name: str) -> float | None:
        cache = self.deps.cache
        collection = cache.collection(namespace, name)
        if collection is None:
            return None
        if collection.metadata.deletion_timestamp is not None:
            return await self.finalize(collection)
        await self.set_finalizer(
            collection, present=collection.spec.deletion_policy == DeletionPolicy.DELETE
        )
        mapping_name = collection.spec.storage_mapping
        mapping = cache.storage_mapping(namespace, mapping_name)
        problem = mapping_readiness(mapping, mapping_name)
        last = collection.status.retention
        again: float | None = None
        retention = collection.spec.retention
        if retention is not None and mapping is not None and problem is None:
            now = datetime.now(UTC)
            every = self.deps.retention_every
            wait = retention_spec.due_in(last.last_run if last else None, now, every)
            if wait.total_seconds() <= 0:
                last = await self.apply_retention(collection, retention, mapping, now)
                wait = every
            again = max(1.0, wait.total_seconds())
        fields: dict[str, Any] = {"journals": self.journals(collection)}
        if retention is not None and last is not None:
            fields["retention"] = last.model_dump(mode="json", by_alias=True, exclude_none=True)
        else:
            fields["retention"] = None
        await self.write_status(collection, collection_verdicts(problem), fields)
        return again

    async def apply_retention(
        self,
        collection: Collection,
        retention: Retention,
        mapping: StorageMapping,
        now: datetime,
    ) -> RetentionStatus:
        """Delete what the retention allows; what the status then says."""
        namespace, name = namespaced_name(collection)
        cache = self.deps.cache
        reading = {
            task: cache.shards_of(namespace, task)
            for task in cache.tasks_referring(namespace, "Collection", name)
            if (found := cache.task(namespace, task)) is not None and name in found.spec.sources
        }
        readers = retention_spec.reader_positions(reading)
        limits = retention_spec.limits(retention)
        store = mapping.spec.stores[0]
        try:
            credentials = await stores.store_credentials(self.deps.kube, namespace, store)
            run = await self.deps.kube.run(
                lambda: retention_io.apply(
                    stores.open_store(store, credentials),
                    store.prefix,
                    namespace,
                    name,
                    readers=readers,
                    limits=limits,
                    now=now,
                )
            )
        except (stores.CredentialsProblem, errors.StorageError) as exc:
            log.warning("retention of Collection %s/%s failed: %s", namespace, name, exc)
            return RetentionStatus(last_run=now, held_back=f"retention failed: {exc}"[:4096])
        if run.removed_fragments:
            log.info(
                "retention of Collection %s/%s removed %d fragments (%d bytes), kept %d bytes",
                namespace,
                name,
                run.removed_fragments,
                run.removed_bytes,
                run.retained_bytes,
            )
        return RetentionStatus(
            last_run=now,
            retained_bytes=run.retained_bytes,
            oldest_retained=run.oldest_retained,
            removed_bytes=run.removed_bytes,
            removed_fragments=run.removed_fragments,
            held_back=run.held_back[:4096],
        )

    def journals(self, collection: Collection) -> list[str]:
        namespace, name = namespaced_name(collection)
        writers = sorted(
            {s.metadata.name or "" for s in self.deps.cache.writers_of(namespace, name)}
        )
        return [layout.collection_journal(namespace, name, w) for w in writers]

    async def finalize(self, collection: Collection) -> float | None:
        if names.FINALIZER not in collection.metadata.finalizers:
            self.forget(collection.metadata.uid)
            return None
        namespace, name = namespaced_name(collection)
        users = self.deps.cache.tasks_referring(namespace, "Collection", name)
        if users:
            message = f"waiting for Tasks {', '.join(users)} that use it to be deleted"
            await self.write_status(
                collection,
                (
                    cond.ready(False, "Deleting", message),
                    cond.progressing(True, "Deleting", message),
                    cond.degraded(False, "Healthy", ""),
                ),
                {"journals": self.journals(collection)},
            )
            return WAIT_SECONDS
        place = DataPlace(
            f"journals of {name}",
            collection.spec.storage_mapping,
            layout.collection_dir(namespace, name),
        )
        notices = await delete_places(self.deps, namespace, [place])
        if await self.set_finalizer(collection, present=False):
            await self.deps.recorder.post_all(collection, notices)
        self.forget(collection.metadata.uid)
        return None
