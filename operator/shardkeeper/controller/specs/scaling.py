"""Which shards a Task's scaling asks to split, as pure functions of the Task, its Shards
and the time.

Scaling asks the way a person does, by setting a shard's ``spec.split``; the split itself
then runs as any other (splits.py). Nothing is kept in memory: how long a shard has been
behind is its ``status.lagAboveSince`` (which the operator writes), and when the task last
split is the newest ``status.split.startedAt`` of its shards, so a restarted operator
decides the same.

The widest shard is the one with the largest product of key range and r-clock range
widths: that product is the share of the task's work space it owns, whichever range was
halved before.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, timedelta

from shardkeeper.api.shard import Shard
from shardkeeper.api.task import SplitBy, Task
from shardkeeper.controller.specs.splits import (
    counted,
    in_progress,
    pending_children,
    refusal,
    requested,
    single_value,
    split_by_for,
)

RECHECK_FLOOR_SECONDS = 1.0


@dataclasses.dataclass(frozen=True)
class ScalingRequest:
    shard: str
    by: SplitBy
    reason: str


def width(shard: Shard) -> int:
    spec = shard.spec
    return (spec.key_end - spec.key_begin + 1) * (spec.r_clock_end - spec.r_clock_begin + 1)


def planned(shards: Sequence[Shard]) -> int:
    """Shards there will be once the splits under way and asked for have their children."""
    return len(counted(shards)) + pending_children(shards) + sum(1 for s in shards if requested(s))


def _min_shards_by(shard: Shard, task: Task) -> SplitBy:
    by = SplitBy.R_CLOCK if single_value(shard, SplitBy.KEY) else SplitBy.KEY
    return split_by_for(task, by)


def _eligible(shard: Shard, task: Task, shards: Sequence[Shard], by: SplitBy) -> bool:
    # maxShards is left to the callers, which count the splits they ask for in one pass
    found = refusal(shard, task, shards, by)
    return shard.spec.split is None and (found is None or found.reason == "MaxShards")


def last_split_at(shards: Sequence[Shard]) -> datetime | None:
    starts = [s.status.split.started_at for s in shards if s.status.split is not None]
    return max((t for t in starts if t is not None), default=None)


def lag_above_since(shard: Shard, task: Task, now: datetime) -> datetime | None:
    """What the shard's status.lagAboveSince should say now."""
    auto = task.spec.shards.scaling.auto_split
    lag = shard.status.lag
    if auto is None or lag is None or lag <= auto.lag_bytes:
        return None
    # a split changes what the shard reads: its lag counts afresh after it
    if in_progress(shard) or shard.spec.split_source is not None:
        return None
    return shard.status.lag_above_since or now


def _sustained(shard: Shard, task: Task, now: datetime) -> bool:
    auto = task.spec.shards.scaling.auto_split
    since = shard.status.lag_above_since
    return (
        auto is not None and since is not None and now - since >= auto.sustained_for.to_timedelta()
    )


def scaling_requests(task: Task, shards: Sequence[Shard], now: datetime) -> list[ScalingRequest]:
    """The shards to ask to split now, and why."""
    scaling = task.spec.shards.scaling
    room = scaling.effective_max_shards() - planned(shards)
    out: list[ScalingRequest] = []
    need = min(scaling.min_shards - planned(shards), room)
    if need > 0:
        candidates = [s for s in shards if _eligible(s, task, shards, _min_shards_by(s, task))]
        candidates.sort(key=lambda s: (-width(s), s.metadata.name or ""))
        for shard in candidates[:need]:
            out.append(
                ScalingRequest(
                    shard.metadata.name or "",
                    _min_shards_by(shard, task),
                    f"the task has {len(counted(shards))} shards and minShards is "
                    f"{scaling.min_shards}; {shard.metadata.name} is the widest ready shard",
                )
            )
        room -= len(out)
    auto = scaling.auto_split
    if auto is None or room <= 0 or out or any(requested(s) for s in shards):
        return out
    last = last_split_at(shards)
    if last is not None and now - last < auto.cooldown.to_timedelta():
        return out
    by = split_by_for(task, auto.by)
    behind = [s for s in shards if _sustained(s, task, now) and _eligible(s, task, shards, by)]
    if behind:
        shard = max(behind, key=lambda s: (s.status.lag or 0, s.metadata.name or ""))
        out.append(
            ScalingRequest(
                shard.metadata.name or "",
                by,
                f"its source lag ({shard.status.lag} bytes) has stayed above lagBytes "
                f"({auto.lag_bytes}) for {auto.sustained_for} or more",
            )
        )
    return out


def recheck_after(task: Task, shards: Sequence[Shard], now: datetime) -> float | None:
    """Seconds until an automatic split may become due with nothing else changing: a
    shard's lag sustained long enough, or the cooldown over. None: not before a change."""
    auto = task.spec.shards.scaling.auto_split
    if auto is None:
        return None
    last = last_split_at(shards)
    cooldown_end = last + auto.cooldown.to_timedelta() if last is not None else now
    due = [
        max(s.status.lag_above_since + auto.sustained_for.to_timedelta(), cooldown_end)
        for s in shards
        if s.status.lag_above_since is not None
    ]
    # one already due and still not asked for waits for a change of its own (it is not
    # ready, say), which queues the task anyway
    later = [d for d in due if d > now]
    if not later:
        return None
    return max(RECHECK_FLOOR_SECONDS, (min(later) - now) / timedelta(seconds=1))
