"""Write hints: the writer's board, its /hint answer, and a reader's watcher against a
scripted writer (no sockets: the long-poll is a function the test plays)."""

from __future__ import annotations

import json
import threading
from typing import cast

from tests.support.fake_api import FakeObjects
from tests.support.wait import wait_for

from shardkeeper.runtime.core.hints import (
    ADDRESS_RETRY,
    HintBoard,
    HintUnavailable,
    HintWatcher,
    WriterAddress,
    answer_hint,
)
from shardkeeper.storage.fragment import HEADER_SIZE, fragment_key, writer_key
from shardkeeper.storage.objectstore import ObjectStore

JOURNAL = "collections/ns/c/writer"


def test_the_board_learns_heads_from_created_fragments_of_served_journals() -> None:
    board = HintBoard()
    board.created(fragment_key(JOURNAL, 0), HEADER_SIZE + 10)  # not served yet: ignored
    assert board.head(JOURNAL) is None
    board.serve({JOURNAL: 0})
    board.created(fragment_key(JOURNAL, 0), HEADER_SIZE + 10)
    board.created(writer_key(JOURNAL), 50)  # no fragment
    board.created(fragment_key("collections/ns/c/other", 10), HEADER_SIZE + 5)
    assert board.head(JOURNAL) == 10
    board.created(fragment_key(JOURNAL, 0), HEADER_SIZE + 10)  # a retry: no step back
    assert board.head(JOURNAL) == 10


def test_a_waiting_reader_is_answered_when_the_head_passes_its_offset() -> None:
    board = HintBoard()
    board.serve({JOURNAL: 10})
    assert board.wait(JOURNAL, 5, timeout=10) == 10  # already past: at once
    assert board.wait(JOURNAL, 10, timeout=0.01) == 10  # not past: after the timeout
    answers: list[int | None] = []
    waiter = threading.Thread(target=lambda: answers.append(board.wait(JOURNAL, 10, 30)))
    waiter.start()
    board.created(fragment_key(JOURNAL, 10), HEADER_SIZE + 7)
    waiter.join(10)
    assert answers == [17]


def test_a_retired_journal_answers_its_waiters_410() -> None:
    board = HintBoard()
    board.serve({JOURNAL: 0})
    answers: list[tuple[int, str, bytes]] = []
    query = {"journal": JOURNAL, "after": "0", "wait": "30"}
    waiter = threading.Thread(target=lambda: answers.append(answer_hint(board, query)))
    waiter.start()
    board.retire([JOURNAL])
    waiter.join(10)
    assert [a[0] for a in answers] == [410]
    assert answer_hint(board, {"journal": JOURNAL})[0] == 400
    board.serve({JOURNAL: 4})
    status, kind, body = answer_hint(board, {"journal": JOURNAL, "after": "1", "wait": "0"})
    assert (status, kind, json.loads(body)) == (200, "application/json", {"head": 4})


class Writer:
    """A scripted writer at an address: answers each long-poll with ``heads`` in turn
    (an exception is raised instead)."""

    def __init__(self, *heads: int | Exception) -> None:
        self.heads = list(heads)
        self.asked: list[int] = []
        self.done = threading.Event()

    def __call__(self, address: WriterAddress, journal: str, after: int, wait: float) -> int:
        self.asked.append(after)
        if not self.heads:
            self.done.set()
            threading.Event().wait(wait)  # a long-poll nobody answers, as a writer would
            return after
        head = self.heads.pop(0)
        if isinstance(head, Exception):
            raise head
        return head


def watcher_on(
    data: dict[str, bytes], writer: Writer, now: list[float] | None = None
) -> tuple[HintWatcher, threading.Event, threading.Event, FakeObjects]:
    objects = FakeObjects("b", data)
    woken, stop = threading.Event(), threading.Event()
    clock = now if now is not None else [0.0]
    watcher = HintWatcher(
        cast(ObjectStore, objects),
        JOURNAL,
        woken.set,
        stop,
        poll=writer,
        wait=0.05,
        monotonic=lambda: clock[0],
    )
    return watcher, woken, stop, objects


ADDRESS = {writer_key(JOURNAL): WriterAddress("127.0.0.9", 8081, "pod-0").encode()}


def test_a_hint_past_the_offset_wakes_the_reader_once() -> None:
    writer = Writer(100, 160)
    watcher, woken, stop, objects = watcher_on(dict(ADDRESS), writer)
    try:
        watcher.watch(100)  # the head is at the offset: nothing yet
        assert woken.wait(10)
        assert writer.asked == [100, 100]  # the writer answered 100, then 160: woken
        assert watcher.hints == 1
        assert objects.requests["GetObject"] == 1  # the address, read once
        # woken for 100, the reader found nothing there: the writer is not asked again
        woken.clear()
        watcher.watch(100)
        assert not woken.wait(0.2)
        assert writer.asked == [100, 100]
    finally:
        stop.set()


def test_without_a_writer_object_the_reader_looks_again_seldom() -> None:
    now = [0.0]
    writer = Writer()
    watcher, woken, stop, objects = watcher_on({}, writer, now)
    try:
        watcher.watch(0)
        wait_for(lambda: objects.requests["GetObject"] == 1, timeout=10, what="a lookup")
        assert not woken.wait(0.1)
        assert objects.requests["GetObject"] == 1  # not before ADDRESS_RETRY.min_delay
        objects.data.update(ADDRESS)
        now[0] = ADDRESS_RETRY.min_delay
        assert writer.done.wait(10)  # found it, and long-polls it now
        assert objects.requests["GetObject"] == 2
    finally:
        stop.set()


def test_an_unreachable_writer_is_looked_up_again_after_a_while() -> None:
    now = [0.0]
    writer = Writer(HintUnavailable("connection refused"), 50)
    watcher, woken, stop, objects = watcher_on(dict(ADDRESS), writer, now)
    try:
        watcher.watch(10)
        wait_for(lambda: writer.asked == [10], timeout=10, what="the first long-poll")
        assert not woken.wait(0.1)
        assert objects.requests["GetObject"] == 1
        now[0] = ADDRESS_RETRY.min_delay  # a failover wrote a new address meanwhile
        assert woken.wait(10)
        assert objects.requests["GetObject"] == 2
        assert writer.asked == [10, 10]
    finally:
        stop.set()


def test_a_writer_object_that_is_no_address_is_ignored() -> None:
    assert WriterAddress.decode(b"not json") is None
    assert WriterAddress.decode(b'{"host": "h"}') is None
    address = WriterAddress("10.0.0.1", 8081, "p")
    assert WriterAddress.decode(address.encode()) == address


def test_a_writer_holds_at_most_max_waiters_long_polls_and_answers_more_503() -> None:
    board = HintBoard(max_waiters=1)
    board.serve({JOURNAL: 0})
    query = {"journal": JOURNAL, "after": "0", "wait": "30"}
    answers: list[tuple[int, str, bytes]] = []
    waiter = threading.Thread(target=lambda: answers.append(answer_hint(board, query)))
    waiter.start()
    wait_for(lambda: board.waiting == 1, timeout=10, what="the first long-poll held")
    assert answer_hint(board, query)[0] == 503  # at once, not after 30 s
    board.created(fragment_key(JOURNAL, 0), HEADER_SIZE + 3)
    waiter.join(10)
    assert [a[0] for a in answers] == [200]
    # the held one is answered: the next may wait
    assert answer_hint(board, {**query, "after": "3", "wait": "0"})[0] == 200
