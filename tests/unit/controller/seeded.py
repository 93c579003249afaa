"""A fake cluster holding the examples, for the tests of the reconcilers' I/O."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from tests.api.manifests import at, example
from tests.support.fake_api import World

from shardkeeper.controller.reconcilers.collection import CollectionReconciler
from shardkeeper.controller.reconcilers.mapping import MappingReconciler
from shardkeeper.controller.reconcilers.shard import ShardReconciler
from shardkeeper.controller.reconcilers.task import TaskReconciler

NAMESPACE = "team-a"
TASK = "customer-totals"
SHARD = "customer-totals-00000000-00000000"
READY_MAPPING = {
    "observedGeneration": 1,
    "conditions": [
        {
            "type": "Ready",
            "status": "True",
            "reason": "BucketReady",
            "message": "checked",
            "lastTransitionTime": "2024-01-01T00:00:00Z",
            "observedGeneration": 1,
        }
    ],
}


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())  # type: ignore[arg-type]


def served(kind: str, name: str, **changes: Any) -> dict[str, Any]:
    """An example object in the test namespace, with ``changes`` (paths, as in ``at``)."""
    doc = example(kind, name)
    doc = at(doc, changes) if changes else doc
    doc["metadata"]["namespace"] = NAMESPACE
    return doc


class Cluster(World):
    """A World with the examples' Secret, StorageMapping and Collections, and the four
    reconcilers over it. ``ready`` marks the mapping checked and ready (as its own
    reconciler would have); nothing is synced until the test says so."""

    def __init__(self, *, mapping: bool = True, ready: bool = True) -> None:
        super().__init__()
        self.kube.put(served("Secret", "s3-credentials"))
        if mapping:
            self.kube.put(served("StorageMapping", "local"))
            if ready:
                self.kube.set_status("StorageMapping", NAMESPACE, "local", READY_MAPPING)
        for collection in ("orders", "customer-totals"):
            self.kube.put(served("Collection", collection))
        self.tasks = TaskReconciler(self.deps)
        self.shards = ShardReconciler(self.deps)
        self.mappings = MappingReconciler(self.deps)
        self.collections = CollectionReconciler(self.deps)

    def add_task(self, name: str = TASK, **changes: Any) -> dict[str, Any]:
        made = self.kube.put(served("Task", name, **changes))
        self.sync()
        return made

    async def reconcile_task(self, name: str = TASK) -> float | None:
        """One reconcile of the Task, its Events posted, and the cache caught up."""
        found = await self.tasks.reconcile(NAMESPACE, name)
        await self.settle()
        return found

    async def reconcile_shard(self, name: str = SHARD) -> float | None:
        found = await self.shards.reconcile(NAMESPACE, name)
        await self.settle()
        return found

    async def running_task(self, **changes: Any) -> None:
        """The Task, its Shard and the Shard's workload, all seen by the cache; the log
        cleared."""
        self.add_task(**changes)
        await self.reconcile_task()
        await self.reconcile_shard()
        await self.reconcile_shard()  # the StatefulSet seen: the status says so
        self.kube.clear_log()

    def find(self, kind: str, name: str) -> dict[str, Any]:
        found = self.kube.find(kind, NAMESPACE, name)
        assert found is not None, f"no {kind} {name}"
        return found

    def condition(self, kind: str, name: str, type_: str) -> dict[str, Any]:
        conditions = self.find(kind, name).get("status", {}).get("conditions", [])
        found = [c for c in conditions if c["type"] == type_]
        assert found, f"{kind} {name} has no {type_} condition: {conditions}"
        return dict(found[0])
