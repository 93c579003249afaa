"""The operator's view of the cluster: kopf indexes, read through typed lookups.

kopf fills the indexes from its watches before it calls any handler, and keeps them
current; the reconcilers read them instead of the API server, so a reconcile that finds
nothing to change makes no request at all. Each index maps a key to the values of the
objects filed under it (see handlers.py for what is filed where).

Secrets are not in a kopf index: kopf would stream every Secret of the cluster, values
and all, through the operator. :class:`Secrets` keeps only the ones that are named, read
when first needed (secrets.py).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

from shardkeeper.api.collection import Collection
from shardkeeper.api.shard import Shard
from shardkeeper.api.storagemapping import StorageMapping
from shardkeeper.api.task import Task
from shardkeeper.controller.specs.views import StatefulSetView

T = TypeVar("T")

# index names, as kopf passes them to handlers (the indexing functions' names)
TASKS = "task_index"
TASK_REFS = "task_refs_index"
SHARDS = "shard_index"
SHARDS_BY_TASK = "shards_by_task_index"
STATEFUL_SETS = "statefulset_index"
MAPPINGS = "mapping_index"
MAPPING_REFS = "mapping_refs_index"
COLLECTIONS = "collection_index"
COLLECTION_REFS = "collection_refs_index"
ALL = (
    TASKS,
    TASK_REFS,
    SHARDS,
    SHARDS_BY_TASK,
    STATEFUL_SETS,
    MAPPINGS,
    MAPPING_REFS,
    COLLECTIONS,
    COLLECTION_REFS,
)
SecretName = tuple[str, str]  # namespace, name


@dataclasses.dataclass(frozen=True)
class SecretView:
    """What the operator keeps of a Secret: never its values."""

    keys: frozenset[str]
    resource_version: str


class Secrets:
    """The Secrets that Tasks and StorageMappings name, as the operator keeps them: the keys
    of their data and their resourceVersion, from a GET when a reconcile first needs one.

    The metadata watch (secrets.py) reports every change of a Secret; one that is kept, or
    being read, becomes stale and is read again when next needed. The watch drops a Secret
    that nothing names, so what is kept grows with the references, not with the Secrets
    of the cluster.
    """

    def __init__(self) -> None:
        self._views: dict[SecretName, SecretView | None] = {}  # None: there is none
        self._stale: set[SecretName] = set()
        self._reading: Counter[SecretName] = Counter()

    def __len__(self) -> int:
        return len(self._views)

    def known(self, namespace: str, name: str) -> bool:
        """Whether the Secret was read and has not changed since."""
        key = (namespace, name)
        return key in self._views and key not in self._stale

    def view(self, namespace: str, name: str) -> SecretView | None:
        return self._views.get((namespace, name))

    def reading(self, namespace: str, name: str) -> None:
        """A GET of the Secret starts: a change reported from now on makes its answer stale."""
        key = (namespace, name)
        self._reading[key] += 1
        self._stale.discard(key)

    def read(self, namespace: str, name: str, view: SecretView | None) -> None:
        """The answer of a GET that :meth:`reading` announced."""
        key = (namespace, name)
        self._done_reading(key)
        self._views[key] = view

    def abandon(self, namespace: str, name: str) -> None:
        """The GET that :meth:`reading` announced failed: nothing was learnt."""
        key = (namespace, name)
        self._done_reading(key)
        if key in self._views:
            self._stale.add(key)

    def _done_reading(self, key: SecretName) -> None:
        self._reading[key] -= 1
        if self._reading[key] <= 0:
            del self._reading[key]

    def changed(self, namespace: str, name: str, resource_version: str | None) -> bool:
        """The watch saw the Secret at ``resource_version`` (None: deleted). Whether that
        differs from what is kept, which is then read again when next needed."""
        key = (namespace, name)
        if key in self._views and key not in self._stale and key not in self._reading:
            kept = self._views[key]
            if (kept.resource_version if kept is not None else None) == resource_version:
                return False
        if key in self._views or key in self._reading:
            self._stale.add(key)
        return True

    def forget(self, namespace: str, name: str) -> None:
        """Nothing names the Secret (any more)."""
        key = (namespace, name)
        self._views.pop(key, None)
        self._stale.discard(key)

    def invalidate(self) -> list[SecretName]:
        """The watch starts over and may have missed changes: everything is stale."""
        self._stale.update(self._views)
        self._stale.update(self._reading)
        return sorted(self._stale)


Index = Mapping[Any, Iterable[Any]]


class Cache:
    def __init__(self) -> None:
        self._indexes: dict[str, Index] = {}
        self.secrets = Secrets()

    @property
    def bound(self) -> bool:
        return bool(self._indexes)

    def bind(self, indexes: Mapping[str, Any]) -> None:
        """Take kopf's index objects (they live as long as the operator) from a handler's
        keyword arguments."""
        if not self._indexes:
            self._indexes = {name: indexes[name] for name in ALL}

    def _values(self, index: str, key: Any) -> list[Any]:
        found = self._indexes.get(index, {})
        return list(found[key]) if key in found else []

    def _one(self, index: str, key: Any, type_: type[T]) -> T | None:
        # two objects under one name exist only for a moment (deleted and re-created)
        values = [v for v in self._values(index, key) if isinstance(v, type_)]
        return values[-1] if values else None

    def _names(self, index: str, key: Any) -> list[str]:
        return sorted({str(v) for v in self._values(index, key)})

    # --- lookups ---------------------------------------------------------------------------

    def task(self, namespace: str, name: str) -> Task | None:
        return self._one(TASKS, (namespace, name), Task)

    def tasks_referring(self, namespace: str, kind: str, name: str) -> list[str]:
        """Tasks that name a StorageMapping, Collection or Secret."""
        return self._names(TASK_REFS, (namespace, kind, name))

    def shard(self, namespace: str, name: str) -> Shard | None:
        return self._one(SHARDS, (namespace, name), Shard)

    def shards_of(self, namespace: str, task: str) -> list[Shard]:
        found = (self.shard(namespace, n) for n in self._names(SHARDS_BY_TASK, (namespace, task)))
        return [s for s in found if s is not None]

    def statefulset(self, namespace: str, shard: str) -> StatefulSetView | None:
        return self._one(STATEFUL_SETS, (namespace, shard), StatefulSetView)

    def storage_mapping(self, namespace: str, name: str) -> StorageMapping | None:
        return self._one(MAPPINGS, (namespace, name), StorageMapping)

    def mappings_referring(self, namespace: str, secret: str) -> list[str]:
        return self._names(MAPPING_REFS, (namespace, secret))

    def collection(self, namespace: str, name: str) -> Collection | None:
        return self._one(COLLECTIONS, (namespace, name), Collection)

    def collections_using(self, namespace: str, mapping: str) -> list[str]:
        return self._names(COLLECTION_REFS, (namespace, mapping))

    def secret(self, namespace: str, name: str) -> SecretView | None:
        """As last read: see :func:`secrets.read_secrets`."""
        return self.secrets.view(namespace, name)

    def names_secret(self, namespace: str, name: str) -> bool:
        """Whether a StorageMapping or Task names the Secret."""
        return bool(
            self.mappings_referring(namespace, name)
            or self.tasks_referring(namespace, "Secret", name)
        )

    def secret_keys(self, namespace: str, name: str) -> frozenset[str] | None:
        secret = self.secret(namespace, name)
        return secret.keys if secret is not None else None

    def writers_of(self, namespace: str, collection: str) -> list[Shard]:
        """Shards of the tasks that write ``collection``."""
        out = []
        for name in self.tasks_referring(namespace, "Collection", collection):
            task = self.task(namespace, name)
            if task is not None and collection in task.spec.outputs:
                out.extend(self.shards_of(namespace, name))
        return out

    def all_shards(self) -> Iterator[Shard]:
        for store in self._indexes.get(SHARDS, {}).values():
            for value in store:
                if isinstance(value, Shard):
                    yield value

    def shard_phases(self) -> dict[str, int]:
        return dict(Counter(str(s.status.phase) for s in self.all_shards()))
