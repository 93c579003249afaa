"""What a deletion selects is exactly what the runtime writes: a Task's deletion places
cover every key its shards write (recovery logs, snapshots, forks, output journals) and no
key of a task whose name merely starts the same, of another namespace, or of a collection
it does not write."""

from __future__ import annotations

from typing import cast

import pytest
from tests.unit.controller.models import NAMESPACE, collection, mapping, task

from shardkeeper.api.shard import Shard, shard_name
from shardkeeper.api.task import Task
from shardkeeper.controller.reconcilers.stores import DataPlace
from shardkeeper.controller.reconcilers.task_deletion import task_data
from shardkeeper.controller.specs.shards import initial_shard
from shardkeeper.runtime.shell.startup import ShardResources
from shardkeeper.storage import layout
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper.storage.recoverylog import RecoveryLog

# the initial shard, and the four shards of a split on key then on r-clock
BEGINS = [(0, 0), (0x80000000, 0), (0, 0x80000000), (0x80000000, 0x80000000)]
TASKS = [(NAMESPACE, "a"), (NAMESPACE, "a-00000000"), (NAMESPACE, "ab"), ("team-b", "a")]
COLLECTIONS = ["orders", "orders-eu"]


def owner(namespace: str, name: str) -> Task:
    found = task("customer-totals", **{"metadata.name": name, "spec.outputs": ["orders"]})
    found.metadata.namespace = namespace
    return found


def shard(task_: Task, key_begin: int, r_clock_begin: int) -> Shard:
    """The task's shard whose ranges begin there, named as the operator names it."""
    made = initial_shard(task_)
    namespace, name = task_.metadata.namespace or "", task_.metadata.name or ""
    made.metadata.name = shard_name(name, key_begin, r_clock_begin)
    made.spec.key_begin, made.spec.r_clock_begin = key_begin, r_clock_begin
    made.spec.recovery_log = layout.recovery_log_name(namespace, name, key_begin, r_clock_begin)
    return made


def written_keys(task_: Task, store_prefix: str) -> set[str]:
    """Keys the runtime writes for the task's shards, found as the runtime finds them."""
    keys: set[str] = set()
    store_mapping = mapping(**{"spec.stores[0].prefix": store_prefix})
    for key_begin, r_clock_begin in BEGINS:
        resources = ShardResources(
            namespace=task_.metadata.namespace or "",
            shard=shard(task_, key_begin, r_clock_begin),
            task=task_,
            collections={},
            mapping=store_mapping,
            credentials={},
        )
        log = RecoveryLog(cast(ObjectStore, None), resources.recovery_log)
        snapshot = log.snapshot_id(0x40, "n")
        keys |= {
            log.journal.key(0),
            log.journal.key(0x1000),
            log.manifest_key(snapshot),
            log.part_key(snapshot, 0),
            log.fork_key(layout.recovery_log_name("x", "y", 1, 2)),
        }
        for output in task_.spec.outputs:
            journal = layout.collection_journal(resources.namespace, output, resources.shard_name)
            keys.add(f"{layout.object_key(store_prefix, journal)}/{0:016x}")
    return keys


def selected(places: list[DataPlace], store_prefix: str, keys: set[str]) -> set[str]:
    return {k for k in keys if any(p.holds(store_prefix, k) for p in places)}


@pytest.mark.parametrize("store_prefix", ["", "env/prod/"])
def test_a_tasks_deletion_covers_exactly_what_its_shards_write(store_prefix: str) -> None:
    tasks = [owner(ns, name) for ns, name in TASKS]
    by_task = {
        (t.metadata.namespace, t.metadata.name): written_keys(t, store_prefix) for t in tasks
    }
    everything = set().union(*by_task.values())
    # another collection's journals, by shards of the same names
    for ns, name in TASKS:
        for begins in BEGINS:
            journal = layout.collection_journal(ns, "orders-eu", shard_name(name, *begins))
            everything.add(f"{layout.object_key(store_prefix, journal)}/{0:016x}")
    for t in tasks:
        places, unknown = task_data(t, {"orders": collection("orders")}.get)
        assert unknown == []
        chosen = selected(places, store_prefix, everything)
        assert chosen == by_task[(t.metadata.namespace, t.metadata.name)]
        # each place lists no more than its own prefix
        for place in places:
            listed = layout.object_key(store_prefix, place.prefix)
            assert all(k.startswith(listed) for k in selected([place], store_prefix, everything))


def test_a_collections_deletion_covers_all_its_journals_and_nothing_else() -> None:
    everything = set().union(*(written_keys(owner(ns, name), "p/") for ns, name in TASKS))
    place = DataPlace("journals", "local", layout.collection_dir(NAMESPACE, "orders"))
    chosen = selected([place], "p/", everything)
    assert chosen == {k for k in everything if k.startswith(f"p/collections/{NAMESPACE}/orders/")}
    assert len(chosen) == 3 * len(BEGINS)  # a, a-00000000 and ab of this namespace


def test_an_output_collection_that_is_gone_is_named_as_not_located() -> None:
    places, unknown = task_data(owner(NAMESPACE, "a"), {}.get)
    assert [p.what for p in places] == ["recovery logs"]
    assert unknown == ["journals of Collection orders, which does not exist"]
