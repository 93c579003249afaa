"""What a Collection's retention needs from the API: its limits and its readers' positions.
Pure: models in, plain values out (the deleting is ``storage/retention.py``'s)."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence

from shardkeeper.api.collection import Retention
from shardkeeper.api.meta import quantity_value
from shardkeeper.api.shard import Shard, ShardPhase
from shardkeeper.storage.retention import Limits

# how often the operator applies a Collection's retention, unless --retention-every says
RETENTION_EVERY = datetime.timedelta(minutes=5)


def limits(retention: Retention) -> Limits:
    return Limits(
        max_age=None if retention.max_age is None else retention.max_age.to_timedelta(),
        max_bytes=None if retention.max_bytes is None else int(quantity_value(retention.max_bytes)),
    )


def reader_positions(
    reading: Mapping[str, Sequence[Shard]],
) -> dict[str, Mapping[str, int] | None]:
    """Each reader's committed positions by journal, from ``reading`` (every Task that
    reads the collection, with its Shards). ``None`` where they are not known: a Shard that
    has reported no checkpoint, or a Task that has no Shard (yet). A retired shard (the
    parent of a finished split) reads no more; its children read on from its checkpoint."""
    out: dict[str, Mapping[str, int] | None] = {}
    for task, shards in sorted(reading.items()):
        live = [s for s in shards if s.status.phase != ShardPhase.RETIRED]
        if not live:
            out[f"Task {task} (no shards)"] = None
        for shard in live:
            checkpoint = shard.status.checkpoint
            name = f"Shard {shard.metadata.name}"
            out[name] = None if checkpoint is None else dict(checkpoint.sources)
    return out


def due_in(
    last_run: datetime.datetime | None, now: datetime.datetime, every: datetime.timedelta
) -> datetime.timedelta:
    """How long until retention runs again (zero or less: now), running ``every`` so long."""
    if last_run is None:
        return datetime.timedelta(0)
    return last_run + every - now
