"""Models as the operator sees them: the examples, given the metadata the API server adds."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from tests.api.manifests import at, example

from shardkeeper.api import Collection, Shard, StorageMapping, Task
from shardkeeper.api.meta import API_VERSION, ConditionStatus, set_condition
from shardkeeper.controller.specs.shards import initial_shard

NAMESPACE = "team-a"


def _served(doc: dict[str, Any], uid: str) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    out.setdefault("apiVersion", API_VERSION)
    out["metadata"].update(namespace=NAMESPACE, uid=uid, generation=1, resourceVersion="1")
    return out


def task(name: str = "customer-totals", **changes: Any) -> Task:
    doc = at(example("Task", name), changes) if changes else example("Task", name)
    return Task.from_k8s(_served(doc, f"uid-task-{name}"))


def mapping(**changes: Any) -> StorageMapping:
    doc = example("StorageMapping", "local")
    doc = at(doc, changes) if changes else doc
    return StorageMapping.from_k8s(_served(doc, "uid-mapping-local"))


def collection(name: str = "orders", **changes: Any) -> Collection:
    doc = at(example("Collection", name), changes) if changes else example("Collection", name)
    return Collection.from_k8s(_served(doc, f"uid-collection-{name}"))


def shard_of(owner: Task, status: dict[str, Any] | None = None) -> Shard:
    """The task's initial shard, as read back from the API server."""
    doc = initial_shard(owner).to_k8s()
    doc["metadata"].update(uid=f"uid-shard-{doc['metadata']['name']}", generation=1)
    if status is not None:
        doc["status"] = status
    return Shard.from_k8s(doc)


class Lookup:
    """A namespace's objects, as the cache holds them."""

    def __init__(
        self,
        mappings: Sequence[StorageMapping] = (),
        collections: Sequence[Collection] = (),
        secrets: dict[str, frozenset[str]] | None = None,
    ) -> None:
        self.mappings = {m.metadata.name: m for m in mappings}
        self.collections = {c.metadata.name: c for c in collections}
        self.secrets = secrets or {}

    def storage_mapping(self, namespace: str, name: str) -> StorageMapping | None:
        return self.mappings.get(name)

    def collection(self, namespace: str, name: str) -> Collection | None:
        return self.collections.get(name)

    def secret_keys(self, namespace: str, name: str) -> frozenset[str] | None:
        return self.secrets.get(name)


def ready_mapping(ready: bool = True, reason: str = "BucketReady") -> StorageMapping:
    found = mapping()
    found.status.observed_generation = 1
    found.status.conditions = set_condition(
        [],
        "Ready",
        ConditionStatus.TRUE if ready else ConditionStatus.FALSE,
        reason,
        "checked",
        now=datetime(2024, 1, 1, tzinfo=UTC),
    )
    return found
