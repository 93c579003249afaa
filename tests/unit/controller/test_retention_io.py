"""A Collection's retention as its reconciler runs it, against the fake API and buckets:
held back by a reader without a checkpoint, then deleting only what the reader passed,
never the last fragment, and saying so in status.retention."""

from __future__ import annotations

import datetime

import pytest
from tests.support.fake_api import FakeBuckets
from tests.unit.controller.seeded import NAMESPACE, SHARD, Cluster, run

from shardkeeper.controller.main import parse_args
from shardkeeper.controller.reconcilers import stores
from shardkeeper.controller.specs import retention as retention_spec
from shardkeeper.storage import layout
from shardkeeper.storage.fragment import HEADER_SIZE, fragment_key

BUCKET, PREFIX = "shardkeeper", "examples/"
SOURCE = "orders"  # what the example Task customer-totals reads
JOURNAL = layout.collection_journal(NAMESPACE, SOURCE, "ingest-orders-00000000-00000000")
# four fragments of 100 bytes: offsets 0, 100, 200, 300; the head is 400
KEYS = [PREFIX + fragment_key(JOURNAL, begin) for begin in (0, 100, 200, 300)]


@pytest.fixture
def buckets(monkeypatch: pytest.MonkeyPatch) -> FakeBuckets:
    found = FakeBuckets()
    # only the sizes matter to a listing (the fake's objects are all written "now")
    found.buckets[BUCKET] = dict.fromkeys(KEYS, b"x" * (HEADER_SIZE + 100))
    monkeypatch.setattr(stores, "open_store", found.open_store)
    return found


def with_retention(cluster: Cluster, retention: dict[str, object] | None) -> None:
    collection = cluster.find("Collection", SOURCE)
    collection["spec"]["retention"] = retention
    if retention is None:
        del collection["spec"]["retention"]
    cluster.kube.put(collection)
    cluster.sync()


async def reconcile(cluster: Cluster) -> float | None:
    found = await cluster.collections.reconcile(NAMESPACE, SOURCE)
    await cluster.settle()
    return found


def test_retention_waits_for_every_reader_and_keeps_the_last_fragment(
    buckets: FakeBuckets,
) -> None:
    async def body() -> None:
        cluster = Cluster()
        await cluster.running_task()
        with_retention(cluster, {"maxBytes": 100})
        # the Task's shard has reported no checkpoint: nothing goes
        again = await reconcile(cluster)
        assert again == retention_spec.RETENTION_EVERY.total_seconds()
        assert sorted(buckets.buckets[BUCKET]) == KEYS
        status = cluster.find("Collection", SOURCE)["status"]["retention"]
        assert status["removedFragments"] == 0
        assert status["retainedBytes"] == 400
        assert f"Shard {SHARD}" in status["heldBack"]
        assert "lastRun" in status

        # not due again yet: the next reconcile deletes nothing and waits the rest
        cluster.kube.set_status(
            "Shard", NAMESPACE, SHARD, {"checkpoint": {"sources": {JOURNAL: 250}}}
        )
        cluster.sync()
        again = await reconcile(cluster)
        assert again is not None
        assert 0 < again <= retention_spec.RETENTION_EVERY.total_seconds()
        assert sorted(buckets.buckets[BUCKET]) == KEYS

        # due: the reader is at 250, inside the fragment at 200, so 0 and 100 go
        cluster.deps.retention_every = datetime.timedelta(0)
        await reconcile(cluster)
        assert sorted(buckets.buckets[BUCKET]) == KEYS[2:]
        status = cluster.find("Collection", SOURCE)["status"]["retention"]
        assert (status["removedFragments"], status["removedBytes"]) == (2, 200)
        assert status["retainedBytes"] == 200
        assert status["heldBack"] == f"Shard {SHARD} has read {JOURNAL} only up to 0xfa"

        # the reader at the head: everything but the last fragment goes
        cluster.kube.set_status(
            "Shard", NAMESPACE, SHARD, {"checkpoint": {"sources": {JOURNAL: 400}}}
        )
        cluster.sync()
        await reconcile(cluster)
        assert sorted(buckets.buckets[BUCKET]) == KEYS[3:]
        status = cluster.find("Collection", SOURCE)["status"]["retention"]
        assert (status["retainedBytes"], status["heldBack"]) == (100, "")

        # retention removed from the spec: the status forgets it, nothing more is deleted
        with_retention(cluster, None)
        assert await reconcile(cluster) is None
        assert "retention" not in cluster.find("Collection", SOURCE)["status"]

    run(body)


def test_a_collection_without_retention_is_never_listed(buckets: FakeBuckets) -> None:
    async def body() -> None:
        cluster = Cluster()
        await cluster.running_task()
        assert await reconcile(cluster) is None
        assert buckets.opened == []
        assert sorted(buckets.buckets[BUCKET]) == KEYS

    run(body)


def test_the_operator_flag_sets_the_interval_and_refuses_zero(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SHARDKEEPER_RETENTION_EVERY", raising=False)
    assert parse_args([]).retention_every == retention_spec.RETENTION_EVERY
    assert parse_args(["--retention-every", "30s"]).retention_every == datetime.timedelta(
        seconds=30
    )
    monkeypatch.setenv("SHARDKEEPER_RETENTION_EVERY", "1h")
    assert parse_args([]).retention_every == datetime.timedelta(hours=1)
    with pytest.raises(SystemExit):
        parse_args(["--retention-every", "0s"])
