"""Which shards a Task's scaling asks to split: minShards widest first, in parallel, capped
by maxShards; autoSplit after a sustained lag, with a cooldown; and how long a shard has
been behind (status.lagAboveSince)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.unit.controller.models import shard_of, task

from shardkeeper.api.shard import Shard, SplitProgress, SplitRequest, SplitStep
from shardkeeper.api.task import SplitBy, Task
from shardkeeper.controller.specs.scaling import (
    lag_above_since,
    recheck_after,
    scaling_requests,
)
from shardkeeper.controller.specs.shards import new_shard

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
FULL = 0xFFFFFFFF


def owner(min_shards: int = 1, max_shards: int = 8, auto: bool = False) -> Task:
    scaling: dict[str, Any] = {"minShards": min_shards, "maxShards": max_shards}
    if auto:
        scaling["autoSplit"] = {"sustainedFor": "10m"}
    return task(**{"spec.shards.scaling": scaling})


def ready(
    t: Task,
    keys: tuple[int, int] = (0, FULL),
    r_clocks: tuple[int, int] = (0, FULL),
    **status: Any,
) -> Shard:
    made = new_shard(t, keys, r_clocks)
    doc = made.to_k8s()
    name = doc["metadata"]["name"]
    doc["metadata"].update(uid=f"uid-{name}", generation=1)
    doc["status"] = {
        "phase": "Running",
        "primary": f"{name}-0",
        "replicas": [{"pod": f"{name}-0", "state": "PRIMARY"}],
        **status,
    }
    return Shard.from_k8s(doc)


def test_min_shards_splits_the_one_shard_then_both_halves_in_parallel() -> None:
    t = owner(min_shards=4)
    first = scaling_requests(t, [ready(t)], NOW)
    assert [(r.shard, r.by) for r in first] == [("customer-totals-00000000-00000000", "key")]
    halves = [ready(t, (0, 0x7FFFFFFF)), ready(t, (0x80000000, FULL))]
    assert sorted(r.shard for r in scaling_requests(t, halves, NOW)) == [
        "customer-totals-00000000-00000000",
        "customer-totals-80000000-00000000",
    ]


def test_min_shards_goes_widest_first_and_never_past_max_shards() -> None:
    t = owner(min_shards=4, max_shards=4)
    shards = [
        ready(t, (0, 0x3FFFFFFF)),
        ready(t, (0x40000000, 0x7FFFFFFF)),
        ready(t, (0x80000000, FULL)),
    ]
    asked = scaling_requests(t, shards, NOW)
    assert [r.shard for r in asked] == ["customer-totals-80000000-00000000"]
    assert "minShards is 4" in asked[0].reason


def test_min_shards_counts_splits_under_way_and_asked_for() -> None:
    t = owner(min_shards=3)
    busy = ready(t, (0, 0x7FFFFFFF))
    busy.status.split = SplitProgress(
        step=SplitStep.PLAN, by=SplitBy.KEY, children=["customer-totals-40000000-00000000"]
    )
    asked = ready(t, (0x80000000, FULL))
    asked.spec.split = SplitRequest(by=SplitBy.KEY)
    # two shards, one child planned, one split asked for: four on the way
    assert scaling_requests(t, [busy, asked], NOW) == []


def test_shards_that_cannot_split_are_skipped() -> None:
    t = owner(min_shards=2)
    recovering = ready(t, phase="Recovering")
    assert scaling_requests(t, [recovering], NOW) == []
    one_key = ready(t, (5, 5))
    assert [(r.by) for r in scaling_requests(t, [one_key], NOW)] == ["rClock"]


def test_auto_split_waits_for_a_sustained_lag_and_the_cooldown() -> None:
    t = owner(min_shards=1, max_shards=4, auto=True)  # the example: 10m sustained, 10m cooldown
    behind = ready(t, lag=100 << 20, lagAboveSince="2024-05-01T11:55:00Z")
    assert scaling_requests(t, [behind], NOW) == []
    assert recheck_after(t, [behind], NOW) == 300.0
    later = NOW + timedelta(minutes=5)
    asked = scaling_requests(t, [behind], later)
    assert [(r.shard, r.by) for r in asked] == [("customer-totals-00000000-00000000", "key")]
    # a split planned 2 minutes ago holds the next one back until the cooldown is over
    other = ready(t, (0x80000000, FULL))
    other.status.split = SplitProgress(
        step=SplitStep.DONE, by=SplitBy.KEY, started_at=later - timedelta(minutes=2)
    )
    assert scaling_requests(t, [behind, other], later) == []
    assert recheck_after(t, [behind, other], later) == 480.0


def test_auto_split_stops_at_max_shards() -> None:
    t = owner(min_shards=1, max_shards=2, auto=True)
    a = ready(t, (0, 0x7FFFFFFF), lag=100 << 20, lagAboveSince="2024-05-01T10:00:00Z")
    b = ready(t, (0x80000000, FULL))
    assert scaling_requests(t, [a, b], NOW) == []


def test_lag_above_since_is_kept_while_above_and_reset_by_a_split() -> None:
    t = owner(min_shards=1, max_shards=4, auto=True)
    assert lag_above_since(ready(t, lag=1), t, NOW) is None
    assert lag_above_since(ready(t, lag=100 << 20), t, NOW) == NOW
    kept = ready(t, lag=100 << 20, lagAboveSince="2024-05-01T11:00:00Z")
    assert lag_above_since(kept, t, NOW) == datetime(2024, 5, 1, 11, 0, tzinfo=UTC)
    kept.status.split = SplitProgress(step=SplitStep.CATCH_UP, by=SplitBy.KEY)
    assert lag_above_since(kept, t, NOW) is None
    assert lag_above_since(ready(t, lag=100 << 20), owner(), NOW) is None, "no autoSplit"
    assert shard_of(t).status.lag_above_since is None


def test_a_capture_is_scaled_by_r_clock_whatever_autosplit_says() -> None:
    capture = task(
        "ingest-orders",
        **{"spec.shards.scaling": {"minShards": 2, "maxShards": 4, "autoSplit": {"by": "key"}}},
    )
    (request,) = scaling_requests(capture, [ready(capture)], NOW)
    assert request.by == "rClock"
    behind = ready(capture, lag=10**9, lagAboveSince="2024-05-01T11:00:00Z")
    auto_by_key = {"maxShards": 4, "autoSplit": {"by": "key", "sustainedFor": "1m"}}
    single = task("ingest-orders", **{"spec.shards.scaling": auto_by_key})
    (auto,) = scaling_requests(single, [behind], NOW)
    assert auto.by == "rClock"
