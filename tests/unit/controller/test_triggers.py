"""What a watch event queues: the object and what derives from it, but nothing for changes
no reconcile reads (a primary's checkpoint, the operator's own status write)."""

from __future__ import annotations

import copy
from typing import Any

from shardkeeper.controller.engine.cache import Cache
from shardkeeper.controller.engine.queue import Key
from shardkeeper.controller.engine.triggers import Seen, WatchEvent, keys_for

SHARD = "t-00000000-00000000"


def shard_body(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": SHARD, "namespace": "ns", "uid": "u1", "generation": 1},
        "spec": {"task": "t"},
        "status": {
            "phase": "Running",
            "replicas": [{"pod": f"{SHARD}-0", "state": "PRIMARY"}],
            **status,
        },
    }


def keys(
    seen: Seen, body: dict[str, Any], kind: str = "Shard", event: str = "MODIFIED"
) -> list[Key]:
    name = body["metadata"]["name"]
    return keys_for(Cache(), seen, WatchEvent(kind, event, "ns", name, body))


def test_a_new_shard_queues_itself_and_its_task() -> None:
    assert keys(Seen(), shard_body(), event="ADDED") == [
        Key("Shard", "ns", SHARD),
        Key("Task", "ns", "t"),
    ]


def test_a_checkpoint_alone_queues_nothing() -> None:
    seen = Seen()
    keys(seen, shard_body())
    assert keys(seen, shard_body(checkpoint={"transactions": 7}, lag=12)) == []


def test_a_replica_moving_queues_the_shard_only_and_a_phase_change_its_task_too() -> None:
    seen = Seen()
    body = shard_body()
    keys(seen, body)
    moved = copy.deepcopy(body)
    moved["status"]["replicas"].append({"pod": f"{SHARD}-1", "state": "STANDBY"})
    assert keys(seen, moved) == [Key("Shard", "ns", SHARD)]
    failed = copy.deepcopy(moved)
    failed["status"]["phase"] = "Failed"
    assert keys(seen, failed) == [Key("Shard", "ns", SHARD), Key("Task", "ns", "t")]


def test_a_deleted_object_queues_everything_and_is_forgotten() -> None:
    seen = Seen()
    keys(seen, shard_body())
    assert keys(seen, shard_body(), event="DELETED") == [
        Key("Shard", "ns", SHARD),
        Key("Task", "ns", "t"),
    ]
    assert keys(seen, shard_body()) == [Key("Shard", "ns", SHARD), Key("Task", "ns", "t")]


def test_a_tasks_status_write_does_not_queue_its_shards_but_a_spec_change_does() -> None:
    seen = Seen()
    task = {"metadata": {"name": "t", "uid": "u2", "generation": 1}, "spec": {"outputs": ["out"]}}
    first = keys(seen, task, kind="Task")
    assert first == [Key("Task", "ns", "t"), Key("Collection", "ns", "out")]
    assert keys(seen, {**task, "status": {"shards": 1}}, kind="Task") == [Key("Task", "ns", "t")]
    changed = {**task, "metadata": {**task["metadata"], "generation": 2}}
    assert Key("Collection", "ns", "out") in keys(seen, changed, kind="Task")


def test_a_childs_progress_through_its_parents_log_queues_the_parent() -> None:
    seen = Seen()
    body = shard_body()
    body["metadata"]["name"] = "t-80000000-00000000"
    body["spec"]["splitSource"] = SHARD
    body["status"]["replicas"] = [{"pod": "c-0", "state": "STANDBY", "lag": 50 << 20}]
    assert Key("Shard", "ns", SHARD) in keys(seen, body, event="ADDED")
    closer = copy.deepcopy(body)
    closer["status"]["replicas"][0]["lag"] = 40 << 20
    assert keys(seen, closer) == [], "still far behind: nothing the split waits for"
    near = copy.deepcopy(body)
    near["status"]["replicas"][0]["lag"] = 1 << 20
    assert keys(seen, near) == [Key("Shard", "ns", SHARD)]
