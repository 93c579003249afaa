"""Reading a source ahead on a thread of its own while the caller does other work: items
in order, a failure where the caller reaches it, and the source stopped on leaving."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from shardkeeper.storage.restore import reading_ahead


class Boom(Exception):
    pass


def counting(n: int, *, fail_at: int | None = None, log: list[str] | None = None) -> Iterator[int]:
    log = [] if log is None else log
    try:
        for i in range(n):
            if i == fail_at:
                raise Boom(f"item {i}")
            log.append(f"made {i}")
            yield i
    finally:
        log.append("closed")


def test_items_come_in_order_and_the_source_is_taken_before_they_are_asked_for() -> None:
    log: list[str] = []
    with reading_ahead(counting(50, log=log)) as items:
        first = next(items)
        assert first == 0
        assert [first, *items] == list(range(50))
    assert log[-1] == "closed"


def test_the_source_starts_at_once() -> None:
    started = threading.Event()

    def source() -> Iterator[int]:
        started.set()
        yield 1

    with reading_ahead(source()) as items:
        # taken while the caller has not asked for anything yet
        assert started.wait(timeout=10)
        assert list(items) == [1]


def test_a_failure_is_raised_where_the_caller_reaches_it() -> None:
    with reading_ahead(counting(10, fail_at=3)) as items:
        assert [next(items) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(Boom, match="item 3"):
            next(items)


def test_leaving_early_stops_and_closes_the_source() -> None:
    log: list[str] = []

    def leave_early() -> None:
        with reading_ahead(counting(10_000, log=log)) as items:
            assert next(items) == 0
            raise RuntimeError("the caller failed")

    with pytest.raises(RuntimeError, match="the caller failed"):
        leave_early()
    # stopped after at most the item handed, the one waiting and the one being made
    made = [line for line in log if line.startswith("made")]
    assert len(made) <= 4
    assert log[-1] == "closed"


def test_a_failure_of_the_source_the_caller_never_reached_is_not_raised() -> None:
    with reading_ahead(counting(10, fail_at=0)):
        pass
