"""Lease election logic (shardkeeper.kube.lease, runtime.lease): expiry by the observer's clock,
claims, releases, lost Leases. The Elector's own steps: tests/unit/kube/test_election.py."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import cast

from prometheus_client import CollectorRegistry
from tests.support.clock import Clock
from tests.support.leases import FakeLeaseApi

from shardkeeper.kube.client import Transport
from shardkeeper.kube.election import Elector
from shardkeeper.kube.lease import (
    LeaseRecord,
    Sighting,
    Verdict,
    assess,
    claimed,
    identity_name,
    micro_time,
    released,
    sight,
)
from shardkeeper.runtime.core.metrics import RuntimeMetrics
from shardkeeper.runtime.shell.lease import LeaseKeeper
from shardkeeper.runtime.shell.main import RuntimeHooks
from shardkeeper.runtime.shell.settings import settings_from_env
from shardkeeper.runtime.shell.startup import ShardResources

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


def elector(api: FakeLeaseApi, me: str, clock: Clock) -> Elector:
    return Elector(api, me, 15, monotonic=clock, wall=lambda: NOW)


def test_keeper_loses_the_lease_at_its_renew_deadline_a_margin_before_any_takeover() -> None:
    api, clock = FakeLeaseApi(), Clock()
    keeper = LeaseKeeper(elector(api, "a", clock), poll=0.5, monotonic=clock)
    # another replica sees the holder's write the moment it is sent (the earliest it can)
    other = elector(api, "b", clock)
    keeper.want.set()
    result = keeper.elector.step(want=True)
    keeper._record(result)
    other.step(want=True)
    assert keeper.acquired.is_set()
    assert keeper.held()
    assert keeper.renew_deadline == 10.0
    clock.now += 9.9
    keeper._check_expiry()
    assert keeper.held()
    assert not keeper.lost.is_set()
    # the thread wakes right at the deadline, not a renewal period later
    assert abs(keeper._next_step_in(want=True) - 0.1) < 1e-9
    clock.now += 0.1
    keeper._check_expiry()
    assert not keeper.held()
    assert keeper.lost.is_set()
    # the margin: 5 s more before the other replica may take over by its own clock
    clock.now += 4.9
    assert not other.step(want=True).mine
    clock.now += 0.1
    assert other.step(want=True).mine
    # a keeper that lost the Lease never releases it: it is somebody else's now
    assert not keeper.release()


def runtime_hooks() -> RuntimeHooks:
    """The hooks of one replica process of pod ``replica-0``."""
    env = {"SHARDKEEPER_SHARD": "shard-a", "POD_NAME": "replica-0", "POD_NAMESPACE": "ns"}
    settings = settings_from_env(env)
    metrics = RuntimeMetrics(CollectorRegistry(), settings.shard)
    return RuntimeHooks(settings, cast(Transport, object()), metrics, timeout=1.0)


def test_two_processes_of_one_pod_never_both_hold_the_lease() -> None:
    """A pod's old container (paused, cut off) and its new one share the pod's name."""
    api, clock = FakeLeaseApi(), Clock()
    resources = cast(ShardResources, SimpleNamespace(owner_reference=lambda: {}))
    keepers = [runtime_hooks().lease(resources, lambda: None) for _ in range(2)]
    for keeper in keepers:
        # the same Lease for both, on the test's clock
        keeper.elector = Elector(api, keeper.elector.me, 15, monotonic=clock, wall=lambda: NOW)
        keeper._monotonic = clock
    first, second = (keeper.elector.step(want=True) for keeper in keepers)
    assert first.mine
    assert not second.mine
    for keeper, result in zip(keepers, (first, second), strict=True):
        keeper._record(result)
    assert [keeper.held() for keeper in keepers] == [True, False]
    holder = api.holder()
    assert holder is not None
    assert identity_name(holder) == "replica-0"


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
