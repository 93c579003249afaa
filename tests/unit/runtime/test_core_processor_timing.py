"""The transaction loop on a manual timer: minTxnDuration, maxTxnDuration, WAKE and stop,
with a fake store and handler and no real sleeping.

The processor runs in its own thread; the test moves the clock only once the processor is
blocked waiting on it (``Clock.blocked``), and waits for commits on events with timeouts.
"""

from __future__ import annotations

import threading
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from tests.support.clock import Clock
from tests.support.wait import wait_for

from shardkeeper.api.shard import Shard
from shardkeeper.api.task import Task
from shardkeeper.runtime.core.errors import CommitWithheld
from shardkeeper.runtime.core.messages import WAKE, SourceDocument
from shardkeeper.runtime.core.metrics import RuntimeMetrics
from shardkeeper.runtime.core.outputs import OutputBuffer
from shardkeeper.runtime.core.processor import (
    Processor,
    ProcessorOptions,
    ShardContext,
    TransactionSummary,
)
from shardkeeper.runtime.core.timer import MONOTONIC, StopSignal
from shardkeeper.storage.store import Role

SECONDS = 10.0  # real seconds any one step may take before the test fails


class FakeTxn:
    def execute(self, *args: Any) -> None:
        return None

    def executemany(self, *args: Any) -> None:
        return None

    runtime_execute = execute
    runtime_executemany = executemany


class FakeStore:
    role = Role.PRIMARY
    epoch = 1
    last_commit = None

    def __init__(self) -> None:
        self.fail: BaseException | None = None
        self.hold = threading.Event()  # commits wait for it while it is cleared
        self.hold.set()
        self.committing = threading.Event()  # set once a commit began
        self.committed = 0  # commits begun
        self.rolled_back = 0

    def guard_statements(self, over: Any) -> None:
        return None

    def begin(self) -> FakeTxn:
        return FakeTxn()

    def rollback(self) -> None:
        self.rolled_back += 1

    def commit(self) -> Any:
        self.committed += 1
        self.committing.set()
        assert self.hold.wait(SECONDS)
        if self.fail is not None:
            raise self.fail
        return types.SimpleNamespace(begin=0, end=1, seq=1)


class TickingHandler:
    """Applies a document in ``tick`` seconds of the clock."""

    def __init__(self, clock: Clock, tick: float) -> None:
        self.clock, self.tick = clock, tick
        self.applied = 0

    def apply(self, txn: Any, message: Any, outputs: Any) -> int:
        self.applied += 1
        if self.tick:
            self.clock.advance(self.tick)
        return 1

    def before_commit(self, checkpoint: Any) -> int:
        return 0

    def discard(self) -> None:
        return None

    def close(self) -> None:
        return None


class TimedProcessor(Processor):
    """The real loop and committer; the start skips the store's saved state and the feed."""

    handler: TickingHandler

    def _start(self) -> None:
        self._outputs = OutputBuffer({}, {})
        self._handler = self.handler  # type: ignore[assignment]
        self._checkpoint = {}


class Shard_:
    def __init__(
        self,
        shards: dict[str, Any],
        *,
        tick: float = 0.0,
        may_commit: Callable[[], bool] | None = None,
    ) -> None:
        self.clock = Clock()
        self.store = FakeStore()
        self.commits: list[TransactionSummary] = []
        self.committed = threading.Condition()
        task = Task.model_validate(
            {
                "metadata": {"name": "t", "namespace": "n"},
                "spec": {
                    "type": "derivation",
                    "storageMapping": "s",
                    "sources": ["a"],
                    "outputs": ["b"],
                    "derive": {"python": {"module": "m:f"}},
                    "shards": shards,
                },
            }
        )
        shard = Shard.model_validate(
            {
                "metadata": {"name": "t-0", "namespace": "n"},
                "spec": {
                    "task": "t",
                    "keyBegin": 0,
                    "keyEnd": 0xFFFFFFFF,
                    "rClockBegin": 0,
                    "rClockEnd": 0xFFFFFFFF,
                    "recoveryLog": "log",
                },
            }
        )
        ctx = ShardContext("n", task, shard, {}, None, "", str, "127.0.0.1")  # type: ignore[arg-type]
        options = ProcessorOptions(
            timer=self.clock, on_commit=self._committed, may_commit=may_commit
        )
        self.processor = TimedProcessor(
            ctx,
            self.store,  # type: ignore[arg-type]
            RuntimeMetrics(CollectorRegistry(), "t-0"),
            options,
        )
        self.processor.handler = TickingHandler(self.clock, tick)
        self.stop = StopSignal()
        self.error: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.offset = 0

    def _run(self) -> None:
        try:
            self.processor.run(self.stop)
        except BaseException as exc:
            self.error.append(exc)

    def _committed(self, summary: TransactionSummary) -> None:
        with self.committed:
            self.commits.append(summary)
            self.committed.notify_all()

    def start(self) -> Shard_:
        self.thread.start()
        return self

    def send(self, count: int = 1) -> None:
        for _ in range(count):
            begin, self.offset = self.offset, self.offset + 10
            self.processor.channel.put(SourceDocument("a", "j", begin, self.offset, 0, {}))

    def wait_commits(self, count: int) -> list[TransactionSummary]:
        with self.committed:
            assert self.committed.wait_for(lambda: len(self.commits) >= count, SECONDS)
            return list(self.commits)

    def blocked(self, timeout: float | None) -> None:
        """Until the processor waits for ``timeout`` seconds of its clock."""
        self.clock.blocked(timeout, real=SECONDS)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(SECONDS)
        assert not self.thread.is_alive()
        assert not self.error, self.error


@pytest.fixture
def shards() -> Iterator[list[Shard_]]:
    started: list[Shard_] = []
    yield started
    for shard in started:
        if shard.thread.is_alive():
            shard.stop.set()
            shard.thread.join(SECONDS)


def run(
    started: list[Shard_],
    shards: dict[str, Any],
    *,
    tick: float = 0.0,
    may_commit: Callable[[], bool] | None = None,
) -> Shard_:
    shard = Shard_(shards, tick=tick, may_commit=may_commit).start()
    started.append(shard)
    return shard


def test_an_idle_processor_waits_without_a_deadline(shards: list[Shard_]) -> None:
    shard = run(shards, {"minTxnDuration": "1s", "maxTxnDuration": "5s"})
    shard.blocked(None)
    shard.finish()
    assert shard.commits == []


def test_a_transaction_commits_exactly_when_min_duration_has_passed(
    shards: list[Shard_],
) -> None:
    shard = run(shards, {"minTxnDuration": "1s", "maxTxnDuration": "5s"})
    shard.send()
    # the first document opens the transaction; it waits for more until minTxnDuration
    shard.blocked(1.0)
    shard.clock.advance(0.5)
    shard.blocked(0.5)
    shard.send()  # a late document joins the open transaction
    shard.blocked(0.5)
    shard.clock.advance(0.499)
    shard.blocked(0.001)
    assert shard.commits == []
    shard.clock.advance(0.001)
    [commit] = shard.wait_commits(1)
    assert commit.documents == 2
    assert commit.reading_seconds == 1.0
    # back to waiting for the next first message, with no deadline
    shard.blocked(None)
    shard.finish()


def test_a_wake_does_not_end_a_transaction_early(shards: list[Shard_]) -> None:
    shard = run(shards, {"minTxnDuration": "1s", "maxTxnDuration": "5s"})
    shard.send()
    shard.blocked(1.0)
    shard.processor.channel.put(WAKE)
    shard.blocked(1.0)
    assert shard.commits == []
    shard.clock.advance(1.0)
    assert [c.documents for c in shard.wait_commits(1)] == [1]
    shard.finish()


def test_max_duration_stops_reading_while_documents_keep_coming(shards: list[Shard_]) -> None:
    # each document takes 1/8 s of the clock, and all are ready from the start: only
    # maxTxnDuration ends the first transactions, after 8 documents each
    shard = run(shards, {"minTxnDuration": "1s", "maxTxnDuration": "1s"}, tick=0.125)
    shard.send(20)
    commits = shard.wait_commits(2)
    assert [c.documents for c in commits[:2]] == [8, 8]
    assert [c.reading_seconds for c in commits[:2]] == [1.0, 1.0]
    # the last 4 leave the transaction waiting for more until minTxnDuration
    shard.blocked(0.5)
    shard.clock.advance(0.5)
    assert [c.documents for c in shard.wait_commits(3)] == [8, 8, 4]
    shard.finish()


def test_a_zero_min_duration_commits_once_nothing_is_ready(shards: list[Shard_]) -> None:
    shard = run(shards, {"minTxnDuration": "0s", "maxTxnDuration": "5s"})
    shard.send()
    [commit] = shard.wait_commits(1)
    assert commit.documents == 1
    assert commit.reading_seconds == 0.0
    shard.finish()


def test_stop_wakes_a_transaction_waiting_for_min_duration(shards: list[Shard_]) -> None:
    shard = run(shards, {"minTxnDuration": "60s", "maxTxnDuration": "120s"})
    shard.send(3)
    shard.blocked(60.0)
    shard.finish()  # no clock move: only the stop request's WAKE ends the wait
    assert [c.documents for c in shard.commits] == [3]
    assert shard.commits[0].reading_seconds == 0.0


def test_a_failed_commit_wakes_the_idle_loop(shards: list[Shard_]) -> None:
    shard = run(shards, {"minTxnDuration": "0s", "maxTxnDuration": "5s"})
    shard.store.fail = RuntimeError("the disk is gone")
    shard.store.hold.clear()
    shard.send()
    # the transaction is with the committer (the loop's wait for its first message is
    # over), and the loop waits for the next one with no deadline (the previous is not
    # done): only the committer's WAKE can make it look at the failure
    assert shard.store.committing.wait(SECONDS)
    shard.blocked(None)
    shard.store.hold.set()
    shard.thread.join(SECONDS)
    assert not shard.thread.is_alive(), "the loop did not see the failed commit"
    assert [str(e) for e in shard.error] == ["the disk is gone"]


def test_the_processor_wants_a_stop_signal(shards: list[Shard_]) -> None:
    shard = Shard_({})
    with pytest.raises(TypeError, match="StopSignal"):
        shard.processor.run(threading.Event())  # type: ignore[arg-type]


def test_a_stop_signal_calls_its_listeners_once_set() -> None:
    stop, called = StopSignal(), []
    forget = stop.listen(lambda: called.append(1))
    stop.set()
    assert called == [1]
    forget()
    stop.set()
    assert called == [1]
    stop.listen(lambda: called.append(2))  # already set: called at once
    assert called == [1, 2]


def test_the_real_timer_takes_a_ready_message_without_waiting() -> None:
    channel = Shard_({}).processor.channel
    assert MONOTONIC.wait(channel, 0) is None
    channel.put(WAKE)
    assert MONOTONIC.wait(channel, 0) is WAKE
    channel.put(WAKE)
    assert MONOTONIC.wait(channel, None) is WAKE


def test_no_commit_starts_once_the_shell_withdraws_the_right_to_commit(
    shards: list[Shard_],
) -> None:
    """Past the Lease's renew deadline (runtime/shell/lease.py) the open transaction is
    rolled back instead of committed, even the one a stop closes."""
    allowed = threading.Event()
    allowed.set()
    shard = run(shards, {"maxTxnDuration": "5s"}, may_commit=allowed.is_set)
    shard.send()
    shard.wait_commits(1)
    allowed.clear()
    shard.send()
    # the document is in an open transaction before the stop (else nothing is rolled back)
    handler = shard.processor.handler
    wait_for(lambda: handler.applied >= 2, timeout=SECONDS, what="the second document applied")
    shard.stop.set()
    shard.thread.join(SECONDS)
    assert not shard.thread.is_alive()
    assert [type(e) for e in shard.error] == [CommitWithheld]
    assert (shard.store.committed, shard.store.rolled_back) == (1, 1)
    assert len(shard.commits) == 1
