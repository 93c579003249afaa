"""The work queue's guarantees."""

from __future__ import annotations

import asyncio

import pytest

from shardkeeper.controller.engine.queue import Backoff, Key, WorkQueue

A, B = Key("Task", "ns", "a"), Key("Task", "ns", "b")


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_a_key_is_queued_once_however_often_it_is_asked_for() -> None:
    async def scenario() -> None:
        queue = WorkQueue()
        for key in (A, B, A, A):
            queue.add(key)
        assert len(queue) == 2
        assert [await queue.get(), await queue.get()] == [A, B]

    run(scenario())


def test_a_key_asked_for_while_in_progress_comes_back_after_done() -> None:
    async def scenario() -> None:
        queue = WorkQueue()
        queue.add(A)
        assert await queue.get() == A
        queue.add(A)  # an event arrives while a worker has A
        assert len(queue) == 0, "never two workers on one key"
        queue.done(A)
        assert await queue.get() == A

    run(scenario())


def test_add_after_waits_and_the_earliest_request_wins() -> None:
    async def scenario() -> None:
        queue = WorkQueue()
        queue.add_after(A, 30.0)
        queue.add_after(A, 0.05)
        got = await asyncio.wait_for(queue.get(), timeout=5)
        assert got == A
        queue.done(A)
        queue.close()

    run(scenario())


def test_failures_back_off_exponentially_up_to_a_cap_and_success_resets() -> None:
    async def scenario() -> None:
        queue = WorkQueue(Backoff(base=1.0, cap=5.0))
        assert [queue.failed(A) for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
        queue.forget(A)
        assert queue.failed(A) == 1.0

    run(scenario())


def test_a_closed_queue_stops_its_workers() -> None:
    async def scenario() -> None:
        queue = WorkQueue()
        waiter = asyncio.create_task(queue.get())
        await asyncio.sleep(0)
        queue.close()
        with pytest.raises(asyncio.CancelledError):
            await waiter

    run(scenario())


def test_urgent_keys_go_first_even_when_already_queued() -> None:
    async def scenario() -> None:
        queue = WorkQueue()
        queue.add(A)
        queue.add(B)
        queue.add(B, urgent=True)
        assert len(queue) == 2
        assert [await queue.get(), await queue.get()] == [B, A]

    run(scenario())
