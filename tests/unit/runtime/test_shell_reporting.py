"""What a replica applies to its Shard's status, and when."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from tests.support.clock import Clock

from shardkeeper.api.shard import Checkpoint, CommitPoint, ReplicaState, ReplicaStatus
from shardkeeper.kube.client import ApiError
from shardkeeper.runtime.shell.reporting import (
    MESSAGE_LIMIT,
    PRIMARY_MANAGER,
    PrimaryStatus,
    StatusReporter,
    Superseded,
    clip_message,
    fenced_apply,
    is_due,
    is_urgent,
    primary_apply,
    replica_apply,
)
from shardkeeper.runtime.shell.settings import DEFAULT_STATUS_INTERVAL

AT = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def standby(lag: int = 0, message: str = "") -> ReplicaStatus:
    return ReplicaStatus(
        pod="replica-1",
        state=ReplicaState.STANDBY,
        epoch=3,
        last_commit=CommitPoint(offset=100),
        lag=lag,
        recovery_log_head=100,
        message=message,
    )


def test_replica_apply_holds_only_its_own_entry_in_camel_case() -> None:
    body = replica_apply("ns", "t-00000000-00000000", standby())
    assert body["apiVersion"] == "shardkeeper.io/v1alpha1"
    assert body["kind"] == "Shard"
    assert body["metadata"] == {"name": "t-00000000-00000000", "namespace": "ns"}
    assert body["status"] == {
        "replicas": [
            {
                "pod": "replica-1",
                "state": "STANDBY",
                "epoch": 3,
                "lastCommit": {"offset": 100},
                "lag": 0,
                "recoveryLogHead": 100,
                "message": "",
            }
        ]
    }


def test_a_long_message_is_clipped_to_what_the_schema_takes() -> None:
    message = clip_message("x" * 10_000)
    assert len(message) == MESSAGE_LIMIT
    assert message.endswith("...")
    assert standby(message=message).message == message
    assert clip_message("short") == "short"


def test_primary_apply_never_touches_the_operators_fields() -> None:
    checkpoint = Checkpoint(
        committed_at=AT, transactions=7, recovery_log_offset=900, sources={"a/b": 12}
    )
    body = primary_apply("ns", "s", PrimaryStatus("replica-0", 4, checkpoint, 900, 5))
    assert body["status"] == {
        "primary": "replica-0",
        "epoch": 4,
        "checkpoint": {
            "committedAt": "2024-05-01T12:00:00Z",
            "transactions": 7,
            "recoveryLogOffset": 900,
            "sources": {"a/b": 12},
        },
        "recoveryLogHead": 900,
        "lag": 5,
    }
    handed_over = primary_apply("ns", "s", PrimaryStatus(None, 4))
    assert handed_over["status"] == {"epoch": 4}


def test_state_and_message_changes_are_urgent_progress_is_not() -> None:
    before = replica_apply("ns", "s", standby(lag=1))
    assert is_urgent(None, before)
    assert not is_urgent(before, replica_apply("ns", "s", standby(lag=99)))
    assert is_urgent(before, replica_apply("ns", "s", standby(message="boom")))
    primary = standby().model_copy(update={"state": ReplicaState.PRIMARY})
    assert is_urgent(before, replica_apply("ns", "s", primary))
    one = primary_apply("ns", "s", PrimaryStatus("a", 1))
    assert is_urgent(one, primary_apply("ns", "s", PrimaryStatus("b", 2)))
    assert not is_urgent(one, primary_apply("ns", "s", PrimaryStatus("a", 1, lag=3)))


def test_a_first_commit_is_urgent_later_ones_are_progress() -> None:
    """After a failover, people wait for the new primary's first commit: it must not sit
    out the interval behind the urgent change of state that came just before it."""
    # a standby's last commit is what it replayed: an offset, without a time
    promoted = standby().model_copy(update={"state": ReplicaState.PRIMARY, "epoch": 4})
    before = replica_apply("ns", "s", promoted)
    first = promoted.model_copy(update={"last_commit": CommitPoint(time=AT, offset=200)})
    later = promoted.model_copy(update={"last_commit": CommitPoint(time=AT, offset=300)})
    assert is_urgent(before, replica_apply("ns", "s", first))
    assert not is_urgent(replica_apply("ns", "s", first), replica_apply("ns", "s", later))
    taken = primary_apply(
        "ns", "s", PrimaryStatus("a", 4, Checkpoint(transactions=0), recovery_log_head=200)
    )
    committed = primary_apply(
        "ns",
        "s",
        PrimaryStatus("a", 4, Checkpoint(committed_at=AT, transactions=1), recovery_log_head=250),
    )
    again = primary_apply(
        "ns",
        "s",
        PrimaryStatus("a", 4, Checkpoint(committed_at=AT, transactions=2), recovery_log_head=300),
    )
    assert is_urgent(taken, committed)
    assert not is_urgent(committed, again)


def test_progress_waits_for_the_pods_interval_by_default() -> None:
    sent: list[tuple[str, dict[str, Any]]] = []
    clock = Clock()
    reporter = StatusReporter(
        lambda manager, body: sent.append((manager, body)), "ns", "s", "replica-1", monotonic=clock
    )
    reporter.replica(standby(lag=1))
    reporter._pass()
    reporter.replica(standby(lag=2))
    clock.now += DEFAULT_STATUS_INTERVAL - 0.5
    assert 0 < reporter._pass() <= 0.5
    assert len(sent) == 1, "a busy shard's progress waits out the interval"
    clock.now += 0.5
    reporter._pass()
    assert len(sent) == 2


def test_progress_is_applied_at_most_every_min_interval() -> None:
    applied = replica_apply("ns", "s", standby(lag=1))
    moved = replica_apply("ns", "s", standby(lag=2))
    assert not is_due(applied, applied, 0.0, 100.0, 1.0)
    assert not is_due(None, applied, 0.0, 100.0, 1.0)
    assert not is_due(moved, applied, 10.0, 10.5, 1.0)
    assert is_due(moved, applied, 10.0, 11.0, 1.0)
    failed = replica_apply("ns", "s", standby(message="bad"))
    assert is_due(failed, applied, 10.0, 10.1, 1.0)


def test_reporter_sends_urgent_changes_at_once_and_holds_progress_back() -> None:
    sent: list[tuple[str, dict[str, Any]]] = []
    clock = Clock()
    reporter = StatusReporter(
        lambda manager, body: sent.append((manager, body)),
        "ns",
        "s",
        "replica-1",
        min_interval=1.0,
        monotonic=clock,
    )
    reporter.replica(standby(lag=1))
    reporter._pass()
    reporter.replica(standby(lag=2))
    wait = reporter._pass()
    assert [m for m, _ in sent] == ["shardkeeper-replica-replica-1"]
    assert 0 < wait <= 1.0
    clock.now += 1.0
    reporter._pass()
    assert len(sent) == 2
    assert sent[-1][1]["status"]["replicas"][0]["lag"] == 2
    reporter.primary(PrimaryStatus("replica-1", 5))
    reporter._pass()
    assert sent[-1][0] == PRIMARY_MANAGER


def test_reporter_retries_a_failed_apply_after_a_pause() -> None:
    calls: list[dict[str, Any]] = []
    clock = Clock()

    def apply(manager: str, body: dict[str, Any]) -> None:
        calls.append(body)
        if len(calls) == 1:
            raise RuntimeError("API server unavailable")

    reporter = StatusReporter(apply, "ns", "s", "r", retry_after=2.0, monotonic=clock)
    reporter.replica(standby())
    reporter._pass()
    reporter._pass()
    assert len(calls) == 1
    clock.now += 2.0
    reporter._pass()
    assert len(calls) == 2
    reporter._pass()
    assert len(calls) == 2
    assert reporter.flush()


class FakeShard:
    """A Shard's status behind a resourceVersion, as the API server keeps it."""

    def __init__(self, epoch: int) -> None:
        self.version = 1
        self.status: dict[str, Any] = {"epoch": epoch, "primary": "replica-0"}
        self.before_apply: list[Any] = []  # what happens between a read and an apply

    def read(self) -> dict[str, Any]:
        return {"metadata": {"resourceVersion": str(self.version)}, "status": dict(self.status)}

    def apply(self, body: dict[str, Any]) -> None:
        if self.before_apply:
            self.before_apply.pop(0)()
        if body["metadata"]["resourceVersion"] != str(self.version):
            raise ApiError(409, "Conflict", {"message": "the object has been modified"})
        self.status.update(body["status"])
        self.version += 1


def test_fenced_apply_writes_while_no_newer_epoch_is_in_the_status() -> None:
    shard = FakeShard(epoch=5)
    fenced_apply(shard.read, shard.apply, primary_apply("ns", "s", PrimaryStatus("replica-1", 6)))
    assert shard.status == {"epoch": 6, "primary": "replica-1"}
    fenced_apply(shard.read, shard.apply, primary_apply("ns", "s", PrimaryStatus("replica-1", 6)))
    assert shard.version == 3


def test_fenced_apply_refuses_a_stale_epoch() -> None:
    shard = FakeShard(epoch=7)
    with pytest.raises(Superseded):
        fenced_apply(shard.read, shard.apply, primary_apply("ns", "s", PrimaryStatus("r", 6)))
    assert shard.status == {"epoch": 7, "primary": "replica-0"}


def test_fenced_apply_loses_the_race_with_a_takeover_between_read_and_apply() -> None:
    shard = FakeShard(epoch=6)

    def takeover() -> None:
        shard.status.update(epoch=7, primary="replica-0")
        shard.version += 1

    shard.before_apply.append(takeover)
    with pytest.raises(Superseded):
        fenced_apply(shard.read, shard.apply, primary_apply("ns", "s", PrimaryStatus("r", 6)))
    assert shard.status == {"epoch": 7, "primary": "replica-0"}


def test_fenced_apply_retries_conflicts_from_other_writers_then_gives_up() -> None:
    shard = FakeShard(epoch=6)

    def other_writer() -> None:
        shard.version += 1

    shard.before_apply.extend([other_writer, other_writer])
    fenced_apply(shard.read, shard.apply, primary_apply("ns", "s", PrimaryStatus("r", 6)))
    assert shard.status["primary"] == "r"
    shard.before_apply.extend([other_writer] * 3)
    with pytest.raises(ApiError) as conflict:
        fenced_apply(
            shard.read, shard.apply, primary_apply("ns", "s", PrimaryStatus("x", 6)), attempts=3
        )
    assert conflict.value.status == 409
    assert shard.status["primary"] == "r"


def test_reporter_stops_reporting_primary_fields_once_superseded() -> None:
    sent: list[str] = []

    def apply(manager: str, body: dict[str, Any]) -> None:
        if manager == PRIMARY_MANAGER:
            raise Superseded("the status holds epoch 7, newer than 6")
        sent.append(manager)

    reporter = StatusReporter(apply, "ns", "s", "r")
    reporter.primary(PrimaryStatus("r", 6))
    reporter.replica(standby())
    reporter._pass()
    assert sent == ["shardkeeper-replica-r"]
    assert reporter.flush()
