"""Journals against MinIO: append, read, tail, fencing and every error a person must fix."""

from __future__ import annotations

import socket
import threading
import time
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.storage.storage_helpers import Crash, CrashAt, client_for

from shardkeeper.storage import errors
from shardkeeper.storage.client import make_s3_client
from shardkeeper.storage.faults import FaultPoint
from shardkeeper.storage.fragment import FragmentKind
from shardkeeper.storage.journal import Journal
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper.storage.retry import PollPolicy, RetryPolicy
from shardkeeper_dev.environment import EnvInfo


def data_of(journal: Journal, offset: int = 0) -> bytes:
    return b"".join(f.payload for f in journal.read(offset) if f.kind is FragmentKind.DATA)


def test_append_read_head_and_bounds(objects: ObjectStore) -> None:
    journal = Journal(objects, "j/basic")
    assert journal.bounds() is None
    writer, fence = journal.fence(1)
    assert fence.offset == 0
    chunks = [b"a" * 10, b"bb" * 700, b"c"]
    for chunk in chunks:
        written = writer.append(chunk)
        assert written.epoch == 1
    assert journal.head() == writer.head == fence.end + sum(map(len, chunks))
    assert journal.bounds() == (0, writer.head)
    assert data_of(journal) == b"".join(chunks)
    # from inside a fragment: the rest of it, then the others
    inside = fence.end + 5
    assert data_of(journal, inside) == b"".join(chunks)[5:]
    # a bounded read stops where asked, even inside a fragment
    bounded = b"".join(f.payload for f in journal.read(fence.end, fence.end + 12))
    assert bounded == b"".join(chunks)[:12]
    sizes = [info.end - info.begin for info in journal.list_fragments()]
    assert sizes == [fence.end, *map(len, chunks)]


def test_tail_follows_appends_and_stops(objects: ObjectStore) -> None:
    journal = Journal(objects, "j/tail")
    writer, _ = journal.fence(1)
    writer.append(b"first")
    stop = threading.Event()
    received: list[bytes] = []

    def append_more() -> None:
        for i in range(5):
            writer.append(f"more-{i}".encode())

    appender = threading.Thread(target=append_more)
    appender.start()
    for fragment in journal.tail(0, stop, poll=PollPolicy(min_delay=0.01, max_delay=0.2)):
        if fragment.kind is FragmentKind.DATA:
            received.append(fragment.payload)
        if len(received) == 6:
            stop.set()
    appender.join()
    assert received == [b"first"] + [f"more-{i}".encode() for i in range(5)]


def test_two_writers_never_extend_the_same_offset(objects: ObjectStore) -> None:
    journal = Journal(objects, "j/zombie")
    old, _ = journal.fence(1)
    old.append(b"old-1")
    new, fence = journal.fence(2)
    assert fence.offset == old.head
    with pytest.raises(errors.Fenced) as raised:
        old.append(b"old-2")
    assert raised.value.their_epoch == 2
    # once fenced, a writer refuses without asking the store again
    with pytest.raises(errors.Fenced):
        old.append(b"old-3")
    new.append(b"new-1")
    assert data_of(journal) == b"old-1new-1"
    # an older epoch can never take the journal back
    with pytest.raises(errors.StaleEpoch):
        journal.fence(1)


def test_fence_walks_past_appends_that_landed_first(objects: ObjectStore) -> None:
    journal = Journal(objects, "j/race")
    old, _ = journal.fence(1)
    # the new writer believes the head is 0, but the old one appended in the meantime
    old.append(b"x" * 100)
    new, fence = journal.fence(2, from_offset=0)
    assert fence.offset == old.head
    with pytest.raises(errors.Fenced):
        old.append(b"late")
    assert new.head == fence.end


def test_a_corrupted_fragment_is_detected(objects: ObjectStore) -> None:
    journal = Journal(objects, "j/corrupt")
    writer, _ = journal.fence(1)
    written = writer.append(b"precious data")
    key = journal.key(written.begin)
    raw = objects.get(key)
    assert raw is not None
    objects.client.put_object(Bucket=objects.bucket, Key=key, Body=raw[:-1] + b"X")
    with pytest.raises(errors.ChecksumMismatch, match=key):
        list(journal.read(0))


def test_a_missing_fragment_is_a_gap(objects: ObjectStore) -> None:
    journal = Journal(objects, "j/gap")
    writer, _ = journal.fence(1)
    lost = writer.append(b"will be lost")
    writer.append(b"after it")
    objects.delete([journal.key(lost.begin)])
    with pytest.raises(errors.JournalGap, match="no fragment at offset") as raised:
        list(journal.read(0))
    assert raised.value.offset == lost.begin
    # a tail sitting at the hole notices that data exists past it
    stop = threading.Event()
    with pytest.raises(errors.JournalGap):
        for _ in journal.tail(lost.begin, stop, poll=PollPolicy(min_delay=0.01, max_delay=0.05)):
            pass


def test_a_missing_bucket_says_so(dev_env: EnvInfo) -> None:
    store = ObjectStore(client_for(dev_env), "no-such-bucket-for-shardkeeper")
    journal = Journal(store, "j")
    with pytest.raises(errors.BucketNotFound, match="no-such-bucket-for-shardkeeper"):
        journal.fence(1)


def test_denied_access_says_what_to_grant(dev_env: EnvInfo, bucket: str) -> None:
    client = client_for(dev_env, secret_key="not-the-secret")
    store = ObjectStore(client, bucket)
    with pytest.raises(errors.AccessDenied, match="s3:PutObject"):
        Journal(store, "j").fence(1)


def test_conditional_write_probe_passes_on_minio(objects: ObjectStore) -> None:
    ObjectStore._probed.clear()
    objects.ensure_conditional_writes()
    assert (objects.endpoint, objects.bucket) in ObjectStore._probed
    # the probe leaves nothing behind
    assert list(objects.list(".shardkeeper-probe/")) == []


def test_timeouts_are_retried_then_reported() -> None:
    """A server that accepts connections and never answers: every attempt times out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not done.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    acceptor = threading.Thread(target=accept)
    acceptor.start()
    try:
        port = listener.getsockname()[1]
        client = make_s3_client(
            endpoint=f"http://127.0.0.1:{port}",
            access_key="a",
            secret_key="b",
            region="us-east-1",
            read_timeout=0.2,
            connect_timeout=0.2,
        )
        retry = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02, deadline=30)
        store = ObjectStore(client, "bucket", retry=retry)
        started = time.monotonic()
        with pytest.raises(errors.StorageUnavailable, match="after 3 attempts"):
            store.get("some/key")
        assert time.monotonic() - started < 10
        assert len(accepted) == 3
    finally:
        done.set()
        acceptor.join()
        for conn in accepted:
            conn.close()
        listener.close()


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=12),
    reads=st.lists(st.floats(min_value=0, max_value=1), min_size=1, max_size=4),
    crash=st.one_of(
        st.none(),
        st.tuples(
            st.sampled_from([FaultPoint.APPEND_BEFORE_PUT, FaultPoint.APPEND_AFTER_PUT]),
            st.integers(min_value=1, max_value=12),
        ),
    ),
)
def test_append_and_read_random_fragments(
    objects: ObjectStore,
    sizes: list[int],
    reads: list[float],
    crash: tuple[FaultPoint, int] | None,
) -> None:
    """Random fragment sizes, a writer dying at a random append, a successor taking over:
    every read from any offset returns exactly the bytes that were durably appended."""
    # examples share the bucket: each gets a journal of its own
    name = f"j/prop-{uuid.uuid4().hex}"
    hook = CrashAt(*crash) if crash else CrashAt()
    _, fence = Journal(objects, name).fence(1)
    writer = Journal(objects, name, faults=hook).writer(1, fence.end)
    durable = bytearray()
    try:
        for index, size in enumerate(sizes):
            chunk = bytes([index % 251]) * size
            writer.append(chunk)
            durable += chunk
    except Crash:
        if hook.point is FaultPoint.APPEND_AFTER_PUT:
            durable += bytes([index % 251]) * size
    successor_journal = Journal(objects, name)
    successor, _ = successor_journal.fence(2)
    tail = b"successor"
    successor.append(tail)
    expected = bytes(durable) + tail
    assert data_of(successor_journal) == expected
    # reads from arbitrary offsets (fence payloads are not data, so map offsets over data)
    fragments = list(successor_journal.read(0))
    for where in reads:
        offset = int(where * successor.head)
        got = b"".join(
            f.payload for f in successor_journal.read(offset) if f.kind is FragmentKind.DATA
        )
        want = b"".join(
            f.payload[max(0, offset - f.begin) :]
            for f in fragments
            if f.kind is FragmentKind.DATA and f.end > offset
        )
        assert got == want
    assert all(info.end > info.begin for info in successor_journal.list_fragments())


def test_directories_lists_a_collection_s_journals_whatever_they_hold(
    objects: ObjectStore,
) -> None:
    base = f"collections/ns/{uuid.uuid4().hex[:8]}/"
    for writer in ("b", "a", "c"):
        appender = Journal(objects, base + writer).writer(1, 0)
        for _ in range(3):
            appender.append(b'{"k":1}\n')
    objects.put(base + "a/writer.json", b"{}")
    objects.put(base + "stray", b"an object right in the directory")
    objects.put(base + "d/deeper/object", b"x")
    assert objects.directories(base) == tuple(base + w + "/" for w in "abcd")
    assert objects.directories(base + "none/") == ()
    # the writer object is no fragment: listings and heads pass over it
    assert Journal(objects, base + "a").head() == 3 * 8
