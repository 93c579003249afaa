"""Python derivations: a plug-in's store changes and outputs commit together, exactly once,
and its exceptions follow the failure policy."""

from __future__ import annotations

from pathlib import Path

from tests.runtime.core_fixtures import (
    Crash,
    ShardRunner,
    Tripwire,
    collection,
    context,
    objects,
    read,
    shard_for,
    task,
    writer,
)
from tests.support.wait import wait_for

from shardkeeper.runtime.core.errors import TaskFailed, TaskMisconfigured
from shardkeeper.runtime.core.faults import RuntimeFaultPoint
from shardkeeper.runtime.core.processor import ShardContext
from shardkeeper.storage.objectstore import ObjectStore

__all__ = ["objects"]

VISITS = collection("visits", key=["/id"])
COUNTS = collection("counts", key=["/id"])


def counting(
    objects: ObjectStore, module: str = "tests.runtime.core_plugins:count"
) -> ShardContext:
    counter = task(
        "counter",
        {
            "type": "derivation",
            "sources": ["visits"],
            "outputs": ["counts"],
            "derive": {"python": {"module": module}},
            "shards": {"maxTxnDuration": "100ms"},
        },
    )
    return context(objects, counter, shard_for("counter"), [VISITS, COUNTS])


def counts(objects: ObjectStore) -> list[tuple[str, int]]:
    return [(d.document["id"], d.document["n"]) for d in read(objects, "counts")]


def test_plugin_state_and_outputs_are_exactly_once_across_a_crash(
    tmp_path: Path, objects: ObjectStore
) -> None:
    runner = ShardRunner(tmp_path, counting(objects))
    source = writer(objects, "visits")
    trip = Tripwire(RuntimeFaultPoint.BATCH_APPENDED)
    first = runner.start(faults=trip)
    source.append([{"id": "a"}, {"id": "b"}, {"id": "a"}])
    wait_for(lambda: len(counts(objects)) == 3, timeout=30, what="3 counts")
    trip.armed = True
    source.append([{"id": "a"}, {"id": "c"}])
    assert isinstance(first.ended(), Crash)

    second = runner.start()
    source.append([{"id": "b"}])
    wait_for(lambda: len(counts(objects)) == 6, timeout=30, what="6 counts")
    assert second.finish() is None
    assert counts(objects) == [("a", 1), ("b", 1), ("a", 2), ("a", 3), ("c", 1), ("b", 2)]


def test_a_plugin_exception_fails_the_shard_at_the_document(
    tmp_path: Path, objects: ObjectStore
) -> None:
    runner = ShardRunner(tmp_path, counting(objects))
    source = writer(objects, "visits")
    written = source.append([{"id": "a"}, {"id": "b", "explode": True}, {"id": "c"}])
    error = runner.start().ended()
    assert isinstance(error, TaskFailed)
    assert (error.journal, error.offset) == (source.journal, written[1].offset)
    assert "raised ValueError: asked to explode on b" in error.reason
    assert counts(objects) == []


def test_a_plugin_that_cannot_be_imported_is_a_misconfiguration(
    tmp_path: Path, objects: ObjectStore
) -> None:
    runner = ShardRunner(tmp_path, counting(objects, "tests.runtime.no_such_module:derive"))
    error = runner.start().ended()
    assert isinstance(error, TaskMisconfigured)
    assert "cannot import plug-in module 'tests.runtime.no_such_module'" in error.reason
