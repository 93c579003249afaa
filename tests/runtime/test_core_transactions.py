"""Dynamic transactions: minTxnDuration and maxTxnDuration, observed on a running shard.

The shard runs on a manual clock (``core_plugins.CLOCK``) that moves only when the test or
``ticking_echo`` moves it, so the windows asserted do not depend on how busy the machine is.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.runtime import core_plugins
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
from tests.runtime.core_plugins import CLOCK, TICK
from tests.support.wait import wait_for

from shardkeeper.runtime.core.processor import ShardContext
from shardkeeper.storage.objectstore import ObjectStore

__all__ = ["objects"]

TICKS = collection("ticks", key=["/id"])
ECHOES = collection("echoes", key=["/id"])


@pytest.fixture(autouse=True)
def fresh_plugin_calls() -> Iterator[None]:
    core_plugins.reset()
    yield
    core_plugins.reset()


def echo_context(objects: ObjectStore, plugin: str, shards: dict[str, str]) -> ShardContext:
    echo = task(
        "echo",
        {
            "type": "derivation",
            "sources": ["ticks"],
            "outputs": ["echoes"],
            "derive": {"python": {"module": f"tests.runtime.core_plugins:{plugin}"}},
            "shards": shards,
        },
    )
    return context(objects, echo, shard_for("echo"), [TICKS, ECHOES])


def echoed(objects: ObjectStore) -> int:
    return len(read(objects, "echoes"))


def test_a_zero_min_txn_duration_closes_a_transaction_once_no_document_is_ready(
    tmp_path: Path, objects: ObjectStore
) -> None:
    # the clock never moves: only "nothing is ready" can close the transaction
    ctx = echo_context(objects, "echo", {"minTxnDuration": "0s", "maxTxnDuration": "5s"})
    shard = ShardRunner(tmp_path, ctx).start(timer=CLOCK)
    source = writer(objects, "ticks")
    source.append([{"id": 0}])
    wait_for(lambda: shard.commits, timeout=30, what="the first commit")
    source.append([{"id": 1}])
    wait_for(lambda: echoed(objects) == 2, timeout=30, what="2 echoes")
    assert shard.finish() is None
    assert [c.documents for c in shard.commits] == [1, 1]
    assert [c.reading_seconds for c in shard.commits] == [0.0, 0.0]


def test_min_txn_duration_keeps_a_transaction_open_for_late_documents(
    tmp_path: Path, objects: ObjectStore
) -> None:
    ctx = echo_context(objects, "echo", {"minTxnDuration": "1s", "maxTxnDuration": "5s"})
    shard = ShardRunner(tmp_path, ctx).start(timer=CLOCK)
    source = writer(objects, "ticks")
    source.append([{"id": 0}])
    # the shard has read and processed the first document; the second comes after it, at
    # the same moment of the shard's clock, however long the machine took to get there
    wait_for(lambda: core_plugins.calls() == [("ticks", 0)], timeout=30, what="tick 0 read")
    source.append([{"id": 1}])
    wait_for(lambda: len(core_plugins.calls()) == 2, timeout=30, what="tick 1 read")
    assert shard.commits == [], "the transaction waits for minTxnDuration"
    CLOCK.now += 0.999
    assert shard.commits == []
    CLOCK.now += 0.001
    wait_for(lambda: echoed(objects) == 2, timeout=30, what="2 echoes")
    assert shard.finish() is None
    assert [c.documents for c in shard.commits] == [2]
    assert shard.commits[0].reading_seconds == pytest.approx(1.0)


def test_max_txn_duration_stops_reading_while_documents_keep_coming(
    tmp_path: Path, objects: ObjectStore
) -> None:
    ctx = echo_context(objects, "ticking_echo", {"maxTxnDuration": "200ms"})
    source = writer(objects, "ticks")
    # 2 ms of the shard's clock each: 1.2 s of documents, always ready
    source.append([{"id": i} for i in range(600)])
    shard = ShardRunner(tmp_path, ctx).start(timer=CLOCK)
    wait_for(lambda: echoed(objects) == 600, timeout=60, what="600 echoes")
    assert shard.finish() is None
    commits = shard.commits
    assert sum(c.documents for c in commits) == 600
    assert len(commits) >= 6
    for full in commits[:-1]:
        # each stopped reading at the first document that took it to maxTxnDuration
        assert 0.2 <= full.reading_seconds < 0.2 + TICK + 1e-9, full
        assert full.documents in (100, 101), full
    # the next transaction began reading before the previous one had finished committing
    overlapping = [
        later.started < earlier.started + earlier.total_seconds
        for earlier, later in itertools.pairwise(commits)
    ]
    assert any(overlapping)


def test_ring_buffer_size_bounds_the_documents_of_a_transaction(
    tmp_path: Path, objects: ObjectStore
) -> None:
    # minTxnDuration would keep each transaction waiting for more, and the clock never
    # moves: only the bound closes it
    shards = {
        "minTxnDuration": "30s",
        "maxTxnDuration": "60s",
        "ringBufferSize": 10,
        "readChannelSize": 5,
    }
    ctx = echo_context(objects, "echo", shards)
    source = writer(objects, "ticks")
    source.append([{"id": i} for i in range(50)])
    shard = ShardRunner(tmp_path, ctx).start(timer=CLOCK)
    assert shard.processor.channel.maxsize * shard.processor.read_batch == 5
    wait_for(lambda: echoed(objects) == 50, timeout=60, what="50 echoes")
    assert shard.finish() is None
    assert [c.documents for c in shard.commits] == [10] * 5
