"""Collection: whether its StorageMapping is usable, which shards write its journals, and
its journals' fate when it is deleted.

With ``deletionPolicy: Delete`` the Collection carries the operator's finalizer (and only
then: with Retain there is nothing to do at deletion, so nothing to hold it). Deleting it
waits until no Task reads or writes it any more, then deletes every journal under
``collections/<namespace>/<name>/`` in every store of its StorageMapping.
"""

from __future__ import annotations

from shardkeeper.api.collection import Collection
from shardkeeper.api.meta import DeletionPolicy
from shardkeeper.controller.reconcilers.base import Base
from shardkeeper.controller.reconcilers.stores import DataPlace, delete_places
from shardkeeper.controller.specs import conditions as cond
from shardkeeper.controller.specs import names
from shardkeeper.controller.specs.objects import namespaced_name
from shardkeeper.controller.specs.references import mapping_readiness
from shardkeeper.controller.specs.status import collection_verdicts
from shardkeeper.storage import layout

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
        mapping = collection.spec.storage_mapping
        problem = mapping_readiness(cache.storage_mapping(namespace, mapping), mapping)
        await self.write_status(
            collection, collection_verdicts(problem), {"journals": self.journals(collection)}
        )
        return None

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
