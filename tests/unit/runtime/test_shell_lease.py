"""Lease election logic (shardkeeper.kube.lease, runtime.lease): expiry by the observer's clock,
claims, releases, lost Leases."""

from __future__ import annotations

import copy
import itertools
from datetime import UTC, datetime
from typing import Any

from tests.support.clock import Clock

from shardkeeper.kube.lease import (
    LeaseRecord,
    Sighting,
    Verdict,
    assess,
    claimed,
    micro_time,
    released,
    sight,
)
from shardkeeper.runtime.shell.lease import Elector, LeaseKeeper

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def record(holder: str | None, renew: str = "t1", duration: int = 15) -> LeaseRecord:
    return LeaseRecord(holder, duration, "t0", renew, 3)


def test_micro_time_always_has_six_fraction_digits() -> None:
    assert micro_time(NOW) == "2024-05-01T12:00:00.000000Z"
    assert micro_time(NOW.replace(microsecond=120)) == "2024-05-01T12:00:00.000120Z"


def test_spec_round_trip_and_cleared_holder_is_left_out() -> None:
    held = record("replica-0")
    assert LeaseRecord.from_spec(held.to_spec()) == held
    assert "holderIdentity" not in released(held).to_spec()
    assert LeaseRecord.from_spec({"holderIdentity": ""}).holder is None


def test_expiry_counts_from_when_this_replica_saw_the_record_change() -> None:
    first = sight(None, record("replica-0", "t1"), "7", now=100.0)
    # the same record seen later keeps the clock running from its first sighting
    same = sight(first, record("replica-0", "t1"), "7", now=110.0)
    assert same.since == 100.0
    assert assess(same, "replica-1", now=114.9) is Verdict.HELD
    assert assess(same, "replica-1", now=115.0) is Verdict.EXPIRED
    # a renewal restarts it, however old renewTime looks on the holder's clock
    renewed = sight(same, record("replica-0", "t2"), "8", now=114.0)
    assert assess(renewed, "replica-1", now=128.9) is Verdict.HELD
    # so does any write, even one whose renewTime the holder's clock made equal
    rewritten = sight(renewed, record("replica-0", "t2"), "9", now=120.0)
    assert assess(rewritten, "replica-1", now=134.9) is Verdict.HELD


def test_verdicts_for_own_free_and_absent_leases() -> None:
    assert assess(None, "me", 0.0) is Verdict.ABSENT
    assert assess(Sighting(record("me"), "1", 0.0), "me", 1e9) is Verdict.MINE
    assert assess(Sighting(record(None), "1", 0.0), "me", 0.0) is Verdict.FREE


def test_claims_count_transitions_and_renewals_keep_acquire_time() -> None:
    fresh = claimed(None, "me", 15, NOW)
    assert (fresh.holder, fresh.transitions, fresh.acquire_time) == ("me", 0, micro_time(NOW))
    taken = claimed(record("other"), "me", 15, NOW)
    assert (taken.holder, taken.transitions, taken.acquire_time) == ("me", 4, micro_time(NOW))
    renewed = claimed(record("me"), "me", 15, NOW)
    assert (renewed.transitions, renewed.acquire_time) == (3, "t0")
    assert renewed.renew_time == micro_time(NOW)


class FakeLeaseApi:
    """An in-memory Lease with the API server's optimistic concurrency."""

    def __init__(self) -> None:
        self.obj: dict[str, Any] | None = None
        self.versions = itertools.count(1)
        self.writes = 0

    def read(self) -> dict[str, Any] | None:
        return copy.deepcopy(self.obj)

    def create(self, rec: LeaseRecord) -> dict[str, Any] | None:
        if self.obj is not None:
            return None
        self.obj = {"metadata": {"resourceVersion": str(next(self.versions))}}
        self.obj["spec"] = rec.to_spec()
        self.writes += 1
        return copy.deepcopy(self.obj)

    def replace(self, current: dict[str, Any], rec: LeaseRecord) -> dict[str, Any] | None:
        assert self.obj is not None
        if current["metadata"]["resourceVersion"] != self.obj["metadata"]["resourceVersion"]:
            return None
        self.obj = {"metadata": {"resourceVersion": str(next(self.versions))}}
        self.obj["spec"] = rec.to_spec()
        self.writes += 1
        return copy.deepcopy(self.obj)

    def holder(self) -> str | None:
        assert self.obj is not None
        return LeaseRecord.from_spec(self.obj["spec"]).holder


def elector(api: FakeLeaseApi, me: str, clock: Clock) -> Elector:
    return Elector(api, me, 15, monotonic=clock, wall=lambda: NOW)  # type: ignore[arg-type]


def test_first_replica_creates_the_lease_and_the_second_waits_a_whole_duration() -> None:
    api, clock = FakeLeaseApi(), Clock()
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    assert a.step(want=True).mine
    assert api.holder() == "a"
    seen = b.step(want=True)
    assert (seen.mine, seen.holder) == (False, "a")
    clock.now += 14.9
    assert not b.step(want=True).mine
    clock.now += 0.1
    took = b.step(want=True)
    assert took.mine
    assert api.holder() == "b"


def test_renewals_keep_the_lease_from_a_waiting_replica() -> None:
    api, clock = FakeLeaseApi(), Clock()
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    a.step(want=True)
    for _ in range(10):
        clock.now += 5
        # the wall clock stands still: only the write itself shows the renewal
        assert a.step(want=True).mine
        assert not b.step(want=True).mine
    assert api.holder() == "a"


def test_a_released_lease_is_taken_at_once_and_only_the_holder_releases() -> None:
    api, clock = FakeLeaseApi(), Clock()
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    a.step(want=True)
    b.step(want=True)
    assert not b.release()
    assert api.holder() == "a"
    assert a.release()
    assert api.holder() is None
    assert b.step(want=True).mine


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


def test_keeper_loses_the_lease_after_a_duration_without_a_renewal() -> None:
    api, clock = FakeLeaseApi(), Clock()
    keeper = LeaseKeeper(elector(api, "a", clock), poll=0.5, monotonic=clock)
    keeper.want.set()
    result = keeper.elector.step(want=True)
    keeper._record(result)
    assert keeper.acquired.is_set()
    assert keeper.held()
    clock.now += 14.9
    keeper._check_expiry()
    assert keeper.held()
    assert not keeper.lost.is_set()
    clock.now += 0.1
    keeper._check_expiry()
    assert not keeper.held()
    assert keeper.lost.is_set()
    # a keeper that lost the Lease never releases it: it is somebody else's now
    assert not keeper.release()


def test_keeper_loses_the_lease_when_another_replica_holds_it() -> None:
    api, clock = FakeLeaseApi(), Clock()
    keeper = LeaseKeeper(elector(api, "a", clock), poll=0.5, monotonic=clock)
    keeper._record(keeper.elector.step(want=True))
    other = elector(api, "b", clock)
    clock.now += 16
    other.step(want=True)
    clock.now += 16
    assert other.step(want=True).mine
    keeper._record(keeper.elector.step(want=True))
    assert keeper.lost.is_set()
    assert keeper.holder == "b"


def test_a_waiting_keeper_steps_again_right_when_the_holders_lease_runs_out() -> None:
    api, clock = FakeLeaseApi(), Clock()
    elector(api, "a", clock).step(want=True)
    keeper = LeaseKeeper(elector(api, "b", clock), poll=0.5, monotonic=clock)
    keeper._record(keeper.elector.step(want=True))
    assert keeper._next_step_in(want=True) == 0.5
    assert keeper.elector.expires_in() == 15.0
    clock.now += 14.8
    assert abs(keeper._next_step_in(want=True) - 0.21) < 1e-9
    assert keeper._next_step_in(want=False) == 0.5


def test_a_failed_renewal_is_retried_at_the_pace_of_polls() -> None:
    api, clock = FakeLeaseApi(), Clock()
    keeper = LeaseKeeper(elector(api, "a", clock), poll=0.5, monotonic=clock)
    keeper._record(keeper.elector.step(want=True))
    assert keeper._next_step_in(want=True) == 5.0
    keeper._failures = 1  # what _run counts when a step raises
    assert keeper._next_step_in(want=True) == 0.5
