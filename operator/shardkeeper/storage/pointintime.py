"""Choosing the point of a recovery log that a restore forks from
(docs/backup-and-restore.md): the log's last commit, or its last commit no later than a
given time.

A state "no later than T" holds only commits of time T or earlier, so the point is the end
of the longest run of commits, from the oldest the log still restores, whose times are all
at most T: the commit right before the first one after T. (Primaries' clocks may disagree
after a failover; a commit after a later-timed one is not taken on its own.) Commits of
older writers carry no time; they precede every commit that has one in their log, so they
count as older than any time.

Only a point the log can still be restored to is chosen: at or after its oldest snapshot
whose log after it is kept, or anywhere when the log still starts at offset 0. A log that
holds no commit early enough and was forked from another one (a split's child, a restored
task's shard) looks in its parent, up to where it forked.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Sequence

from shardkeeper.storage import errors
from shardkeeper.storage.fragment import FragmentKind
from shardkeeper.storage.records import decode_commit_header
from shardkeeper.storage.recoverylog import RecoveryLog
from shardkeeper.storage.snapshot import list_manifest_keys, read_manifest

MAX_FORK_DEPTH = 64


class NoRestorePoint(errors.StorageError):
    """The log holds no commit to restore to (none yet, or none early enough that is
    still kept)."""


@dataclasses.dataclass(frozen=True)
class LoggedCommit:
    """A commit record's place in its log, and its time (None: an older writer's)."""

    begin: int
    end: int
    seq: int
    committed_at: float | None
    epoch: int


@dataclasses.dataclass(frozen=True)
class RestorePoint:
    """Fork ``log`` at ``offset``, the end of the commit ``seq`` of time ``committed_at``."""

    log: str
    offset: int
    seq: int
    committed_at: float | None
    epoch: int


# --- pure -------------------------------------------------------------------------------------


def choose_commit(commits: Sequence[LoggedCommit], before: float | None) -> LoggedCommit | None:
    """The commit to restore to among ``commits`` (in log order): the last one, or, with
    ``before``, the last of the leading run whose times are at most ``before``."""
    if before is None:
        return commits[-1] if commits else None
    chosen = None
    for commit in commits:
        if commit.committed_at is not None and commit.committed_at > before:
            break
        chosen = commit
    return chosen


def restorable_from(first_held: int | None, snapshots: Iterable[int]) -> int | None:
    """The lowest offset a log can be restored to: 0 while it still starts there (or holds
    nothing yet), else its oldest snapshot at or after its first fragment (pruning keeps the
    log from the snapshots it keeps); None when there is no such snapshot."""
    if first_held is None or first_held == 0:
        return 0
    usable = [offset for offset in snapshots if offset >= first_held]
    return min(usable) if usable else None


# --- I/O --------------------------------------------------------------------------------------


def logged_commits(log: RecoveryLog, start: int, until: int | None) -> list[LoggedCommit]:
    """The commits whose records end in ``[start, until]``, read from the bucket (the
    whole records are fetched; only their headers are decoded)."""
    journal = log.journal
    infos = [i for i in journal.list_fragments(0) if i.end >= start]
    if until is not None:
        infos = [i for i in infos if i.end <= until]
    if not infos:
        return []
    found = []
    for fragment in journal.read(infos[0].begin, until, boundary=True):
        if fragment.kind is not FragmentKind.DATA:
            continue
        header = decode_commit_header(journal.key(fragment.begin), fragment.payload)
        if header is not None:
            seq, at = header
            found.append(LoggedCommit(fragment.begin, fragment.end, seq, at, fragment.epoch))
    return found


def oldest_restorable(log: RecoveryLog, until: int | None = None) -> int | None:
    """:func:`restorable_from` of ``log`` as the bucket holds it now (snapshots past
    ``until`` left out)."""
    infos = log.journal.list_fragments(0)
    snapshots = [
        offset
        for offset, key in list_manifest_keys(log)
        if (until is None or offset <= until) and read_manifest(log, key) is not None
    ]
    return restorable_from(infos[0].begin if infos else None, snapshots)


def restore_point(
    log: RecoveryLog, before: float | None, *, until: int | None = None, depth: int = 0
) -> RestorePoint:
    """Where to fork ``log`` (or the log it was forked from) to restore its state at its
    last commit, or no later than ``before`` (seconds since the Unix epoch). Raises
    :class:`NoRestorePoint` with what the log holds when there is none."""
    if depth > MAX_FORK_DEPTH:
        raise RecursionError(f"forks nested deeper than {MAX_FORK_DEPTH} under {log.name}")
    floor = oldest_restorable(log, until)
    if floor is None:
        raise NoRestorePoint(
            f"log {log.name!r} has no snapshot left to restore from below {until:#x}"
            if until is not None
            else f"log {log.name!r} has no snapshot left to restore from"
        )
    commits = logged_commits(log, floor, until)
    chosen = choose_commit(commits, before)
    if chosen is not None:
        return RestorePoint(log.name, chosen.end, chosen.seq, chosen.committed_at, chosen.epoch)
    fork = log.fork_record() if floor == 0 else None
    if fork is not None:
        _, record = fork
        return restore_point(
            log.sibling(record.parent), before, until=record.fence_offset, depth=depth + 1
        )
    if not commits:
        raise NoRestorePoint(f"log {log.name!r} holds no commit yet")
    oldest = commits[0]
    when = f" of {_rfc3339(oldest.committed_at)}" if oldest.committed_at is not None else ""
    raise NoRestorePoint(
        f"the oldest commit log {log.name!r} still holds (seq {oldest.seq}{when}) is later "
        "than the time asked for: nothing older is kept"
    )


def _rfc3339(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).isoformat().replace("+00:00", "Z")


def reserve_restore_point(source: RecoveryLog, child: str, before: float | None) -> RestorePoint:
    """Choose where ``child`` (a log's name, empty yet) forks ``source`` or its lineage, and
    register the fork there at once, so that pruning keeps what the child will restore.

    Idempotent: a fork of ``child`` registered already (an earlier attempt that did not
    finish) is kept, so the point never moves once chosen. Raises :class:`NoRestorePoint`
    when the point chosen could not be kept (pruned meanwhile: try again)."""
    point = restore_point(source, before)
    log = source.sibling(point.log)
    existing = log.read_fork_registration(child)
    if existing is not None and existing.fence_offset != point.offset:
        commits = logged_commits(log, existing.fence_offset, existing.fence_offset)
        if not commits or commits[-1].end != existing.fence_offset:
            raise errors.ForkMismatch(
                f"log {child!r} is registered as a fork of {log.name!r} at "
                f"{existing.fence_offset:#x}, where no commit ends"
            )
        last = commits[-1]
        point = RestorePoint(log.name, last.end, last.seq, last.committed_at, last.epoch)
    log.register_fork(child, point.offset)
    floor = oldest_restorable(log, point.offset)
    if floor is None or floor > point.offset:
        raise NoRestorePoint(
            f"log {log.name!r} was pruned past {point.offset:#x} while the restore was planned"
        )
    return point
