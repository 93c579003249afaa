"""What a source reader asks the bucket for besides the journals' next fragments: one
listing per collection to discover journals, and heads only of journals it is behind on."""

from __future__ import annotations

import collections
import queue
from collections.abc import Iterator
from typing import cast

from tests.support.fake_api import FakeObjects
from tests.support.wait import wait_for

from shardkeeper.runtime.core.messages import Message, SourceLines
from shardkeeper.runtime.core.sources import ReaderOptions, SourceReader, list_journals
from shardkeeper.storage.fragment import (
    Fragment,
    FragmentKind,
    encode_fragment,
    fragment_key,
    writer_key,
)
from shardkeeper.storage.layout import collection_dir, collection_journal
from shardkeeper.storage.objectstore import ObjectInfo, ObjectStore
from shardkeeper.storage.retry import PollPolicy

NAMESPACE, SOURCE = "ns", "orders"
WRITERS = ("a-00000000-00000000", "b-00000000-00000000", "c-00000000-00000000")
JOURNALS = [collection_journal(NAMESPACE, SOURCE, w) for w in WRITERS]


class CountingObjects(FakeObjects):
    """Counts the calls by method: discovery lists directories, heads list fragments."""

    def __init__(self, data: dict[str, bytes]) -> None:
        super().__init__("b", data)
        self.calls: collections.Counter[str] = collections.Counter()

    def directories(self, prefix: str) -> tuple[str, ...]:
        self.calls["directories"] += 1
        return super().directories(prefix)

    def list(self, prefix: str, *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        self.calls["list"] += 1
        return super().list(prefix, start_after=start_after)


def bucket() -> dict[str, bytes]:
    data = {}
    for journal in JOURNALS:
        fragment = Fragment(0, 1, FragmentKind.DATA, b'{"id":"x"}\n')
        data[fragment_key(journal, 0)] = encode_fragment(fragment)
        data[writer_key(journal)] = b"{}"  # no fragment, no journal of its own
    data[collection_dir(NAMESPACE, SOURCE) + "stray"] = b"an object right in the directory"
    return data


def reader_of(
    objects: CountingObjects, channel: queue.Queue[Message], **options: float
) -> SourceReader:
    """A reader of the one source, polling every 10 ms, discovering every 20 ms at first."""
    return SourceReader(
        cast(ObjectStore, objects),
        "",
        namespace=NAMESPACE,
        sources=[SOURCE],
        channel=channel,
        options=ReaderOptions(
            poll=PollPolicy(min_delay=0.01, max_delay=0.01),
            discover_every=0.02,
            hints=False,
            **options,  # type: ignore[arg-type]
        ),
    )


def test_a_collection_s_journals_are_listed_in_one_request() -> None:
    objects = CountingObjects(bucket())
    found = list_journals(cast(ObjectStore, objects), "", NAMESPACE, SOURCE)
    assert found == JOURNALS
    assert objects.requests["ListObjectsV2"] == 1


def test_heads_are_listed_only_for_journals_whose_reader_is_behind() -> None:
    objects = CountingObjects(bucket())
    channel: queue.Queue[Message] = queue.Queue()
    reader = reader_of(objects, channel, discover_max=0.02, heads_every=0.02)
    reader.start({})
    try:
        read = {channel.get(timeout=10) for _ in JOURNALS}
        assert {m.journal for m in read if isinstance(m, SourceLines)} == set(JOURNALS)
        rounds = objects.calls["directories"]
        wait_for(lambda: objects.calls["directories"] >= rounds + 5, timeout=10, what="rounds")
        # every reader waits at its head by now: the rounds go on without listing heads
        listed = objects.calls["list"]
        rounds = objects.calls["directories"]
        wait_for(lambda: objects.calls["directories"] >= rounds + 10, timeout=10, what="rounds")
        assert objects.calls["list"] == listed
        assert reader.heads() == dict.fromkeys(JOURNALS, 11)
    finally:
        reader.stop()


def test_discovery_stays_quick_while_data_is_read_so_a_new_writer_is_found_at_once() -> None:
    """Discovery backs off only while the sources are idle: under load a split's new
    writer is found within a round, not after the idle interval (here a minute)."""
    data = bucket()
    objects = CountingObjects(data)
    reader = reader_of(objects, queue.Queue(), discover_max=60.0)
    line = b'{"id":"y"}\n'
    head = 11  # where bucket() left the first journal
    reader.start({})
    try:

        def append() -> bool:
            nonlocal head
            fragment = Fragment(head, 1, FragmentKind.DATA, line)
            data[fragment_key(JOURNALS[0], head)] = encode_fragment(fragment)
            head += len(line)
            return False

        # backed off, discovery would list about 8 times in its first 5 s and then once a
        # minute: 40 rounds come only while the reads keep it quick
        rounds = objects.calls["directories"]
        wait_for(
            lambda: append() or objects.calls["directories"] >= rounds + 40,
            timeout=30,
            interval=0.02,
            what="discovery rounds while data is read",
        )
        new = collection_journal(NAMESPACE, SOURCE, "d-00000000-00000000")
        data[fragment_key(new, 0)] = encode_fragment(Fragment(0, 1, FragmentKind.DATA, line))
        wait_for(lambda: new in reader.heads(), timeout=5, what="the new writer's journal read")
    finally:
        reader.stop()
