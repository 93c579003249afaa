"""What tailing an idle journal costs in requests, on a fake bucket whose waits take no
time (the tail is given a ``wait`` that only records the delay asked for)."""

from __future__ import annotations

import threading
from typing import cast

import pytest
from tests.support.fake_api import FakeObjects

from shardkeeper.storage import errors
from shardkeeper.storage.fragment import (
    HEADER_SIZE,
    Fragment,
    FragmentKind,
    encode_fragment,
    fragment_key,
    writer_key,
)
from shardkeeper.storage.journal import GAP_CHECK_EVERY, Journal
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper.storage.retry import PollPolicy

PREFIX = "collections/ns/c/w"
POLICY = PollPolicy(min_delay=0.01, max_delay=0.5, idle_after=10.0, idle_max_delay=30.0)


def fragment(begin: int, payload: bytes = b'{"k":1}\n') -> tuple[str, bytes]:
    data = encode_fragment(Fragment(begin, 1, FragmentKind.DATA, payload))
    return fragment_key(PREFIX, begin), data


class Idle:
    """A tail's wait that takes no time: it records each delay and, once the waits add
    up to ``seconds``, stops the tail."""

    def __init__(self, seconds: float, stop: threading.Event) -> None:
        self.seconds = seconds
        self.stop = stop
        self.delays: list[float] = []

    def __call__(self, offset: int, delay: float) -> None:
        self.delays.append(delay)
        if sum(self.delays) >= self.seconds:
            self.stop.set()


def tail_idle(
    data: dict[str, bytes], offset: int, seconds: float
) -> tuple[FakeObjects, Idle, list[Fragment]]:
    objects = FakeObjects("b", data)
    stop = threading.Event()
    idle = Idle(seconds, stop)
    journal = Journal(cast(ObjectStore, objects), PREFIX)
    read = list(journal.tail(offset, stop, poll=POLICY, wait=idle))
    return objects, idle, read


def test_an_idle_hour_of_tailing_costs_about_a_request_every_30_seconds() -> None:
    key, data = fragment(0)
    objects, idle, read = tail_idle({key: data}, 0, seconds=3600)
    assert [f.begin for f in read] == [0]
    requests = sum(objects.requests.values())
    # the busy phase (10 s at up to 0.5 s), then 30 s polls: ~120 in the hour, plus the
    # first read of the journal
    assert 115 <= requests <= 160, objects.requests
    assert max(idle.delays) == 30.0
    # the gap check replaces one poll a minute: LISTs, not extra requests
    lists = objects.requests["ListObjectsV2"]
    assert 3600 / GAP_CHECK_EVERY - 2 <= lists - 1 <= 3600 / GAP_CHECK_EVERY + 2


def test_a_gap_is_found_by_the_listing_poll_of_an_idle_tail() -> None:
    # [0, 8) is there, the fragment at 8 is gone, one at 16 is there: data lost
    first, first_data = fragment(0)
    later, later_data = fragment(16)
    objects = FakeObjects("b", {first: first_data, later: later_data})
    stop = threading.Event()
    idle = Idle(3600, stop)
    journal = Journal(cast(ObjectStore, objects), PREFIX)
    with pytest.raises(errors.JournalGap):
        for _ in journal.tail(0, stop, poll=POLICY, wait=idle):
            pass
    # found once the polls reached their longest delay, not an hour later
    assert sum(idle.delays) < 10 + 60 + 30


def test_the_writer_object_is_no_fragment_and_no_gap() -> None:
    key, data = fragment(0)
    objects, _, read = tail_idle(
        {key: data, writer_key(PREFIX): b'{"host": "127.0.0.1", "port": 1}'}, 0, seconds=600
    )
    assert [f.begin for f in read] == [0]
    journal = Journal(cast(ObjectStore, objects), PREFIX)
    assert [i.begin for i in journal.list_fragments()] == [0]
    assert journal.head() == len(data) - HEADER_SIZE


def test_a_fragment_arriving_while_idle_is_read_and_polls_start_over() -> None:
    key, data = fragment(0)
    store = {key: data}
    objects = FakeObjects("b", store)
    stop = threading.Event()
    delays: list[float] = []
    end = len(data) - HEADER_SIZE

    def wait(offset: int, delay: float) -> None:
        delays.append(delay)
        if sum(delays) >= 120 and fragment_key(PREFIX, end) not in store:
            store.update([fragment(end)])  # written after two idle minutes
            delays.clear()
        elif len(delays) == 3 and fragment_key(PREFIX, end) in store:
            stop.set()

    journal = Journal(cast(ObjectStore, objects), PREFIX)
    read = [f.begin for f in journal.tail(0, stop, poll=POLICY, wait=wait)]
    assert read == [0, end]
    assert delays == [0.01, 0.02, 0.04]
