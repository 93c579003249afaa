"""Collection: whether its StorageMapping is usable, and which shards write its journals."""

from __future__ import annotations

from shardkeeper.api.collection import Collection
from shardkeeper.controller.datapaths import journal_name
from shardkeeper.controller.reconciler import Base
from shardkeeper.controller.references import mapping_readiness
from shardkeeper.controller.status import collection_verdicts


class CollectionReconciler(Base):
    kind = Collection.KIND

    async def reconcile(self, namespace: str, name: str) -> float | None:
        cache = self.deps.cache
        collection = cache.collection(namespace, name)
        if collection is None:
            return None
        if collection.metadata.deletion_timestamp is not None:
            self.forget(collection.metadata.uid)
            return None
        mapping = collection.spec.storage_mapping
        problem = mapping_readiness(cache.storage_mapping(namespace, mapping), mapping)
        writers = sorted({s.metadata.name or "" for s in cache.writers_of(namespace, name)})
        await self.write_status(
            collection,
            collection_verdicts(problem),
            {"journals": [journal_name(namespace, name, w) for w in writers]},
        )
        return None
