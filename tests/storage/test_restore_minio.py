"""Restoring from a snapshot against MinIO: parts fetched and written concurrently, directly
to the device where the volume allows it, and the log tail under the same torn marker."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.storage.conftest import NewLog
from tests.storage.storage_helpers import rows

from shardkeeper.storage import errors
from shardkeeper.storage import volume as volume_module
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper.storage.recoverylog import RecoveryLog
from shardkeeper.storage.snapshot import Manifest
from shardkeeper.storage.store import ShardStore, StoreOptions

PARTS = StoreOptions(background_snapshots=False, part_bytes=64 << 10, transfers=3)


def digest(db: Path) -> str:
    return hashlib.sha256(db.read_bytes()).hexdigest()


def supports_direct(directory: Path) -> bool:
    directory.mkdir(parents=True, exist_ok=True)
    probe = directory / "probe"
    probe.touch()
    fd = volume_module._open_direct(probe)
    probe.unlink()
    if fd is None:
        return False
    os.close(fd)
    return True


def build(volume: Path, log: RecoveryLog, *, tail_commits: int) -> tuple[Manifest, str]:
    """A store of a few MiB with a snapshot of many parts and ``tail_commits`` after it.
    Returns the snapshot and the digest of the final database file."""
    store = ShardStore.open(volume, log, 1, options=PARTS)
    store.fence()
    with store.transaction() as txn:
        txn.execute("CREATE TABLE kv (k INTEGER PRIMARY KEY, v BLOB)")
        txn.executemany("INSERT INTO kv (v) VALUES (?)", ((os.urandom(3000),) for _ in range(1200)))
    snapshot = store.snapshot()
    assert snapshot is not None
    for n in range(tail_commits):
        with store.transaction() as txn:
            txn.execute("UPDATE kv SET v = randomblob(3000) WHERE k % 7 = ?", (n,))
    with store.transaction() as txn:
        txn.execute("DELETE FROM kv WHERE k > 900")
    store.close()
    return snapshot, digest(volume / "shard.db")


class CountingStore(ObjectStore):
    """Counts how many gets of keys under ``prefix`` run at once."""

    def __init__(self, inner: ObjectStore, prefix: str) -> None:
        super().__init__(inner.client, inner.bucket)
        self._prefix = prefix
        self._lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.keys: list[str] = []

    def get(self, key: str) -> bytes | None:
        with self._counting(key):
            return super().get(key)

    def get_into(self, key: str, buffer: memoryview) -> int | None:
        with self._counting(key):
            return super().get_into(key, buffer)

    def get_split(self, key: str, head: int) -> tuple[bytes, bytes] | None:
        with self._counting(key):
            return super().get_split(key, head)

    @contextlib.contextmanager
    def _counting(self, key: str) -> Iterator[None]:
        if not key.startswith(self._prefix):
            yield
            return
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.keys.append(key)
        try:
            yield
        finally:
            with self._lock:
                self.running -= 1


def test_parts_are_fetched_concurrently_and_written_byte_exact(
    tmp_path: Path, new_log: NewLog
) -> None:
    log = new_log()
    snapshot, original = build(tmp_path / "a", log, tail_commits=3)
    assert len(snapshot.parts) > 20

    counting = CountingStore(log.store, log.snapshot_data_prefix)
    restored = ShardStore.open(tmp_path / "b", RecoveryLog(counting, log.name), 2, options=PARTS)
    report = restored.restore_report
    restored.close()
    assert report.source == "snapshot"
    assert report.commits_replayed == 4
    assert digest(tmp_path / "b" / "shard.db") == original
    assert not (tmp_path / "b" / "shard.db.replaying").exists()
    # every part once, never more at once than the transfers asked for
    assert sorted(counting.keys) == sorted(p.key for p in snapshot.parts)
    assert 1 < counting.most <= PARTS.transfers
    direct = supports_direct(tmp_path / "probe")
    assert report.direct_bytes == (snapshot.data_bytes if direct else 0)


def test_a_failed_tail_leaves_the_volume_torn_and_the_next_open_rebuilds_it(
    tmp_path: Path, new_log: NewLog
) -> None:
    log = new_log()
    snapshot, original = build(tmp_path / "a", log, tail_commits=3)
    tail = log.journal.list_fragments(snapshot.offset)
    missing = tail[1].key
    kept = log.store.get(missing)
    assert kept is not None
    log.store.delete([missing])

    with pytest.raises(errors.JournalGap):
        ShardStore.open(tmp_path / "b", log, 2, options=PARTS)
    # the snapshot's pages were all written, but without the tail the file is not a state
    # of the log: it stays marked torn
    assert (tmp_path / "b" / "shard.db.replaying").exists()

    log.store.put(missing, kept)
    again = ShardStore.open(tmp_path / "b", log, 2, options=PARTS)
    report = again.restore_report
    again.close()
    assert report.source == "snapshot"
    assert report.reason == "the volume holds no database"
    assert digest(tmp_path / "b" / "shard.db") == original
    assert rows(tmp_path / "b" / "shard.db", "SELECT count(*) FROM kv") == [(900,)]


def test_a_corrupted_part_among_many_is_named_and_nothing_is_trusted(
    tmp_path: Path, new_log: NewLog
) -> None:
    log = new_log()
    snapshot, original = build(tmp_path / "a", log, tail_commits=1)
    part = snapshot.parts[len(snapshot.parts) // 2]
    good = log.store.get(part.key)
    assert good is not None
    log.store.put(part.key, good[:-1] + bytes([good[-1] ^ 0x80]))

    with pytest.raises(errors.ChecksumMismatch, match=part.key):
        ShardStore.open(tmp_path / "b", log, 2, options=PARTS)
    assert (tmp_path / "b" / "shard.db.replaying").exists()

    log.store.put(part.key, good)
    again = ShardStore.open(tmp_path / "b", log, 2, options=PARTS)
    again.close()
    assert digest(tmp_path / "b" / "shard.db") == original


def test_parts_not_yet_fetched_are_abandoned_after_a_failure(
    tmp_path: Path, new_log: NewLog
) -> None:
    log = new_log()
    snapshot, _ = build(tmp_path / "a", log, tail_commits=0)
    first = snapshot.parts[0]
    good = log.store.get(first.key)
    assert good is not None
    log.store.put(first.key, bytes(len(good)))

    counting = CountingStore(log.store, log.snapshot_data_prefix)
    one_at_a_time = dataclasses.replace(PARTS, transfers=1)
    with pytest.raises(errors.ChecksumMismatch, match=first.key):
        ShardStore.open(tmp_path / "b", RecoveryLog(counting, log.name), 2, options=one_at_a_time)
    # the parts fetched while the first one was being checked, not the whole snapshot
    assert counting.keys[0] == first.key
    assert len(counting.keys) < len(snapshot.parts)


@pytest.mark.parametrize("change", [-4096, -1, 1, 4096])
def test_a_part_of_the_wrong_size_is_named_and_nothing_is_trusted(
    tmp_path: Path, new_log: NewLog, change: int
) -> None:
    log = new_log()
    snapshot, original = build(tmp_path / "a", log, tail_commits=1)
    part = snapshot.parts[-2]
    good = log.store.get(part.key)
    assert good is not None
    wrong = good[:change] if change < 0 else good + os.urandom(change)
    log.store.put(part.key, wrong)

    with pytest.raises(errors.SnapshotCorrupt, match=f"{part.key} has {len(wrong)} bytes"):
        ShardStore.open(tmp_path / "b", log, 2, options=PARTS)
    assert (tmp_path / "b" / "shard.db.replaying").exists()

    log.store.put(part.key, good)
    again = ShardStore.open(tmp_path / "b", log, 2, options=PARTS)
    again.close()
    assert digest(tmp_path / "b" / "shard.db") == original
