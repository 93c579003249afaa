"""The role state machine of one shard replica.

::

    IDLE ──start-up──▶ BACKFILL ──restored──▶ STANDBY ──won the Lease──▶ PRIMARY
      ▲    (read the     (ShardStore.open)     (catch_up loop)    (fence, then process)
      │     resources)
      └──────── FAILED (message says what to fix; retried with back-off) ◀── any step

- **IDLE**: read the Shard, Task, Collections, StorageMapping and Secret
  (:mod:`.startup`). A missing or invalid one is FAILED with its message, retried.
- **BACKFILL**: restore the volume from the recovery log (snapshot, then the log tail; a
  volume that matches the log replays only the tail).
- **STANDBY**: apply the log's new records as they land, and stand for the Lease.
- **PRIMARY**: having won the Lease, fence the recovery log with an epoch above every
  epoch in it (so a paused old primary can never commit again), claiming the shard's
  ranges, then run the processor until told to stop. Meanwhile it prunes its recovery log
  after its snapshots (:mod:`.autoprune`), and wakes the idle readers of the journals it
  writes, its standbys among them (``runtime/core/hints.py``). The Lease is checked again right
  before the fence and before the processor starts: a replica paused after winning it
  may wake up after another one took over. (If it wakes up between the check and the
  fence, the fence fails: an epoch is never shared, see ``storage/journal.py``.)

Splits (docs/splits.md):

- A primary whose Shard narrows (the operator's hand-off) ends its transaction, fences
  its log again claiming the narrower ranges, and goes on with them.
- A shard that a split builds (``splitSource``) and that has not forked yet follows its
  parent's log instead of its own, and stops right before the fence that hands its range
  off. The replica that holds the Lease then forks into the shard's own log and becomes
  PRIMARY; the others start over on the shard's own log.

How a primary ends:

- SIGTERM: the processor finishes its transaction, the store closes, the status hands the
  primary fields over, the Lease is released (so a standby takes over at once): exit 0.
- The Lease is lost (not renewed for a whole duration, or taken): stop at once, report,
  exit 1, so the pod restarts as a standby.
- The log was fenced by a newer primary (this one was a zombie): its commit failed;
  report, exit 1.
- The task failed (:class:`ProcessingFailed`, e.g. a document the derivation cannot
  process): FAILED with the journal and offset, holding the Lease so no other replica
  goes past it either, until the Task changes.
- Anything else (storage unreachable, a bug): FAILED, release the Lease, back off, and
  start over from IDLE in this process.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from shardkeeper.api.meta import Duration
from shardkeeper.api.shard import Checkpoint, CommitPoint, ReplicaState, ReplicaStatus, Shard
from shardkeeper.api.task import DEFAULT_PRUNE_EVERY
from shardkeeper.redact import redact
from shardkeeper.runtime.core.errors import CommitWithheld
from shardkeeper.runtime.core.faults import NO_RUNTIME_FAULTS, RuntimeFaultPoint, RuntimeFaults
from shardkeeper.runtime.core.hints import HINT_FROM, HintService, HintWatcher
from shardkeeper.runtime.core.routing import Ranges
from shardkeeper.runtime.core.timer import StopSignal
from shardkeeper.runtime.shell.autoprune import AutoPruner, interval_of
from shardkeeper.runtime.shell.handoff import hand_off_fence
from shardkeeper.runtime.shell.lease import LeaseKeeper
from shardkeeper.runtime.shell.logs import LogContext
from shardkeeper.runtime.shell.reporting import PrimaryStatus, StatusReporter, clip_message
from shardkeeper.runtime.shell.startup import ShardResources, StartupError
from shardkeeper.runtime.shell.storagemap import store_prefix
from shardkeeper.storage import errors
from shardkeeper.storage.layout import collection_journal, object_key
from shardkeeper.storage.prune import PrunePlan
from shardkeeper.storage.recoverylog import RecoveryLog
from shardkeeper.storage.retry import PollBackoff, PollPolicy
from shardkeeper.storage.store import Role, ShardStore

log = logging.getLogger(__name__)

# back-off between attempts after a failure: 1s, 2s, 4s ... 15s
FAILURE_BACKOFF = PollPolicy(min_delay=1.0, max_delay=15.0, factor=2.0)
# a standby polls the log this often while it is idle: 50 ms growing to 500 ms, and after
# 10 s without records on up to 30 s (the primary's hint ends a long wait early, see
# runtime/core/hints.py); at once again while records arrive
TAIL_POLL = PollPolicy(
    min_delay=0.05, max_delay=0.5, factor=2.0, idle_after=10.0, idle_max_delay=30.0
)
# a standby whose last successful catch-up is older than this is not ready: its longest
# poll, and some
TAILING_STALE_AFTER = TAIL_POLL.longest + 10.0
# how often a primary refreshes its progress into the status (the reporter rate-limits)
PROGRESS_EVERY = 0.5
# how often a replica that failed its task looks for a change of the Task
TASK_RECHECK_EVERY = 5.0
# how long a stopping primary waits for a prune under way (it is safe to cut short)
PRUNE_STOP_WAIT = 5.0
# how often a primary reads its Shard, to see a split narrow it: often while the Shard
# has split targets (a hand-off is near), seldom otherwise
SPEC_CHECK_SPLITTING = 0.5
SPEC_CHECK_EVERY = 5.0


class LeaseGone(Exception):
    """The Lease ran out (or was taken) during the takeover: stop before the next step."""


class ProcessingFailed(Exception):
    """The task cannot go on (a document or SQL it cannot process); the message names the
    journal and offset. The replica must not continue past it."""


@dataclasses.dataclass(frozen=True)
class ReportedProgress:
    """What the processor reports of its progress, in the terms of the Shard's status."""

    transactions: int = 0
    last_commit: CommitPoint | None = None
    sources: dict[str, int] = dataclasses.field(default_factory=dict)
    lag: int | None = None


class Processing(Protocol):
    def run(self, stop: StopSignal) -> None: ...

    def progress(self) -> ReportedProgress: ...


class Hooks(Protocol):
    """What the replica needs from the outside world; main.py wires the real ones."""

    def load(self) -> ShardResources: ...

    def open_store(self, resources: ShardResources) -> ShardStore: ...

    def processor(
        self, resources: ShardResources, store: ShardStore, may_commit: Callable[[], bool]
    ) -> Processing:
        """The processing core on ``store``; it asks ``may_commit`` before each commit."""

    def lease(self, resources: ShardResources, notify: Callable[[], None]) -> LeaseKeeper: ...

    def task_generation(self, resources: ShardResources) -> int | None: ...

    def current_shard(self, resources: ShardResources) -> Shard: ...

    def observe_state(self, state: ReplicaState) -> None: ...

    def observe_recovery(self, seconds: float) -> None: ...

    def observe_prune(self, plan: PrunePlan | None) -> None:
        """An automatic prune ran (``plan``) or failed (``None``)."""


class Exit(enum.IntEnum):
    CLEAN = 0
    RESTART_AS_STANDBY = 1  # lost the Lease or fenced: the pod restarts, as a standby


class _Standby(enum.Enum):
    WON = "won the Lease"
    STOPPED = "shutting down"
    FAILED = "failed"
    LOST = "lost the Lease"
    FORKED = "the split forked this shard's own log"


# --- pure helpers ----------------------------------------------------------------------------


def next_epoch(store: ShardStore, log: RecoveryLog | None = None) -> int:
    """One above the newest epoch in ``log`` (the store's recovery log by default).

    The newest fragment may be a fence of a primary that never committed, so the epoch of
    the last commit is not enough: list from that commit (a fragment boundary) to the head
    and read the last fragment.
    """
    log = log or store.log
    journal = log.journal
    last = store.last_commit
    start = last.begin if last is not None and last.log == log.name else 0
    newest = journal.last_epoch(journal.list_fragments(start))
    return max(newest, last.epoch if last is not None else 0) + 1


def written_journals(resources: ShardResources, store: ShardStore) -> dict[str, int]:
    """The journals a primary on ``store`` writes (object key prefixes), with the heads
    known now: its recovery log's, and its output collections' (0: not known yet)."""
    prefix = store_prefix(resources.mapping)
    journals = {store.log.journal.prefix: store.position}
    for collection in resources.task.spec.outputs:
        name = collection_journal(resources.namespace, collection, resources.shard_name)
        journals[object_key(prefix, name)] = 0
    return journals


def checkpoint_of(progress: ReportedProgress, log_offset: int | None) -> Checkpoint:
    last = progress.last_commit
    return Checkpoint(
        committed_at=last.time if last else None,
        transactions=progress.transactions,
        recovery_log_offset=(last.offset if last and last.offset is not None else log_offset),
        sources=dict(list(progress.sources.items())[:256]),
    )


def failure_message(exc: BaseException) -> str:
    """A message for the status: our own errors say what to fix; others get their type."""
    if isinstance(exc, StartupError | errors.StorageError | ProcessingFailed):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


# --- the machine ------------------------------------------------------------------------------


@dataclasses.dataclass
class _View:
    state: ReplicaState = ReplicaState.IDLE
    message: str = ""
    epoch: int = 0
    last_commit: CommitPoint | None = None
    recovery_log_head: int | None = None
    lag: int | None = None
    tailed_at: float | None = None


class Replica:
    def __init__(
        self,
        pod: str,
        hooks: Hooks,
        reporter: StatusReporter,
        context: LogContext,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        faults: RuntimeFaults = NO_RUNTIME_FAULTS,
        prune_every: Duration = DEFAULT_PRUNE_EVERY,
        hints: HintService | None = None,
    ) -> None:
        self.pod = pod
        # where this replica, as primary, tells readers of its journals of new data
        self.hints = hints
        self.prune_every = prune_every  # for Tasks that set no spec.shards.pruneEvery
        self.faults = faults
        self.hooks = hooks
        self.reporter = reporter
        self.context = context
        self._monotonic = monotonic
        self._view = _View()
        self._lock = threading.Lock()
        self.shutdown = threading.Event()
        self._wake = threading.Event()
        self._lease: LeaseKeeper | None = None
        self._pruner: AutoPruner | None = None

    # -- what probes and tests see -------------------------------------------------------

    @property
    def state(self) -> ReplicaState:
        with self._lock:
            return self._view.state

    def ready(self) -> tuple[bool, str]:
        with self._lock:
            view = dataclasses.replace(self._view)
        if view.state is ReplicaState.PRIMARY:
            return True, f"PRIMARY, epoch {view.epoch}"
        if view.state is ReplicaState.STANDBY and view.tailed_at is not None:
            age = self._monotonic() - view.tailed_at
            if age < TAILING_STALE_AFTER:
                return True, f"STANDBY, tailing the recovery log at {view.recovery_log_head}"
            return False, f"STANDBY, but the recovery log was last read {age:.0f}s ago"
        return False, f"{view.state.value}{': ' + view.message if view.message else ''}"

    def healthy(self) -> tuple[bool, str]:
        # FAILED is healthy: restarting the pod would not fix a missing Secret, and the
        # contract wants the cause visible in the status instead of a crash loop
        return True, self.state.value

    def request_stop(self) -> None:
        """From a signal handler: finish the current transaction, hand over, exit 0."""
        self.shutdown.set()
        self._wake.set()

    # -- state and reporting -------------------------------------------------------------

    def _enter(self, state: ReplicaState, message: str = "", **fields: object) -> None:
        message = redact(message)  # it goes into the Shard's status, and on into Events
        with self._lock:
            before = self._view.state, self._view.message
            self._view = dataclasses.replace(self._view, state=state, message=message, **fields)  # type: ignore[arg-type]
        if before != (state, message):
            level = logging.ERROR if state is ReplicaState.FAILED else logging.INFO
            log.log(level, "%s%s", state.value, f": {message}" if message else "")
            self.hooks.observe_state(state)
        self._report()

    def _update(self, **fields: object) -> None:
        with self._lock:
            self._view = dataclasses.replace(self._view, **fields)  # type: ignore[arg-type]
        self._report()

    def _report(self) -> None:
        with self._lock:
            view = self._view
        self.reporter.replica(
            ReplicaStatus(
                pod=self.pod,
                state=view.state,
                epoch=view.epoch,
                last_commit=view.last_commit,
                lag=view.lag,
                recovery_log_head=view.recovery_log_head,
                message=clip_message(view.message),
            )
        )

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> int:
        """Run until shut down (0) or until the pod must restart as a standby (1)."""
        self.hooks.observe_state(self.state)
        try:
            code = self._cycle()
            if code is Exit.CLEAN:
                self._enter(ReplicaState.IDLE, "shut down")
            return code
        finally:
            self._finish()

    def _cycle(self) -> Exit:
        """Attempt after attempt, backing off after each one that failed."""
        backoff = PollBackoff(FAILURE_BACKOFF)
        while not self.shutdown.is_set():
            self._enter(ReplicaState.IDLE)
            code = self._attempt()
            if code is not None:
                return code
            if self.state is ReplicaState.FAILED:
                backoff = backoff.after(found=False)
                self.shutdown.wait(backoff.current)
            else:
                backoff = PollBackoff(FAILURE_BACKOFF)
        return Exit.CLEAN

    def _attempt(self) -> Exit | None:
        try:
            resources = self.hooks.load()
        except StartupError as exc:
            self._enter(ReplicaState.FAILED, str(exc))
            return None
        if self._lease is None:
            self._lease = self.hooks.lease(resources, self._wake.set)
            self._lease.start()
        return self._run_store(resources)

    def _finish(self) -> None:
        """Last status, then the Lease: the next primary applies its status after ours."""
        self.reporter.stop()
        self.reporter.flush()
        if self._lease is not None:
            self._lease.release()

    def _run_store(self, resources: ShardResources) -> Exit | None:
        """BACKFILL, STANDBY and PRIMARY on one store. Returns an exit code, or ``None`` to
        go round again (after a failure, which the view then shows)."""
        self._enter(ReplicaState.BACKFILL)
        started = self._monotonic()
        try:
            store = self.hooks.open_store(resources)
        except Exception as exc:
            self._enter(ReplicaState.FAILED, failure_message(exc))
            if not isinstance(exc, errors.StorageError):
                log.error("restore failed", exc_info=exc)
            # a replica that cannot serve must not hold, or take, the Lease meanwhile
            self._give_up_lease()
            return None
        self.hooks.observe_recovery(self._monotonic() - started)
        report = store.restore_report
        log.info(
            "restored from %s (%s): %d commits, %d bytes replayed in %.2fs",
            report.source,
            report.reason,
            report.commits_replayed,
            report.bytes_replayed,
            report.seconds,
        )
        try:
            outcome = self._standby(store, resources)
            if outcome is _Standby.LOST:
                self._enter(ReplicaState.FAILED, "lost the Lease; restarting as a standby")
                return Exit.RESTART_AS_STANDBY
            if outcome is _Standby.FAILED:
                self._give_up_lease()
            if outcome is not _Standby.WON:
                return None
            return self._primary(resources, store)
        finally:
            store.close()

    def _standby(self, store: ShardStore, resources: ShardResources) -> _Standby:
        """Tail the log until this replica wins the Lease, shuts down or fails.

        A shard that a split builds tails its parent's log up to the hand-off; only then
        does winning the Lease count (see the module's docstring)."""
        lease = self._lease
        assert lease is not None
        splitting = store.log.name != resources.recovery_log
        # a restore forks another log too, at a point known from the start
        what = "restoring from" if resources.restore_source_log is not None else "split from"
        ranges = Ranges.of(resources.shard.spec)
        stop_before = hand_off_fence(ranges) if splitting else None
        own = store.log.sibling(resources.recovery_log)
        poll = PollBackoff(TAIL_POLL)
        first = True
        # wakes the loop once the primary's head passes where this standby waits
        ended = threading.Event()
        hints = HintWatcher(store.log.store, store.log.journal.prefix, self._wake.set, ended)
        try:
            while not self.shutdown.is_set():
                if lease.lost.is_set():
                    return _Standby.LOST
                # a shard a split builds may only take over at the hand-off
                ready = not splitting or store.until is not None
                if ready and lease.acquired.is_set() and lease.held():
                    return _Standby.WON
                message = ""
                try:
                    before = store.position
                    applied = store.catch_up(stop_before=stop_before)
                    lag = store.position - before
                    if splitting:
                        end = store.until
                        if end is None:
                            end = store.log.journal.head(store.position)
                            message = f"{what} {store.log.name}: following its log"
                        elif lease.held():
                            message = f"{what} {store.log.name}: forking at {end:#x}"
                        elif own.fork_record() is not None:
                            return _Standby.FORKED
                        else:
                            message = f"{what} {store.log.name}: handed off at {end:#x}"
                        lag = max(0, end - store.position)
                except errors.StorageError as exc:
                    self._enter(ReplicaState.FAILED, failure_message(exc))
                    return _Standby.FAILED
                last = store.last_commit
                self._enter(
                    ReplicaState.STANDBY,
                    message,
                    epoch=last.epoch if last else 0,
                    last_commit=CommitPoint(offset=store.position) if last else None,
                    recovery_log_head=store.position,
                    lag=lag,
                    tailed_at=self._monotonic(),
                )
                if first:
                    # stand for the Lease only once restored and tailing
                    lease.stand()
                    first = False
                poll = poll.after(found=applied > 0)
                if poll.current >= HINT_FROM:
                    hints.watch(store.position)
                self._wake.wait(poll.current)
                self._wake.clear()
            return _Standby.STOPPED
        finally:
            ended.set()

    def _take_over(
        self, resources: ShardResources, store: ShardStore
    ) -> tuple[ShardResources, int]:
        """Fence (or, for a shard a split builds, fork into) the shard's log, claiming its
        ranges; then claim what its Shard says now, which a split may have narrowed since
        it was read. The resources as they now are, and the epoch."""
        self.faults.reached(RuntimeFaultPoint.TAKEOVER_BEGUN)
        ranges = Ranges.of(resources.shard.spec)
        if store.log.name != resources.recovery_log:
            own = store.log.sibling(resources.recovery_log)
            epoch = next_epoch(store, own)
            self._check_lease("before fencing")
            self.faults.reached(RuntimeFaultPoint.FENCE_DUE)
            store.epoch = epoch
            assert store.until is not None
            fence = store.fork_into(own, store.until, ranges.claim())
            log.info("forked from the parent's log", extra={"fence_offset": fence.offset})
        else:
            epoch = next_epoch(store)
            self._check_lease("before fencing")
            self.faults.reached(RuntimeFaultPoint.FENCE_DUE)
            store.epoch = epoch
            fence = store.fence(ranges.claim())
            log.info("fenced the recovery log", extra={"fence_offset": fence.offset})
        return self._claim_current(resources, store, epoch)

    def _check_lease(self, when: str) -> None:
        """Raise :class:`LeaseGone` unless this replica still holds the Lease."""
        lease = self._lease
        if lease is None or not lease.held():
            raise LeaseGone(when)

    def _claim_current(
        self, resources: ShardResources, store: ShardStore, epoch: int, shard: Shard | None = None
    ) -> tuple[ShardResources, int]:
        """Fence again if the Shard's ranges are not the ones the last fence claimed."""
        shard = shard or self.hooks.current_shard(resources)
        claimed, now = Ranges.of(resources.shard.spec), Ranges.of(shard.spec)
        resources = dataclasses.replace(resources, shard=shard)
        if now != claimed:
            self._check_lease("before fencing again")
            epoch += 1
            fence = store.refence(epoch, now.claim())
            log.info(
                "the Shard narrowed: fenced again claiming %s",
                now.claim(),
                extra={"fence_offset": fence.offset},
            )
        return resources, epoch

    def _primary(self, resources: ShardResources, store: ShardStore) -> Exit | None:
        lease = self._lease
        assert lease is not None
        try:
            resources, epoch = self._take_over(resources, store)
        except LeaseGone as exc:
            return self._lease_gone(str(exc))
        except (errors.StorageError, StartupError) as exc:
            # StaleEpoch: someone fenced with a newer epoch since we looked, or with the same
            # one first (epochs are never shared); they are primary
            self._enter(ReplicaState.FAILED, failure_message(exc))
            self._give_up_lease()
            return None
        announced = self._announce(resources, store)
        pruner = self._start_pruner(resources, store)
        try:
            while True:
                if not lease.held():
                    # the fence, and the Shard's reading, took longer than the Lease had left
                    return self._lease_gone("before processing")
                self.context.set_epoch(epoch)
                self._enter(
                    ReplicaState.PRIMARY,
                    epoch=epoch,
                    recovery_log_head=store.position,
                    lag=0,
                    tailed_at=None,
                )
                self.reporter.primary(
                    PrimaryStatus(
                        self.pod, epoch, recovery_log_head=store.position, last_prune=pruner.last
                    )
                )
                processor, error, narrowed = self._process(resources, store, epoch)
                if narrowed is None or error is not None or lease.lost.is_set():
                    return self._after_processing(resources, store, processor, epoch, error)
                try:
                    resources, epoch = self._claim_current(resources, store, epoch, narrowed)
                except LeaseGone as exc:
                    return self._lease_gone(str(exc))
                except errors.StorageError as exc:
                    return self._after_processing(resources, store, processor, epoch, exc)
        finally:
            if self.hints is not None:
                self.hints.withdraw(announced)
            store.on_snapshot = None
            pruner.stop(timeout=PRUNE_STOP_WAIT)
            self._pruner = None

    def _announce(self, resources: ShardResources, store: ShardStore) -> list[str]:
        """Tell readers of the journals this primary writes where to ask for hints."""
        if self.hints is None:
            return []
        journals = written_journals(resources, store)
        self.hints.announce(store.log.store, journals)
        return list(journals)

    def _start_pruner(self, resources: ShardResources, store: ShardStore) -> AutoPruner:
        """The pruner of this primary's log, told of each snapshot the store takes; it starts
        from the last prune the status records (of this primary's predecessor, perhaps)."""
        template = resources.task.spec.shards
        pruner = AutoPruner(
            store.log,
            pod=self.pod,
            every=interval_of(
                self.prune_every if template.prune_every is None else template.prune_every
            ),
            hot_standbys=template.hot_standbys,
            read_shard=lambda: self._read_shard(resources),
            observe=self.hooks.observe_prune,
            changed=self._wake.set,
            last=resources.shard.status.last_prune,
        )
        self._pruner = pruner
        store.on_snapshot = pruner.snapshot_taken
        pruner.start()
        return pruner

    def _lease_gone(self, when: str) -> Exit:
        self._enter(
            ReplicaState.FAILED,
            f"lost the Lease {when} (a pause or slow requests outlasted it): stopped; "
            "restarting as a standby",
        )
        return Exit.RESTART_AS_STANDBY

    def _process(
        self, resources: ShardResources, store: ShardStore, epoch: int
    ) -> tuple[Processing, BaseException | None, Shard | None]:
        """Run the processor until it ends, or until the Shard's ranges narrow (then it
        ends its transaction and returns): the processor, its error, the narrowed Shard."""
        lease = self._lease
        assert lease is not None
        # no commit starts past the Lease's renew deadline (runtime/shell/lease.py)
        processor = self.hooks.processor(resources, store, lease.held)
        stop = StopSignal()
        outcome: list[BaseException | None] = []

        def run() -> None:
            try:
                processor.run(stop)
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)
            finally:
                self._wake.set()

        thread = threading.Thread(target=run, name="processor", daemon=True)
        thread.start()
        narrowed: Shard | None = None
        near = bool(resources.shard.spec.split_targets)  # a hand-off may come soon
        checked = self._monotonic()
        while not outcome:
            self._wake.wait(PROGRESS_EVERY)
            self._wake.clear()
            self._report_progress(processor, store, epoch)
            if self.shutdown.is_set():
                stop.set()  # the processor finishes its transaction, then returns
            if lease.lost.is_set():
                stop.set()
                break
            every = SPEC_CHECK_SPLITTING if near else SPEC_CHECK_EVERY
            if narrowed is None and self._monotonic() - checked >= every:
                checked = self._monotonic()
                shard = self._read_shard(resources)
                if shard is not None:
                    near = bool(shard.spec.split_targets)
                    if Ranges.of(shard.spec) != Ranges.of(resources.shard.spec):
                        log.info("the Shard narrowed: ending the transaction to hand off")
                        narrowed = shard
                        stop.set()
        if lease.lost.is_set():
            # stop at once: whatever the processor does now, the fence keeps it from
            # committing once the next primary has taken over
            thread.join(timeout=min(5.0, lease.duration))
        return processor, (outcome[0] if outcome else None), narrowed

    def _read_shard(self, resources: ShardResources) -> Shard | None:
        try:
            return self.hooks.current_shard(resources)
        except StartupError as exc:
            # the next look may succeed; until then the last fence's claim holds
            log.warning("could not read the Shard: %s", exc)
            return None

    def _after_processing(
        self,
        resources: ShardResources,
        store: ShardStore,
        processor: Processing,
        epoch: int,
        error: BaseException | None,
    ) -> Exit | None:
        lease = self._lease
        assert lease is not None
        if isinstance(error, errors.Fenced) or store.role is Role.FENCED:
            self._enter(
                ReplicaState.FAILED,
                f"fenced: a newer primary took the recovery log over ({error}); this "
                "replica's last commit did not count; restarting as a standby",
            )
            return Exit.RESTART_AS_STANDBY
        if lease.lost.is_set() or isinstance(error, CommitWithheld):
            self._enter(
                ReplicaState.FAILED,
                "lost the Lease (could not renew it in time, or another replica took it): "
                "stopped processing; restarting as a standby",
            )
            return Exit.RESTART_AS_STANDBY
        self._report_progress(processor, store, epoch)
        if error is None:
            # clean shutdown: give the primary fields up, so the next primary's are the
            # only ones; the Lease is released after the status is out (see _finish)
            final = self._primary_status(processor, store, epoch)
            self.reporter.primary(dataclasses.replace(final, pod=None))
            return Exit.CLEAN
        if isinstance(error, ProcessingFailed):
            self._enter(ReplicaState.FAILED, str(error))
            return self._hold_after_task_failure(resources)
        self._enter(ReplicaState.FAILED, failure_message(error))
        if not isinstance(error, errors.StorageError):
            log.error("processing failed", exc_info=error)
        # another replica may do better (a store problem local to this pod): let it try
        self._give_up_lease()
        return None

    def _give_up_lease(self) -> None:
        """Hand the Lease to another replica; stand for it again once tailing."""
        if self._lease is not None:
            self._lease.release()
            self._lease = None

    def _primary_status(
        self, processor: Processing, store: ShardStore, epoch: int
    ) -> PrimaryStatus:
        progress = processor.progress()
        return PrimaryStatus(
            pod=self.pod,
            epoch=epoch,
            checkpoint=checkpoint_of(progress, store.position),
            recovery_log_head=store.position,
            lag=progress.lag,
            last_prune=self._pruner.last if self._pruner is not None else None,
        )

    def _report_progress(self, processor: Processing, store: ShardStore, epoch: int) -> None:
        lease = self._lease
        # a replica that may have lost the Lease must not overwrite the next primary's fields
        if lease is None or not lease.held():
            return
        try:
            status = self._primary_status(processor, store, epoch)
        except Exception as exc:
            log.warning("could not read the processor's progress: %s", exc)
            return
        self.reporter.primary(status)
        assert status.checkpoint is not None
        last = CommitPoint(
            time=status.checkpoint.committed_at, offset=status.checkpoint.recovery_log_offset
        )
        self._update(last_commit=last, recovery_log_head=store.position)

    def _hold_after_task_failure(self, resources: ShardResources) -> Exit | None:
        """Keep the Lease (no replica may go past the failure) until the Task changes."""
        lease = self._lease
        assert lease is not None
        seen = self.hooks.task_generation(resources)
        while not self.shutdown.wait(TASK_RECHECK_EVERY):
            if lease.lost.is_set():
                return Exit.RESTART_AS_STANDBY
            try:
                generation = self.hooks.task_generation(resources)
            except Exception as exc:
                log.warning("could not read the Task: %s", exc)
                continue
            if generation != seen:
                log.info("the Task changed (generation %s): starting over", generation)
                return None
        return Exit.CLEAN
