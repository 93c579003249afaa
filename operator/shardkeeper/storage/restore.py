"""Restoring a shard store's database from its recovery log onto the local volume.

A log's **lineage** is what rebuilds its state: a base (the newest usable snapshot, or an
empty database) and the log segments to replay after it, in order. A log forked from a
parent starts with the parent's segment up to the fork's fence (recursively, until a
snapshot or the first log), unless the log has a snapshot of its own.

A volume already holding a database is kept when its last commit (from the database's
meta row) is a commit of the lineage at or after the base; replay then resumes right after
it. It is rebuilt when that commit is not in the log (the volume is ahead: the commit's
append never landed), when the log holds another writer's commit there (another epoch),
when it is older than the base snapshot (the log below may be pruned), or when it comes
from an unrelated log.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from shardkeeper.storage import errors
from shardkeeper.storage.fragment import Fragment, FragmentKind
from shardkeeper.storage.records import CommitRecord, ForkRecord, decode_record
from shardkeeper.storage.recoverylog import RecoveryLog
from shardkeeper.storage.snapshot import Manifest, latest_snapshot, restore_snapshot
from shardkeeper.storage.volume import CommitMeta, LocalState, PageWriter, RunWriter, Volume

#: the buffer replay gathers a run of consecutive pages in for one direct write
REPLAY_RUN_BYTES = 8 << 20


@dataclasses.dataclass(frozen=True)
class Segment:
    log: RecoveryLog
    start: int
    # the offset of the fence that ends this segment; ``None`` runs to the head
    until: int | None
    # whether ``until`` is a fence (a split's hand-off), or the end of a commit (a
    # restore's point in time, docs/backup-and-restore.md)
    fenced: bool = True


@dataclasses.dataclass(frozen=True)
class Lineage:
    base: Manifest | None
    segments: tuple[Segment, ...]


@dataclasses.dataclass
class ReplayState:
    """Where replay stands: what the database holds and where the log was read to."""

    log: RecoveryLog
    offset: int
    meta: CommitMeta | None
    page_size: int | None
    db_pages: int
    commits: int = 0
    bytes: int = 0


@dataclasses.dataclass(frozen=True)
class RestoreReport:
    source: str  # "volume", "snapshot" or "empty"
    reason: str
    snapshot_id: str | None
    commits_replayed: int
    bytes_replayed: int
    seconds: float
    # bytes of the snapshot written straight to the device (O_DIRECT), not via the cache
    direct_bytes: int = 0


def build_lineage(log: RecoveryLog, until: int | None = None, *, fenced: bool = True) -> Lineage:
    snapshot = latest_snapshot(log, at_most=until)
    if snapshot is not None:
        return Lineage(snapshot, (Segment(log, snapshot.offset, until, fenced),))
    fork = log.fork_record()
    if fork is None:
        return Lineage(None, (Segment(log, 0, until, fenced),))
    fragment, record = fork
    parent = build_lineage(log.sibling(record.parent), record.fence_offset, fenced=record.at_fence)
    return Lineage(parent.base, (*parent.segments, Segment(log, fragment.end, until, fenced)))


def locate_volume(lineage: Lineage, meta: CommitMeta) -> tuple[int, int] | str:
    """Where replay resumes for a volume whose last commit is ``meta``: ``(segment index,
    offset)``, or why the volume cannot be used."""
    base_commit = lineage.base.last_commit if lineage.base else None
    for index, segment in enumerate(lineage.segments):
        if segment.log.name != meta.log:
            continue
        if index == 0 and lineage.base is not None and meta.begin < segment.start:
            if base_commit == meta:
                return 0, segment.start
            return "its last commit is older than the latest snapshot"
        journal = segment.log.journal
        fragment = journal.read_fragment(meta.begin)
        if fragment is None:
            return "it is ahead of the log: its last commit never reached the log"
        record = (
            decode_record(journal.key(meta.begin), fragment.payload)
            if fragment.kind is FragmentKind.DATA
            else None
        )
        if not isinstance(record, CommitRecord) or record.commit_id != meta.commit_id:
            return (
                f"it diverged: the log holds another writer's record (epoch "
                f"{fragment.epoch}) where its last commit (epoch {meta.epoch}) was"
            )
        if segment.until is not None and fragment.end > segment.until:
            return "its last commit lies past the fence this restore stops at"
        return index, fragment.end
    if base_commit == meta:
        return 0, lineage.segments[0].start
    return f"it holds the state of log {meta.log!r}, which is not in this log's lineage"


def apply_commit(
    writer: PageWriter,
    state: ReplayState,
    record: CommitRecord,
    where: str,
    runs: RunWriter | None = None,
) -> None:
    if state.page_size is None:
        state.page_size = record.page_size
    elif record.page_size != state.page_size:
        raise errors.JournalCorrupt(
            f"{where}: commit with page size {record.page_size} on a database of {state.page_size}"
        )
    writer.write_pages(record.pages, runs)
    if record.db_pages < state.db_pages:
        # a shrink; pages past the end must not survive into a later regrowth
        writer.resize(record.db_pages)
    state.db_pages = record.db_pages


def replay(
    volume: Volume,
    state: ReplayState,
    segments: tuple[Segment, ...],
    *,
    read_ahead: int,
    stop_before: Callable[[Fragment], bool] | None = None,
) -> int | None:
    """Apply every commit of ``segments`` (from ``state.offset`` in the first) to the
    closed database file, and check that each bounded segment ends at a fence.

    ``stop_before`` is asked of every fence on the way: when it holds, replay stops right
    before that fence and returns its offset (``None``: it went to the end)."""
    with volume.writing_pages(state.page_size or 4096) as writer:
        return apply_segments(
            writer, state, segments, read_ahead=read_ahead, stop_before=stop_before
        )


def apply_segments(
    writer: PageWriter,
    state: ReplayState,
    segments: tuple[Segment, ...],
    *,
    read_ahead: int,
    stop_before: Callable[[Fragment], bool] | None = None,
) -> int | None:
    """:func:`replay` through a writer the caller holds (and syncs)."""
    # long runs of a commit's pages go straight to the device, as a snapshot's do
    with writer.runs(writers=1, run_bytes=REPLAY_RUN_BYTES) as runs:
        return _apply_segments(
            writer, runs, state, segments, read_ahead=read_ahead, stop_before=stop_before
        )


def _apply_segments(
    writer: PageWriter,
    runs: RunWriter,
    state: ReplayState,
    segments: tuple[Segment, ...],
    *,
    read_ahead: int,
    stop_before: Callable[[Fragment], bool] | None,
) -> int | None:
    for number, segment in enumerate(segments):
        offset = state.offset if number == 0 else segment.start
        journal = segment.log.journal
        state.log = segment.log
        state.offset = offset
        for fragment in journal.read(offset, segment.until, read_ahead=read_ahead, boundary=True):
            if (
                stop_before is not None
                and fragment.kind is FragmentKind.FENCE
                and stop_before(fragment)
            ):
                writer.resize(state.db_pages)
                return fragment.begin
            if fragment.kind is FragmentKind.DATA:
                where = journal.key(fragment.begin)
                record = decode_record(where, fragment.payload)
                if isinstance(record, CommitRecord):
                    if writer.page_size != record.page_size and state.page_size is None:
                        writer.page_size = record.page_size
                    apply_commit(writer, state, record, where, runs)
                    state.meta = CommitMeta(
                        segment.log.name,
                        fragment.begin,
                        record.commit_id,
                        record.seq,
                        fragment.epoch,
                    )
                    state.commits += 1
                    state.bytes += len(fragment.payload)
                elif not (isinstance(record, ForkRecord) and fragment.begin == 0):
                    raise errors.JournalCorrupt(f"{where}: a fork record inside a log")
            state.offset = fragment.end
        if segment.until is not None:
            check_fence(segment, state.offset)
    writer.resize(state.db_pages)
    return None


def check_fence(segment: Segment, offset: int) -> None:
    """That replay of ``segment`` ended at its end: a fence, or for a segment that ends at a
    commit (``fenced`` False), a fragment boundary."""
    assert segment.until is not None
    if not segment.fenced:
        if offset != segment.until:
            raise errors.ForkMismatch(
                f"log {segment.log.name!r} has no record ending at offset {segment.until:#x} "
                f"(read up to {offset:#x}): a restore starts at the end of a commit"
            )
        return
    journal = segment.log.journal
    fence = journal.read_fragment(segment.until)
    if offset != segment.until or fence is None or fence.kind is not FragmentKind.FENCE:
        raise errors.ForkMismatch(
            f"log {segment.log.name!r} has no fence at offset {segment.until:#x} (read up to "
            f"{offset:#x}): a fork must start at the fence that handed the parent off"
        )


def restore(
    volume: Volume,
    log: RecoveryLog,
    *,
    until: int | None = None,
    until_fenced: bool = True,
    read_ahead: int = 4,
    transfers: int = 4,
) -> tuple[ReplayState, RestoreReport]:
    """Bring ``volume`` to the state of ``log`` at its head (or at the fence ``until``; with
    ``until_fenced`` False, at the end of the commit that ends at ``until``)."""
    started = time.monotonic()
    direct_bytes = 0
    local = volume.inspect()
    lineage = build_lineage(log, until, fenced=until_fenced)
    start, reason = _choose_start(lineage, local)
    if start is not None:
        assert local is not None
        index, offset = start
        state = ReplayState(
            lineage.segments[index].log, offset, local.meta, local.page_size, local.db_pages
        )
        source = "volume"
        segments = lineage.segments[index:]
        replay(volume, state, segments, read_ahead=read_ahead)
    else:
        volume.wipe()
        base = lineage.base
        first = lineage.segments[0]
        segments = lineage.segments
        if base is not None:
            state = ReplayState(
                first.log, base.offset, base.last_commit, base.page_size, base.db_pages
            )
            source = "snapshot"
            # the snapshot's pages and the log after it under one torn marker and one
            # sync: the file is only ever trusted once both are durable
            with volume.writing_pages(base.page_size) as writer:
                direct_bytes = restore_snapshot(first.log, base, writer, transfers=transfers)
                apply_segments(writer, state, segments, read_ahead=read_ahead)
        else:
            state = ReplayState(first.log, 0, None, None, 0)
            source = "empty"
            replay(volume, state, segments, read_ahead=read_ahead)
    report = RestoreReport(
        source=source,
        reason=reason,
        snapshot_id=lineage.base.snapshot_id if source == "snapshot" and lineage.base else None,
        commits_replayed=state.commits,
        bytes_replayed=state.bytes,
        seconds=time.monotonic() - started,
        direct_bytes=direct_bytes,
    )
    return state, report


def _choose_start(lineage: Lineage, local: LocalState | None) -> tuple[tuple[int, int] | None, str]:
    if local is None:
        return None, "the volume holds no database"
    if local.meta is None:
        return None, "the volume's database holds no commit"
    where = locate_volume(lineage, local.meta)
    if isinstance(where, str):
        return None, f"the volume's database was rebuilt: {where}"
    return where, "the volume's database matches the log"
