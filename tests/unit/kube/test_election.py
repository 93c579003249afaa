"""The one Elector (shardkeeper.kube.election), on an in-memory Lease API with manual clocks,
and the operator's leader election (controller.engine.leader) that runs its steps in a
thread pool."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
from prometheus_client import REGISTRY
from tests.support.clock import Clock
from tests.support.leases import FakeLeaseApi

from shardkeeper.controller.engine.leader import LeaderElector, Timing
from shardkeeper.kube.election import Elector, StepResult
from shardkeeper.kube.lease import LEASE_API_VERSION, LeaseRecord, Verdict

T = TypeVar("T")
NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def elector(api: FakeLeaseApi, me: str, clock: Clock, *, read_first: bool = True) -> Elector:
    return Elector(api, me, 15, read_first=read_first, monotonic=clock, wall=lambda: NOW)


class Racing:
    """A Lease API on which ``before_write`` runs once, between a read and the next write:
    another replica writing in between."""

    def __init__(self, api: FakeLeaseApi, before_write: Callable[[], Any]) -> None:
        self.api = api
        self.before_write: Callable[[], Any] | None = before_write
        self.writes = 0

    def read(self) -> dict[str, Any] | None:
        return self.api.read()

    def _race(self) -> None:
        if self.before_write is not None:
            hook, self.before_write = self.before_write, None
            hook()

    def create(self, lease: dict[str, Any]) -> dict[str, Any] | None:
        self._race()
        return self.api.create(lease)

    def replace(self, lease: dict[str, Any]) -> dict[str, Any] | None:
        self._race()
        return self.api.replace(lease)


# --- the Elector ----------------------------------------------------------------------------


def test_first_replica_creates_the_lease_and_the_second_waits_a_whole_duration() -> None:
    api, clock = FakeLeaseApi(), Clock()
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    assert a.step(want=True).mine
    assert api.holder() == "a"
    assert api.obj is not None
    assert (api.obj["apiVersion"], api.obj["kind"]) == (LEASE_API_VERSION, "Lease")
    seen = b.step(want=True)
    assert (seen.mine, seen.holder) == (False, "a")
    clock.now += 14.9
    assert not b.step(want=True).mine
    clock.now += 0.1
    took = b.step(want=True)
    assert took.mine
    assert (took.taken, took.previous) == (Verdict.EXPIRED, "a")
    assert api.holder() == "b"


def test_an_absent_lease_is_created_and_the_step_says_so() -> None:
    api, clock = FakeLeaseApi(), Clock()
    result = elector(api, "a", clock).step(want=True)
    assert result == StepResult("a", True, clock.now, Verdict.ABSENT, None)
    assert api.obj is not None
    record = LeaseRecord.from_spec(api.obj["spec"])
    assert (record.holder, record.duration_seconds, record.transitions) == ("a", 15, 0)


def test_expiry_counts_from_when_the_observer_saw_the_lease_change_not_from_renew_time() -> None:
    api, clock_a, clock_b = FakeLeaseApi(), Clock(0.0), Clock(5000.0)
    a, b = elector(api, "a", clock_a), elector(api, "b", clock_b)
    a.step(want=True)
    clock_b.now += 100  # b first looks long after the write: its count starts now
    assert not b.step(want=True).mine
    assert b.expires_in() == 15.0
    clock_b.now += 14.9
    assert not b.step(want=True).mine
    clock_b.now += 0.1
    assert b.step(want=True).mine
    assert api.holder() == "b"


def test_takeover_after_expiry_counts_a_transition_and_keeps_nothing_of_the_old_holder() -> None:
    api, clock = FakeLeaseApi(), Clock()
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    a.step(want=True)
    b.step(want=True)
    clock.now += 15
    assert b.step(want=True).mine
    assert api.obj is not None
    record = LeaseRecord.from_spec(api.obj["spec"])
    assert (record.holder, record.transitions) == ("b", 1)
    # the old holder now sees it held by another: not its own any more
    assert a.step(want=True) == StepResult("b", False, 0.0)


def test_renewals_keep_the_lease_from_a_waiting_replica() -> None:
    api, clock = FakeLeaseApi(), Clock()
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    a.step(want=True)
    for _ in range(10):
        clock.now += 5
        # the wall clock stands still: only the write itself shows the renewal
        renewed = a.step(want=True)
        assert renewed == StepResult("a", True, clock.now)
        assert not b.step(want=True).mine
    assert api.holder() == "a"


def test_sent_at_is_when_the_winning_write_was_sent() -> None:
    api, clock = FakeLeaseApi(), Clock()
    slow = Racing(api, lambda: setattr(clock, "now", clock.now + 7))  # the write takes 7s
    started = clock.now
    result = elector(slow, "a", clock).step(want=True)  # type: ignore[arg-type]
    assert result.mine
    assert result.sent_at == started


def test_a_released_lease_is_taken_at_once_and_only_the_holder_releases() -> None:
    api, clock = FakeLeaseApi(), Clock()
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    a.step(want=True)
    b.step(want=True)
    assert not b.release()
    assert api.holder() == "a"
    assert a.release()
    assert api.holder() is None
    took = b.step(want=True)
    assert (took.mine, took.taken, took.previous) == (True, Verdict.FREE, None)


def test_release_of_no_lease_writes_nothing() -> None:
    api, clock = FakeLeaseApi(), Clock()
    assert not elector(api, "a", clock).release()
    assert api.writes == 0


def test_not_wanting_the_lease_only_observes() -> None:
    api, clock = FakeLeaseApi(), Clock()
    a = elector(api, "a", clock)
    result = a.step(want=False)
    assert (result.mine, result.holder, api.writes) == (False, None, 0)


def test_a_lost_race_is_retried_against_the_new_version() -> None:
    api, clock = FakeLeaseApi(), Clock()
    a = elector(api, "a", clock)
    a.step(want=True)
    real_read = api.read
    stale = real_read()

    # the first read returns a version someone has since replaced: the write gets 409
    reads = iter([stale])
    api.obj["metadata"]["resourceVersion"] = "99"  # type: ignore[index]
    api.read = lambda: next(reads, None) or real_read()  # type: ignore[method-assign]
    assert a.step(want=True).mine


def test_a_create_race_is_lost_to_the_replica_that_created_first() -> None:
    api, clock = FakeLeaseApi(), Clock()
    a = elector(api, "a", clock)
    b = elector(Racing(api, lambda: a.step(want=True)), "b", clock)  # type: ignore[arg-type]
    # b saw no Lease, but a created it before b's create: b reads again and finds it held
    assert b.step(want=True) == StepResult("a", False, 0.0)
    assert api.holder() == "a"


def test_a_takeover_race_is_lost_to_a_renewal_in_between() -> None:
    api, clock = FakeLeaseApi(), Clock()
    a = elector(api, "a", clock)
    a.step(want=True)
    b = elector(Racing(api, lambda: a.step(want=True)), "b", clock)  # type: ignore[arg-type]
    b.step(want=False)
    clock.now += 15
    # b saw the Lease expire, but a renewed it before b's replace: 409, and held again
    assert b.step(want=True) == StepResult("a", False, 0.0)
    assert api.holder() == "a"


def test_without_read_first_a_holder_renews_with_one_request() -> None:
    api, clock = FakeLeaseApi(), Clock()
    a = elector(api, "a", clock, read_first=False)
    a.step(want=True)
    reads = 0
    real_read = api.read

    def counting_read() -> dict[str, Any] | None:
        nonlocal reads
        reads += 1
        return real_read()

    api.read = counting_read  # type: ignore[method-assign]
    writes = api.writes
    clock.now += 5
    assert a.step(want=True) == StepResult("a", True, clock.now)
    assert (reads, api.writes) == (0, writes + 1)


def test_without_read_first_a_renewal_that_loses_reads_and_sees_the_new_holder() -> None:
    api, clock = FakeLeaseApi(), Clock()
    a, b = elector(api, "a", clock, read_first=False), elector(api, "b", clock)
    a.step(want=True)
    b.step(want=True)
    clock.now += 15
    assert b.step(want=True).mine  # a missed its renewals
    assert a.step(want=True) == StepResult("b", False, 0.0)
    assert api.holder() == "b"


# --- the operator's leader election ---------------------------------------------------------


class FakeKube:
    """What the leader election uses of AsyncKube: its thread pool."""

    transport = None

    def __init__(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(2)

    async def run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)


FAST = Timing(duration=15.0, renew_every=0.01, renew_deadline=0.2, retry_every=0.01)


def leader(api: FakeLeaseApi, identity: str, clock: Callable[[], float] | None = None) -> Any:
    kwargs: dict[str, Any] = {"clock": clock} if clock is not None else {}
    return LeaderElector(FakeKube(), "ns", "lease", identity, timing=FAST, api=api, **kwargs)  # type: ignore[arg-type]


def leading() -> float | None:
    return REGISTRY.get_sample_value("shardkeeper_operator_leader")


def test_operator_acquires_holds_and_releases(caplog: pytest.LogCaptureFixture) -> None:
    api = FakeLeaseApi()
    one = leader(api, "op-1")
    caplog.set_level(logging.INFO, logger="shardkeeper.controller.engine.leader")

    async def scenario() -> None:
        await asyncio.wait_for(one.acquire(), 5)
        assert leading() == 1
        assert api.holder() == "op-1"
        # renewals keep it; another replica then takes it: hold returns
        holding = asyncio.create_task(one.hold())
        await asyncio.sleep(0.05)
        assert not holding.done()
        assert api.obj is not None
        api.replace({**api.obj, "spec": LeaseRecord("op-2", 15, None, None, 1).to_spec()})
        await asyncio.wait_for(holding, 5)
        assert leading() == 0
        # not ours any more: release leaves it be
        await one.release()
        assert api.holder() == "op-2"

    asyncio.run(scenario())
    messages = [r.getMessage() for r in caplog.records]
    assert "leading as op-1" in messages
    assert "another replica took the leader Lease" in messages
    assert "released the leader Lease" not in messages


def test_operator_release_hands_the_lease_over() -> None:
    api = FakeLeaseApi()
    one, two = leader(api, "op-1"), leader(api, "op-2")

    async def scenario() -> None:
        await one.acquire()
        waiting = asyncio.create_task(two.acquire())
        await asyncio.sleep(0.05)
        assert not waiting.done()  # held, and not expired for 15s
        await one.release()
        assert leading() == 0
        await asyncio.wait_for(waiting, 5)
        assert api.holder() == "op-2"

    asyncio.run(scenario())


def test_operator_stops_leading_after_renew_deadline_of_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = FakeLeaseApi()
    one = leader(api, "op-1")

    async def scenario() -> float:
        await one.acquire()
        api.failing = 10**6
        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(one.hold(), 5)
        return asyncio.get_running_loop().time() - started

    took = asyncio.run(scenario())
    assert took >= FAST.renew_deadline
    assert leading() == 0
    assert "could not renew the leader Lease for 0s" in [r.getMessage() for r in caplog.records]
    assert api.holder() == "op-1"  # nobody cleared it: a standby waits for it to expire


def test_operator_is_ready_only_while_the_api_server_answers_its_lease_requests() -> None:
    api = FakeLeaseApi()
    clock = Clock()
    one = leader(api, "op-1", clock)
    window = FAST.retry_every + FAST.renew_every + FAST.renew_deadline

    async def scenario() -> None:
        assert not one.in_contact(), "not ready before it reached the API server once"
        await one.acquire()
        assert one.in_contact()
        clock.advance(window - 0.001)
        assert one.in_contact()
        clock.advance(0.002)
        assert not one.in_contact(), "a replica the API server has not answered is not ready"
        api.failing = 1
        with pytest.raises(ConnectionError):
            await one._try()
        assert not one.in_contact(), "a failed request is no contact"
        await one._try()
        assert one.in_contact()

    asyncio.run(scenario())
