"""Where a split hands a child its range: the first fence of the parent's log that no
longer claims it (docs/splits.md, "Fences claim ranges"), and the store a replica opens
accordingly."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from shardkeeper.runtime.core.routing import Ranges
from shardkeeper.runtime.shell.startup import ShardResources
from shardkeeper.storage.fragment import Fragment
from shardkeeper.storage.journal import fence_claim
from shardkeeper.storage.recoverylog import FenceClaim, RecoveryLog
from shardkeeper.storage.store import ShardStore, StoreOptions


def gave_up(claim: dict[str, str] | None, child: Ranges) -> bool:
    """Whether a fence with this claim hands ``child``'s range off: it claims ranges, and
    none of ``child``'s. A fence without a claim (written by no shard primary) does not."""
    if claim is None:
        return False
    try:
        return not Ranges.from_claim(claim).overlaps(child)
    except ValueError:
        return False


def hand_off_point(claims: Sequence[FenceClaim], child: Ranges) -> int | None:
    """The offset of the hand-off fence among a parent log's indexed claims, if any."""
    for claim in claims:
        if gave_up(claim.owns, child):
            return claim.offset
    return None


def hand_off_fence(child: Ranges) -> Callable[[Fragment], bool]:
    """For :meth:`ShardStore.catch_up`: stop a child's standby right before the hand-off."""
    return lambda fragment: gave_up(fence_claim(fragment), child)


def open_shard_store(
    own: RecoveryLog,
    data_dir: Path,
    resources: ShardResources,
    options: StoreOptions | None = None,
) -> ShardStore:
    """The standby a replica starts with: of the shard's own log ``own``; or, while a
    split builds the shard and it has not forked yet, of the parent's log, never past the
    hand-off if that is there already (the epoch is chosen when the replica takes over).
    A shard of a restored task that has not forked yet opens the log it restores from, up
    to the end of the commit it starts from (docs/backup-and-restore.md)."""
    if own.fork_record() is not None:
        return ShardStore.open(data_dir, own, 0, options=options)
    if resources.restore_source_log is not None and resources.restore_offset is not None:
        source = own.sibling(resources.restore_source_log)
        return ShardStore.open(
            data_dir,
            source,
            0,
            until=resources.restore_offset,
            until_fenced=False,
            options=options,
        )
    if resources.split_source_log is None:
        return ShardStore.open(data_dir, own, 0, options=options)
    parent = own.sibling(resources.split_source_log)
    until = hand_off_point(parent.claims(), Ranges.of(resources.shard.spec))
    return ShardStore.open(data_dir, parent, 0, until=until, options=options)
