"""Exactly-once state and outputs across crashes at every step of a transaction's commit,
and against a paused old primary that wakes up after a new one took over."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import pytest
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

from shardkeeper.runtime.core.faults import RuntimeFaultPoint
from shardkeeper.runtime.core.processor import ShardContext
from shardkeeper.storage import errors
from shardkeeper.storage.faults import FaultPoint
from shardkeeper.storage.objectstore import ObjectStore

__all__ = ["objects"]

EVENTS = collection("events", key=["/id"])
SEEN = collection("seen", key=["/id"])
SEEN_TASK = task(
    "seen",
    {
        "type": "derivation",
        "sources": ["events"],
        "outputs": ["seen"],
        "derive": {
            "sql": {
                "migrations": ["CREATE TABLE seen (id INTEGER PRIMARY KEY)"],
                # the output counts the documents the state has seen: any document applied
                # twice, or lost, shows as a wrong count
                "lambdas": {
                    "events": (
                        "INSERT INTO seen (id) VALUES ($id);"
                        "SELECT $id AS id, (SELECT count(*) FROM seen) AS seen"
                    )
                },
            }
        },
        "shards": {"maxTxnDuration": "100ms"},
    },
)


def events(first: int, count: int) -> list[dict[str, Any]]:
    return [{"id": i} for i in range(first, first + count)]


def seen_context(objects: ObjectStore) -> ShardContext:
    return context(objects, SEEN_TASK, shard_for("seen"), [EVENTS, SEEN])


def outputs(objects: ObjectStore) -> list[tuple[int, int]]:
    return [(d.document["id"], d.document["seen"]) for d in read(objects, "seen")]


def assert_exactly_once(objects: ObjectStore, count: int) -> None:
    found = read(objects, "seen")  # reading checks the journal has no gap and no overlap
    assert [(d.document["id"], d.document["seen"]) for d in found] == [
        (i, i + 1) for i in range(count)
    ]
    assert len({d.document["_meta"]["uuid"] for d in found}) == count


RUNTIME_POINTS = [
    RuntimeFaultPoint.DOCUMENTS_APPLIED,
    RuntimeFaultPoint.STORE_COMMITTED,
    RuntimeFaultPoint.BATCH_APPENDED,
    RuntimeFaultPoint.OUTPUTS_APPENDED,
]
# the store's own steps: committed locally only, landed but not acknowledged, acknowledged
STORAGE_POINTS = [
    FaultPoint.COMMIT_LOCAL,
    FaultPoint.APPEND_AFTER_PUT,
    FaultPoint.COMMIT_ACKNOWLEDGED,
]


@pytest.mark.parametrize("same_volume", [True, False], ids=["same-volume", "new-volume"])
@pytest.mark.parametrize("point", RUNTIME_POINTS + STORAGE_POINTS, ids=lambda p: p.name)
def test_crash_during_commit_then_rerun_outputs_exactly_once(
    tmp_path: Path,
    objects: ObjectStore,
    point: RuntimeFaultPoint | FaultPoint,
    same_volume: bool,
) -> None:
    runner = ShardRunner(tmp_path, seen_context(objects))
    source = writer(objects, "events")
    trip = Tripwire(point)
    volume = runner.new_volume()
    if isinstance(point, RuntimeFaultPoint):
        first = runner.start(faults=trip, volume=volume)
    else:
        first = runner.start(log_faults=trip, volume=volume)
    source.append(events(0, 5))
    wait_for(lambda: len(outputs(objects)) == 5, timeout=30, what="the first 5 outputs")

    trip.armed = True
    source.append(events(5, 5))
    assert isinstance(first.ended(), Crash)
    assert trip.tripped

    second = runner.start(volume=volume if same_volume else None)
    wait_for(lambda: len(outputs(objects)) >= 10, timeout=30, what="10 outputs after the crash")
    source.append(events(10, 5))
    wait_for(lambda: len(outputs(objects)) >= 15, timeout=30, what="15 outputs")
    assert second.finish() is None
    assert_exactly_once(objects, 15)


def test_crash_while_appending_pending_outputs_again(tmp_path: Path, objects: ObjectStore) -> None:
    runner = ShardRunner(tmp_path, seen_context(objects))
    source = writer(objects, "events")
    committed = Tripwire(RuntimeFaultPoint.STORE_COMMITTED, armed=True)
    first = runner.start(faults=committed)
    source.append(events(0, 4))
    assert isinstance(first.ended(), Crash)
    assert outputs(objects) == []

    # the next primary dies right after it appended them again; the one after that too,
    # and appending them a second time changes nothing
    found = []
    for _ in range(2):
        reappended = Tripwire(RuntimeFaultPoint.PENDING_REAPPENDED, armed=True)
        again = runner.start(faults=reappended)
        assert isinstance(again.ended(), Crash)
        found.append(outputs(objects))
    # the crashed transaction held the first one to four documents
    assert 1 <= len(found[0]) <= 4
    assert found[0] == found[1] == [(i, i + 1) for i in range(len(found[0]))]

    last = runner.start()
    source.append(events(4, 4))
    wait_for(lambda: len(outputs(objects)) >= 8, timeout=30, what="8 outputs")
    assert last.finish() is None
    assert_exactly_once(objects, 8)


@dataclasses.dataclass
class PauseAt:
    """Holds the committer at ``point`` once armed, until released: a paused primary."""

    point: RuntimeFaultPoint
    armed: bool = False
    paused: threading.Event = dataclasses.field(default_factory=threading.Event)
    release: threading.Event = dataclasses.field(default_factory=threading.Event)

    def reached(self, point: RuntimeFaultPoint) -> None:
        if self.armed and point is self.point:
            self.armed = False
            self.paused.set()
            self.release.wait()


def test_paused_old_primary_adds_nothing_when_it_wakes(
    tmp_path: Path, objects: ObjectStore
) -> None:
    runner = ShardRunner(tmp_path, seen_context(objects))
    source = writer(objects, "events")
    pause = PauseAt(RuntimeFaultPoint.STORE_COMMITTED)
    old = runner.start(faults=pause)
    source.append(events(0, 3))
    wait_for(lambda: len(outputs(objects)) == 3, timeout=30, what="3 outputs")

    # the old primary commits a transaction, then stalls before appending its outputs
    pause.armed = True
    source.append(events(3, 3))
    assert pause.paused.wait(30)
    # a new primary takes over: it appends what the old one left pending, and goes on
    new = runner.start()
    wait_for(lambda: len(outputs(objects)) == 6, timeout=30, what="6 outputs")
    source.append(events(6, 3))
    wait_for(lambda: len(outputs(objects)) == 9, timeout=30, what="9 outputs")

    # the old primary wakes: its pending outputs are already there, byte for byte; its next
    # commit is refused because the recovery log was fenced
    pause.release.set()
    assert isinstance(old.ended(), errors.Fenced)
    source.append(events(9, 3))
    wait_for(lambda: len(outputs(objects)) == 12, timeout=30, what="12 outputs")
    assert new.finish() is None
    assert_exactly_once(objects, 12)
