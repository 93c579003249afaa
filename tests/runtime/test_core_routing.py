"""Routing: shards that split a key or r-clock range read disjoint parts of every journal
of their sources, journals that appear later included."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.runtime.core_fixtures import (
    ShardRunner,
    collection,
    context,
    objects,
    read,
    shard_for,
    task,
    writer,
)
from tests.support.wait import wait_for

from shardkeeper.runtime.core.routing import KeyExtractor, Ranges, r_clock
from shardkeeper.runtime.shell.collectionio import JournalDocument
from shardkeeper.storage.objectstore import ObjectStore

__all__ = ["objects"]

CLICKS = collection("clicks", key=["/user", "/n"])
COPIES = collection("copies", key=["/user", "/n"])
COPY = task(
    "copy",
    {
        "type": "derivation",
        "sources": ["clicks"],
        "outputs": ["copies"],
        "derive": {"sql": {"lambdas": {"clicks": "SELECT $user AS user, $n AS n"}}},
        "shards": {"maxTxnDuration": "100ms"},
    },
)
LOW, HIGH = (0, 0x7FFFFFFF), (0x80000000, 0xFFFFFFFF)


def clicks(writer_tag: str, count: int) -> list[dict[str, object]]:
    return [{"user": f"{writer_tag}-{i % 17}", "n": i} for i in range(count)]


def key_of(document: dict[str, object]) -> tuple[object, object]:
    return (document["user"], document["n"])


@pytest.mark.parametrize("by", ["key", "rClock"])
def test_two_shards_split_a_range_and_read_disjoint_halves(
    tmp_path: Path, objects: ObjectStore, by: str
) -> None:
    halves = {
        name: shard_for("copy", key=bounds) if by == "key" else shard_for("copy", r_clock=bounds)
        for name, bounds in (("low", LOW), ("high", HIGH))
    }
    first, second = writer(objects, "clicks", "writer-a"), writer(objects, "clicks", "writer-b")
    written = first.append(clicks("a", 120)) + second.append(clicks("b", 80))
    running = {
        name: ShardRunner(tmp_path / name, context(objects, COPY, shard, [CLICKS, COPIES])).start()
        for name, shard in halves.items()
    }
    wait_for(lambda: len(read(objects, "copies")) == 200, timeout=60, what="200 copies")
    for shard in running.values():
        assert shard.finish() is None

    by_shard: dict[str, list[JournalDocument]] = {}
    for found in read(objects, "copies"):
        by_shard.setdefault(found.journal.rsplit("/", 1)[1], []).append(found)
    extractor = KeyExtractor.of(CLICKS.spec.key)
    for name, shard in halves.items():
        ranges = Ranges.of(shard.spec)
        mine = [
            key_of(w.document)
            for w in written
            if ranges.owns(extractor.hash(w.document), r_clock(w.document, w.journal, w.offset))
        ]
        shard_name = shard.metadata.name or ""
        assert sorted(key_of(d.document) for d in by_shard[shard_name]) == sorted(mine)
        assert 0 < len(mine) < 200
        # one checkpoint offset per source journal, each at its head
        assert running[name].processor.progress().checkpoint == {
            first.journal: first.head,
            second.journal: second.head,
        }
    assert sum(len(v) for v in by_shard.values()) == 200


def test_a_journal_that_appears_later_is_read(tmp_path: Path, objects: ObjectStore) -> None:
    ctx = context(objects, COPY, shard_for("copy"), [CLICKS, COPIES])
    early = writer(objects, "clicks", "early")
    early.append(clicks("e", 5))
    shard = ShardRunner(tmp_path, ctx).start()
    wait_for(lambda: len(read(objects, "copies")) == 5, timeout=30, what="5 copies")
    late = writer(objects, "clicks", "late")
    late.append(clicks("l", 7))
    wait_for(lambda: len(read(objects, "copies")) == 12, timeout=30, what="12 copies")
    wait_for(lambda: shard.processor.progress().lag_bytes == 0, timeout=30, what="no lag")
    assert shard.finish() is None
    assert shard.processor.progress().checkpoint == {
        early.journal: early.head,
        late.journal: late.head,
    }
