"""The primary prunes its own recovery log, in the background, after its snapshots.

A snapshot is what makes older log data unneeded, so a prune is considered once one has
landed, and at most once per ``spec.shards.pruneEvery`` (attempts that were held back or
failed count too). The plan is :func:`shardkeeper.storage.prune.plan_prune`'s, which keeps
what this log's recovery and its forks need and never unfences; on top of it:

- no prune while a split involves the shard (``spec.split``, ``splitTargets``,
  ``splitSource``, or a split step that has not ended): a child being built restores
  from this log's snapshot and tails this log before any fork registration protects it;
- nothing a hot standby has yet to read goes: the lowest ``recoveryLogHead`` its other
  replicas report bounds the plan (``retain_from``). A reported position is never ahead
  of the replica, so a stale one only keeps more. A replica whose position is unknown
  (restoring, or not reported yet) holds the prune back until the next interval.

A failed prune (the bucket refused or was unreachable) is logged and counted, and tried
again an interval later; it never stops the primary.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
from collections.abc import Callable
from typing import Protocol

from shardkeeper.api.meta import Duration
from shardkeeper.api.pod import pod_name, pod_ordinal
from shardkeeper.api.shard import SPLIT_ENDED, RecoveryLogPrune, ReplicaState, Shard
from shardkeeper.storage.prune import PrunePlan, prune
from shardkeeper.storage.recoverylog import RecoveryLog
from shardkeeper.storage.snapshot import Manifest

log = logging.getLogger(__name__)


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


# --- pure: when, and how far ------------------------------------------------------------------


def interval_of(prune_every: Duration) -> datetime.timedelta | None:
    """The least time between two attempts; ``None`` (``0s``) for never."""
    return None if prune_every.nanoseconds == 0 else prune_every.to_timedelta()


def due_at(
    *, pending: bool, last_attempt: datetime.datetime | None, every: datetime.timedelta | None
) -> datetime.datetime | None:
    """When the next attempt may run: ``None`` while there is nothing to prune (no snapshot
    since the last prune) or pruning is off."""
    if every is None or not pending:
        return None
    if last_attempt is None:
        return datetime.datetime.min.replace(tzinfo=datetime.UTC)
    return last_attempt + every


def split_in_progress(shard: Shard) -> str | None:
    """Why a split involves ``shard`` now, or ``None``."""
    spec = shard.spec
    if spec.split is not None:
        return "a split of the shard was asked for (spec.split)"
    if spec.split_targets:
        return f"the shard is being split into {', '.join(spec.split_targets)}"
    if spec.split_source is not None:
        return f"a split of {spec.split_source} is still building this shard"
    split = shard.status.split
    if split is not None and split.step not in SPLIT_ENDED:
        return f"the shard's split is at step {split.step}"
    return None


@dataclasses.dataclass(frozen=True)
class StandbyFloor:
    """The lowest recovery-log position the shard's other replicas report (``None``: there
    are none), or why it cannot be known (``unknown``)."""

    position: int | None = None
    unknown: str | None = None


def standby_floor(shard: Shard, pod: str, hot_standbys: int) -> StandbyFloor:
    """How far back the replicas other than ``pod`` (the primary) still read the log.

    The StatefulSet's pods (``<shard>-<ordinal>``, ordinals up to ``hot_standbys``) must
    each have reported; an entry of a pod past them was left behind by a scale-down and is
    not waited for. Entries of other pods (a replica run by hand) count as they are."""
    name = shard.metadata.name or ""
    entries = {entry.pod: entry for entry in shard.status.replicas if entry.pod != pod}
    if pod_ordinal(name, pod) is not None:
        for ordinal in range(1 + hot_standbys):
            peer = pod_name(name, ordinal)
            if peer != pod and peer not in entries:
                return StandbyFloor(unknown=f"replica {peer} has not reported its position")
    positions = []
    for entry in entries.values():
        number = pod_ordinal(name, entry.pod)
        if number is not None and number > hot_standbys:
            continue
        if entry.state is ReplicaState.BACKFILL:
            # it may be reading a snapshot that a prune would delete
            return StandbyFloor(unknown=f"replica {entry.pod} is restoring (BACKFILL)")
        if entry.recovery_log_head is None:
            return StandbyFloor(unknown=f"replica {entry.pod} has not reported its position")
        positions.append(entry.recovery_log_head)
    return StandbyFloor(position=min(positions) if positions else None)


def record_of(plan: PrunePlan, at: datetime.datetime) -> RecoveryLogPrune:
    """The status record of a prune that ran."""
    return RecoveryLogPrune(
        at=at,
        kept_from=plan.keep_from,
        log_bytes=plan.kept_bytes,
        removed_bytes=plan.removed_bytes,
        removed_objects=len(plan.keys),
    )


class Pruning(Protocol):
    """:func:`shardkeeper.storage.prune.prune`'s shape, as the pruner calls it."""

    def __call__(
        self, log: RecoveryLog, *, now: datetime.datetime, retain_from: int | None
    ) -> PrunePlan: ...


def _prune(log: RecoveryLog, *, now: datetime.datetime, retain_from: int | None) -> PrunePlan:
    return prune(log, now=now, retain_from=retain_from)


# --- the background thread --------------------------------------------------------------------


class AutoPruner:
    """Prunes ``log`` after snapshots (:meth:`snapshot_taken`), from a thread of its own."""

    def __init__(
        self,
        log: RecoveryLog,
        *,
        pod: str,
        every: datetime.timedelta | None,
        hot_standbys: int,
        read_shard: Callable[[], Shard | None],
        observe: Callable[[PrunePlan | None], None],
        changed: Callable[[], None],
        last: RecoveryLogPrune | None = None,
        clock: Callable[[], datetime.datetime] = utc_now,
        pruning: Pruning = _prune,
    ) -> None:
        self.log = log
        self.pod = pod
        self.every = every
        self.hot_standbys = hot_standbys
        self._read_shard = read_shard
        self._observe = observe
        self._changed = changed
        self._clock = clock
        self._pruning = pruning
        self._lock = threading.Lock()
        self._last = last
        # the last prune (by this primary or the one before, from the status) counts as the
        # last attempt, so a failover does not prune again at once
        self._last_attempt = last.at if last is not None else None
        self._pending = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def last(self) -> RecoveryLogPrune | None:
        """The last prune that ran, for the status."""
        with self._lock:
            return self._last

    def snapshot_taken(self, manifest: Manifest) -> None:
        """From the store's snapshot thread: a snapshot landed, so there may be log to prune."""
        with self._lock:
            self._pending = True
        self._wake.set()

    def due(self) -> datetime.datetime | None:
        with self._lock:
            return due_at(pending=self._pending, last_attempt=self._last_attempt, every=self.every)

    def start(self) -> None:
        if self.every is None:
            return
        self._thread = threading.Thread(target=self._run, name="prune", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop; a prune under way gets ``timeout`` seconds to end (cutting one short leaves
        only older objects for the next prune: nothing it keeps is touched first)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            due = self.due()
            wait = None if due is None else (due - self._clock()).total_seconds()
            if wait is None or wait > 0:
                self._wake.wait(wait)
                self._wake.clear()
                continue
            self.attempt()

    def attempt(self) -> PrunePlan | None:
        """Prune now if nothing holds it back; the plan that ran, or ``None``."""
        now = self._clock()
        with self._lock:
            self._last_attempt = now
        try:
            shard = self._read_shard()
        except Exception as exc:
            log.warning("could not read the Shard: %s", exc)
            shard = None
        if shard is None:
            log.info("not pruning the recovery log now: the Shard could not be read")
            return None
        held = split_in_progress(shard)
        floor = standby_floor(shard, self.pod, self.hot_standbys)
        held = held or floor.unknown
        if held is not None:
            log.info("not pruning the recovery log now: %s; looking again in %s", held, self.every)
            return None
        with self._lock:
            # a snapshot landing from here on asks for the next prune
            self._pending = False
        try:
            plan = self._pruning(self.log, now=now, retain_from=floor.position)
        except Exception as exc:
            with self._lock:
                self._pending = True
            self._observe(None)
            log.warning(
                "pruning the recovery log failed; trying again in %s: %s",
                self.every,
                exc,
                exc_info=exc,
            )
            return None
        record = record_of(plan, self._clock())
        with self._lock:
            self._last = record
        self._observe(plan)
        self._changed()
        log.info(
            "pruned the recovery log",
            extra={
                "kept_from": plan.keep_from,
                "log_bytes": plan.kept_bytes,
                "removed_bytes": plan.removed_bytes,
                "removed_objects": len(plan.keys),
                "retain_from": floor.position,
            },
        )
        return plan
