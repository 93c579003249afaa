"""A source reader over a journal whose beginning retention removed: a journal the
checkpoint does not name is read from its first fragment; a gap after it, or a
checkpointed fragment that is gone, still fails the read."""

from __future__ import annotations

import queue
from typing import cast

import pytest
from tests.support.fake_api import FakeObjects

from shardkeeper.runtime.core.checkpoint import SourceOffset
from shardkeeper.runtime.core.messages import Message, ReadFailure, SourceLines
from shardkeeper.runtime.core.sources import ReaderOptions, SourceReader
from shardkeeper.storage import errors
from shardkeeper.storage.fragment import Fragment, FragmentKind, encode_fragment, fragment_key
from shardkeeper.storage.layout import collection_journal
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper.storage.retry import PollPolicy

NAMESPACE, SOURCE = "ns", "orders"
JOURNAL = collection_journal(NAMESPACE, SOURCE, "writer-00000000-00000000")
LINE = b'{"id":"x"}\n'  # 11 bytes


def bucket(*begins: int) -> dict[str, bytes]:
    """A journal holding one two-line fragment at each of ``begins``."""
    payload = LINE * 2
    return {
        fragment_key(JOURNAL, b): encode_fragment(Fragment(b, 1, FragmentKind.DATA, payload))
        for b in begins
    }


def first_message(
    data: dict[str, bytes], checkpoint: dict[str, SourceOffset], *, retained: bool = True
) -> Message:
    channel: queue.Queue[Message] = queue.Queue()
    options = ReaderOptions(poll=PollPolicy(min_delay=0.01, max_delay=0.01), discover_every=60)
    reader = SourceReader(
        cast(ObjectStore, FakeObjects("b", data)),
        "",
        namespace=NAMESPACE,
        sources=[SOURCE],
        channel=channel,
        options=options,
        retained=[SOURCE] if retained else [],
    )
    reader.start(checkpoint)
    try:
        return channel.get(timeout=10)
    finally:
        reader.stop()


def test_a_journal_never_read_is_read_from_its_first_retained_fragment(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="shardkeeper.runtime.core.sources")
    message = first_message(bucket(44, 66), {})
    assert isinstance(message, SourceLines)
    assert (message.journal, message.fragment_begin, message.begin) == (JOURNAL, 44, 44)
    assert message.lines == (LINE[:-1], LINE[:-1])
    started = [
        r for r in caplog.records if r.msg == "reading a journal from its first retained fragment"
    ]
    assert [(r.journal, r.offset) for r in started] == [(JOURNAL, 44)]  # type: ignore[attr-defined]


def test_a_journal_starting_at_zero_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="shardkeeper.runtime.core.sources")
    message = first_message(bucket(0, 22), {})
    assert isinstance(message, SourceLines)
    assert message.fragment_begin == 0
    assert not [r for r in caplog.records if "first retained" in str(r.msg)]


def test_a_gap_after_the_first_fragment_still_fails() -> None:
    # [44, 66) is there, [66, 88) is gone, [88, 110) is there: data lost in the middle
    message = first_message(bucket(44, 88), {})
    assert isinstance(message, ReadFailure)
    assert isinstance(message.error, errors.JournalGap)
    assert "0x42" in str(message.error)


def test_a_checkpointed_position_whose_fragment_is_gone_still_fails() -> None:
    message = first_message(bucket(44, 66), {JOURNAL: SourceOffset(22, 22)})
    assert isinstance(message, ReadFailure)
    assert isinstance(message.error, errors.JournalGap)


def test_without_retention_a_missing_beginning_is_lost_data_and_fails() -> None:
    # the same bucket, but the Collection sets no spec.retention: nothing may remove its
    # first fragments, so a reader does not skip past them
    message = first_message(bucket(44, 66), {}, retained=False)
    assert isinstance(message, ReadFailure)
    assert isinstance(message.error, errors.JournalGap)
