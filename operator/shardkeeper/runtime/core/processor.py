"""The processing core of a shard: transactions from source documents to committed state
and exactly-once outputs.

One **transaction loop** thread takes messages from the read channel (see
:mod:`.transactions` for when a transaction stops reading), applies them in an open store
transaction and writes the checkpoint and the framed outputs into it. A **committer**
thread then commits the store (the record lands in the recovery log), appends the outputs
at their recorded offsets and acknowledges (captured documents). Meanwhile the next
transaction begins: its clock starts at its first message, it applies messages as soon as
the previous record is in the recovery log, and it commits only once the previous
transaction's outputs are appended, so commits never overlap and outputs go out in order.
The feed threads keep reading ahead into the channel (``readChannelSize`` messages) all
along, and a **compressor** thread compresses each output payload for the store while it
is being written. A transaction holds at most ``ringBufferSize`` documents: what it must
keep in memory until it commits (framed outputs, captured requests, upserts) stays bounded.

On start, on a store that is already primary, the processor appends again whatever
batches the last commit left pending (see :mod:`.outputs`), then runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import orjson

from shardkeeper.api.collection import Collection
from shardkeeper.api.meta import SecretKeyRef
from shardkeeper.api.shard import Shard
from shardkeeper.api.task import Task, TaskType
from shardkeeper.runtime.core import checkpoint, idempotency
from shardkeeper.runtime.core.checkpoint import CommitRows, SourceOffset
from shardkeeper.runtime.core.documents import orjson_parses
from shardkeeper.runtime.core.errors import (
    CommitWithheld,
    DocumentRejected,
    TaskFailed,
    TaskMisconfigured,
)
from shardkeeper.runtime.core.faults import NO_RUNTIME_FAULTS, RuntimeFaultPoint, RuntimeFaults
from shardkeeper.runtime.core.handler import Feed, TaskHandler
from shardkeeper.runtime.core.messages import (
    WAKE,
    CapturedDocuments,
    Message,
    ReadChannel,
    ReadFailure,
    SourceAdvance,
    SourceDocument,
    SourceLines,
)
from shardkeeper.runtime.core.metrics import RuntimeMetrics
from shardkeeper.runtime.core.outputs import (
    OutputBatch,
    OutputBuffer,
    OutputJournals,
    append_batch,
)
from shardkeeper.runtime.core.routing import KeyExtractor, Ranges
from shardkeeper.runtime.core.schemas import DocumentSchema
from shardkeeper.runtime.core.sources import LineRouter, ReaderOptions, SourceReader
from shardkeeper.runtime.core.timer import MONOTONIC, StopSignal, Timer
from shardkeeper.runtime.core.transactions import TxnTiming
from shardkeeper.runtime.kinds.capture import (
    CaptureHandler,
    CaptureServer,
    IngestSettings,
    IngestTarget,
)
from shardkeeper.runtime.kinds.derivation import DerivationHandler, Deriver
from shardkeeper.runtime.kinds.derive_python import PythonDeriver
from shardkeeper.runtime.kinds.derive_sql import SqlDeriver
from shardkeeper.runtime.kinds.materialize_postgres import (
    PostgresMaterializer,
    Timeouts,
    connection_string,
    table_binding,
)
from shardkeeper.storage import errors
from shardkeeper.storage.journal import Journal
from shardkeeper.storage.layout import COLLECTIONS_DIR, collection_journal, writer_pattern
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper.storage.store import Role, ShardStore, Transaction

log = logging.getLogger(__name__)

__all__ = [
    "LastCommit",
    "Processor",
    "ProcessorOptions",
    "Progress",
    "ShardContext",
    "StopSignal",
    "TaskFailed",
    "TransactionSummary",
]


@dataclasses.dataclass(frozen=True)
class ShardContext:
    """Everything a shard's processor needs, resolved by the shell."""

    namespace: str
    task: Task
    shard: Shard
    collections: Mapping[str, Collection]  # every source and output collection, by name
    objects: ObjectStore  # the StorageMapping's first store
    prefix: str  # that store's prefix
    resolve_secret: Callable[[SecretKeyRef], str]  # the Task's secret references
    bind_host: str  # where a capture's ingest endpoint listens

    @property
    def shard_name(self) -> str:
        name = self.shard.metadata.name
        if not name:
            raise ValueError("the Shard has no metadata.name")
        return name

    def collection(self, name: str) -> Collection:
        try:
            return self.collections[name]
        except KeyError:
            raise TaskMisconfigured(
                f"collection {name!r} of task {self.task.metadata.name!r} was not found"
            ) from None

    def schema(self, name: str) -> DocumentSchema:
        return DocumentSchema(self.collection(name).spec.document_schema, name=name)

    def key(self, name: str) -> KeyExtractor:
        return KeyExtractor.of(self.collection(name).spec.key)

    def route_key(self, source: str) -> KeyExtractor:
        """What routes a source's documents to shards: the derivation's shuffle of that
        source, or else the collection's key."""
        derive = self.task.spec.derive
        shuffle = derive.shuffle.get(source) if derive is not None else None
        return KeyExtractor.of(shuffle) if shuffle else self.key(source)


@dataclasses.dataclass(frozen=True)
class TransactionSummary:
    """The last committed transaction, as it ran."""

    transaction: int  # its number, counted since the shard was created
    documents: int
    outputs: int
    started: float  # the clock (ProcessorOptions.timer) at its first message
    reading_seconds: float  # first message to the close of reading
    total_seconds: float  # first message to outputs appended


DOCUMENT_TIME_LIMIT = 60.0


@dataclasses.dataclass(frozen=True)
class ProcessorOptions:
    reader: ReaderOptions = dataclasses.field(default_factory=ReaderOptions)
    faults: RuntimeFaults = NO_RUNTIME_FAULTS
    # the clock of transaction durations and how the loop waits for a message until the
    # next deadline (see .timer); tests pass one they move by hand
    timer: Timer = MONOTONIC
    # called by the committer after each transaction is entirely done (tests, benchmarks)
    on_commit: Callable[[TransactionSummary], None] | None = None
    # seconds one document may keep a store statement running (a lambda that never ends,
    # such as an endless recursive CTE) before the statement is interrupted and the shard
    # fails at that document
    document_time_limit: float = DOCUMENT_TIME_LIMIT
    # asked before each commit (to the endpoint, then the store): False rolls the
    # transaction back and ends the run with CommitWithheld. The shell says whether it
    # still holds its Lease (see runtime/shell/lease.py, the renew deadline)
    may_commit: Callable[[], bool] | None = None


@dataclasses.dataclass(frozen=True)
class LastCommit:
    time: datetime
    offset: int  # recovery-log offset just past the commit's record


@dataclasses.dataclass(frozen=True)
class Progress:
    recovered: bool  # pending outputs re-appended and the feed started
    transactions: int  # committed since the shard was created
    last_commit: LastCommit | None
    checkpoint: Mapping[str, int]  # source journal -> offset processed up to
    lag_bytes: int
    last_transaction: TransactionSummary | None


@dataclasses.dataclass
class _Open:
    """The transaction the loop is building."""

    started: float
    documents: int = 0
    sources: dict[str, SourceOffset] = dataclasses.field(default_factory=dict)
    captured: list[CapturedDocuments] = dataclasses.field(default_factory=list)
    txn: Transaction | None = None


class _Lines:
    """The batch of lines the loop is working through, and how far it got."""

    __slots__ = ("batch", "begin", "index")

    def __init__(self, batch: SourceLines) -> None:
        self.batch = batch
        self.index = 0  # the next line
        self.begin = batch.begin  # where it begins


@dataclasses.dataclass(kw_only=True)
class _Commit:
    """One transaction between the loop and the committer: its events and its outcome."""

    open: _Open
    batches: list[OutputBatch]
    checkpoint: dict[str, SourceOffset]
    transactions: int
    reading_closed: float
    outputs: int
    store_done: threading.Event = dataclasses.field(default_factory=threading.Event)
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    error: BaseException | None = None


class Processor:
    def __init__(
        self,
        ctx: ShardContext,
        store: ShardStore,
        metrics: RuntimeMetrics,
        options: ProcessorOptions | None = None,
    ) -> None:
        self.ctx = ctx
        self.store = store
        self.metrics = metrics
        self.options = options or ProcessorOptions()
        self.timing = TxnTiming.of(ctx.task.spec)
        self.ring_buffer_size = ctx.task.spec.shards.ring_buffer_size
        # readers hand documents over in batches: the channel holds readChannelSize
        # documents as that many batches
        read_channel_size = ctx.task.spec.shards.read_channel_size
        self.read_batch = max(1, min(self.options.reader.batch_documents, read_channel_size))
        self.channel: queue.Queue[Message] = ReadChannel(
            max(1, read_channel_size // self.read_batch)
        )
        # what is left of the batch of lines being routed
        self._lines: _Lines | None = None
        self._routers: dict[str, LineRouter] = {}
        self._ranges = Ranges.of(ctx.shard.spec)
        # the journals output batches may go to, those the store lists as pending included:
        # the task's own (task SQL cannot make the runtime write anywhere else)
        self._output_journals = OutputJournals(
            ctx.namespace, ctx.shard.spec.task, ctx.task.spec.outputs, ctx.shard_name
        )
        self._faults = self.options.faults
        self._timer = self.options.timer
        self._clock: Callable[[], float] = self._timer
        self._lock = threading.Lock()
        self._progress = Progress(False, 0, None, {}, 0, None)
        self._feed: Feed | None = None
        self._handler: TaskHandler | None = None
        self._outputs: OutputBuffer | None = None
        self._checkpoint: dict[str, SourceOffset] = {}
        self._appended: list[OutputBatch] = []
        self._transactions = 0
        self._previous: _Commit | None = None
        self._committer: ThreadPoolExecutor | None = None
        self._compressor: ThreadPoolExecutor | None = None
        # when the document being applied began (None between documents), and that time
        # again once its statement ran past the limit and was interrupted
        self._applying_since: float | None = None
        self._interrupted: float | None = None

    # -- the shell's view --------------------------------------------------------------------

    def progress(self) -> Progress:
        """A consistent snapshot, safe to call from any thread."""
        with self._lock:
            progress = self._progress
        feed = self._feed
        if feed is None:
            return progress
        lag = _lag(feed.heads(), progress.checkpoint)
        self.metrics.lag_bytes.set(lag)
        return dataclasses.replace(progress, lag_bytes=lag)

    def run(self, stop: StopSignal) -> None:
        """Recover, then run transactions until ``stop`` is set (the current one is
        finished and committed first; setting it wakes the loop, which never polls for
        it). Raises :class:`.errors.TaskError` (notably
        :class:`TaskFailed`) for what a person must fix, and the storage layer's errors
        (:class:`~shardkeeper.storage.errors.Fenced` when another primary took over)."""
        if self.store.role is not Role.PRIMARY:
            raise errors.NotPrimary(
                f"the processor needs a primary store (this one is {self.store.role.value}): "
                "call store.fence() first"
            )
        if not isinstance(stop, StopSignal):
            # a plain Event would be seen only when a message comes: the loop never polls
            raise TypeError(f"the processor is stopped by a StopSignal, not {stop!r}")
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="commit")
        # compresses output payloads while the transaction goes on (zlib lets go of the
        # interpreter lock), off the way from its last document to its commit
        self._compressor = ThreadPoolExecutor(1, thread_name_prefix="compress")
        forget_stop = stop.listen(self._wake)
        try:
            self._start()
            self.store.guard_statements(self._over_time)
            self._loop(stop)
            self._wait_previous()
        finally:
            forget_stop()
            self.store.guard_statements(None)
            self._shutdown()

    # -- start and stop ------------------------------------------------------------------------

    def _source_task_writes(self, journal: str) -> bool:
        """Whether ``journal`` is written by the task this one was restored from: the
        batches its last commit left pending came with the restored store, and are the
        source's to append (its own store holds them too), never this task's."""
        restore = self.ctx.task.spec.restore_from
        if restore is None or journal in self._output_journals:
            return False
        directory, _, writer = journal.rpartition("/")
        return directory.startswith(f"{COLLECTIONS_DIR}/") and bool(
            writer_pattern(restore.task).match(writer)
        )

    def _start(self) -> None:
        ctx = self.ctx
        saved = checkpoint.open_state(self.store)
        journals = {
            name: collection_journal(ctx.namespace, name, ctx.shard_name)
            for name in ctx.task.spec.outputs
        }
        heads = dict(saved.output_heads)
        for journal in journals.values():
            if journal not in heads:
                # a first output to this journal: start at its head, wherever it is
                heads[journal] = Journal(ctx.objects, ctx.prefix + journal).head()
        assert self._compressor is not None
        self._outputs = OutputBuffer(journals, heads, compressor=self._compressor.submit)
        pending = [b for b in saved.pending if not self._source_task_writes(b.journal)]
        for batch in pending:
            append_batch(ctx.objects, ctx.prefix, batch, self._output_journals)
        self._faults.reached(RuntimeFaultPoint.PENDING_REAPPENDED)
        self._appended = pending
        self._transactions = saved.transactions
        self._routers = {
            name: LineRouter(ctx.route_key(name), self._ranges) for name in ctx.task.spec.sources
        }
        self._handler = self._make_handler()
        authoritative = self._handler.open(self.store, saved)
        self._checkpoint = dict(saved.sources if authoritative is None else authoritative)
        with self._lock:
            self._progress = Progress(
                True,
                saved.transactions,
                None,
                {j: s.offset for j, s in self._checkpoint.items()},
                0,
                None,
            )
        self._feed = self._make_feed()
        self._feed.start(self._checkpoint)

    def _shutdown(self) -> None:
        if self._feed is not None:
            self._feed.stop()
        if self._committer is not None:
            self._committer.shutdown(wait=True)
        if self._compressor is not None:
            self._compressor.shutdown(wait=True)
        stopping = errors.StoreClosed("the shard stopped before this was committed")
        while True:
            try:
                message = self.channel.get_nowait()
            except queue.Empty:
                break
            if isinstance(message, CapturedDocuments):
                message.settle(stopping)
        if self._handler is not None:
            self._handler.close()

    # -- task kinds ----------------------------------------------------------------------------

    def _make_handler(self) -> TaskHandler:
        ctx = self.ctx
        spec = ctx.task.spec
        if spec.type == TaskType.DERIVATION:
            assert spec.derive is not None
            deriver: Deriver
            if spec.derive.sql is not None:
                deriver = SqlDeriver(spec.derive.sql.migrations, spec.derive.sql.lambdas)
            else:
                assert spec.derive.python is not None
                deriver = PythonDeriver(spec.derive.python.module)
            output = spec.outputs[0]
            return DerivationHandler(
                deriver,
                {name: ctx.schema(name) for name in spec.sources},
                output,
                ctx.schema(output),
                ctx.key(output),
            )
        if spec.type == TaskType.CAPTURE:
            assert spec.capture is not None
            assert spec.capture.http is not None
            http = spec.capture.http
            return CaptureHandler(
                idempotency.Limits(http.idempotency_keys, http.idempotency_window.total_seconds())
            )
        assert spec.materialize is not None
        assert spec.materialize.postgres is not None
        postgres = spec.materialize.postgres
        return PostgresMaterializer(
            connection_string(postgres, ctx.resolve_secret),
            postgres.db_schema,
            [table_binding(ctx.collection(name), table) for name, table in postgres.tables.items()],
            f"{ctx.namespace}/{ctx.shard_name}",
            timeouts=Timeouts.of(postgres),
            may_continue=self.options.may_commit,
        )

    def _make_feed(self) -> Feed:
        ctx = self.ctx
        spec = ctx.task.spec
        if spec.type == TaskType.CAPTURE:
            assert spec.capture is not None
            assert spec.capture.http is not None
            http = spec.capture.http
            settings = IngestSettings(
                host=ctx.bind_host,
                port=http.port,
                token=(
                    None
                    if http.auth_token_secret_ref is None
                    else ctx.resolve_secret(http.auth_token_secret_ref)
                ),
                max_request_bytes=http.max_request_bytes,
                max_documents=self.ring_buffer_size,
                commit_timeout=2 * self.timing.max_duration + 60,
                max_connections=http.max_connections,
                read_timeout=http.read_timeout.total_seconds(),
            )
            targets = {name: IngestTarget(ctx.schema(name), ctx.key(name)) for name in spec.outputs}
            return CaptureServer(settings, targets, self.channel)
        return SourceReader(
            ctx.objects,
            ctx.prefix,
            namespace=ctx.namespace,
            sources=ctx.task.spec.sources,
            channel=self.channel,
            options=dataclasses.replace(self.options.reader, batch_documents=self.read_batch),
            retained=[
                name
                for name in ctx.task.spec.sources
                if ctx.collections[name].spec.retention is not None
            ],
        )

    # -- the transaction loop --------------------------------------------------------------------

    def _loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            first = self._first_message(stop)
            if first is None:
                return
            self._transaction(first, stop)

    def _first_message(self, stop: threading.Event) -> Message | _Lines | None:
        """Wait for the message that begins a transaction; ``None`` once ``stop`` is set.
        No deadline runs out here: the wait ends with a message, or with the WAKE of a
        stop request or of the committer (the previous commit may have failed)."""
        while not stop.is_set():
            previous = self._previous
            if previous is not None and previous.done.is_set() and previous.error is not None:
                raise previous.error
            message = self._take(None)
            if message is not None and message is not WAKE:
                return message
        return None

    def _take(self, timeout: float | None) -> Message | _Lines | None:
        """The rest of the batch of lines being routed, else the channel's next message
        (waiting up to ``timeout`` seconds of the timer; 0 waits not at all, ``None`` until
        one comes); ``None`` if none came."""
        if self._lines is not None:
            return self._lines
        if timeout is not None and timeout <= 0:
            try:
                message = self.channel.get_nowait()
            except queue.Empty:
                return None
        else:
            waited = self._timer.wait(self.channel, timeout)
            if waited is None:
                return None
            message = waited
        if isinstance(message, SourceLines):
            self._lines = _Lines(message)
            return self._lines
        return message

    def _transaction(self, first: Message | _Lines, stop: threading.Event) -> None:
        state = _Open(started=self._clock())
        try:
            previous = self._previous
            if previous is not None:
                # SQLite takes one transaction at a time: the previous one must be in the
                # recovery log (its outputs may still be on their way)
                previous.store_done.wait()
                if previous.error is not None:
                    raise previous.error
            state.txn = self.store.begin()
            if self._outputs is not None:
                last = self.store.last_commit
                self._outputs.clock = (last.seq if last is not None else 0) + 1
            self._apply(state, first, stop)
            self._read(state, stop)
            commit = self._prepare_commit(state, self._clock())
        except BaseException as exc:
            self._abandon(state, first, exc)
            raise
        self._previous = commit
        assert self._committer is not None
        self._committer.submit(self._commit, commit)

    def _read(self, state: _Open, stop: threading.Event) -> None:
        """Apply messages while they are ready, at least minTxnDuration and at most
        maxTxnDuration from the first one, until the transaction holds ringBufferSize
        documents, or until ``stop`` is set."""
        timing, clock = self.timing, self._clock
        while not stop.is_set() and state.documents < self.ring_buffer_size:
            elapsed = clock() - state.started
            if not timing.reading(elapsed):
                return
            message = self._take(0)
            if message is None:
                # the next deadline: the end of minTxnDuration (maxTxnDuration is never
                # nearer, and only ends reading between ready messages); a stop request
                # wakes the wait before it
                wait = timing.wait_for_more(elapsed)
                if wait <= 0:
                    return
                message = self._take(wait)
                if message is None:
                    continue
            if message is not WAKE:
                self._apply(state, message, stop)

    def _apply(self, state: _Open, message: Message | _Lines, stop: threading.Event) -> None:
        assert state.txn is not None
        assert self._handler is not None
        assert self._outputs is not None
        if isinstance(message, _Lines):
            self._apply_lines(state, message, self._handler, self._outputs, stop)
        elif isinstance(message, SourceDocument):
            self._applying_since = self._clock()
            try:
                state.documents += self._handler.apply(state.txn, message, self._outputs)
            except DocumentRejected as exc:
                raise TaskFailed(message.journal, message.begin, self._rejected(exc)) from None
            finally:
                self._applying_since = None
            state.sources[message.journal] = SourceOffset(message.end, message.resume)
        elif isinstance(message, SourceAdvance):
            state.sources[message.journal] = SourceOffset(message.end, message.resume)
        elif isinstance(message, CapturedDocuments):
            state.captured.append(message)
            state.documents += self._handler.apply(state.txn, message, self._outputs)
        elif isinstance(message, ReadFailure):
            raise message.error

    def _apply_lines(
        self,
        state: _Open,
        lines: _Lines,
        handler: TaskHandler,
        outputs: OutputBuffer,
        stop: threading.Event,
    ) -> None:
        """Parse, route and apply lines of the batch until it is done, or until the
        transaction must stop reading after a document (as :meth:`_read` decides between
        messages). One loop rather than a message per document: this runs for every
        document, and its calls are most of what a document costs besides the task's own
        work."""
        batch = lines.batch
        journal, collection = batch.journal, batch.collection
        fragment_begin, fragment_end = batch.fragment_begin, batch.fragment_end
        router = self._routers[collection]
        route, owned_key, loads = router.route, router.owned_key, orjson.loads
        txn = state.txn
        assert txn is not None
        apply = handler.source_applier(txn, collection, outputs, journal)
        clock, started = self._clock, state.started
        limit_documents, max_duration = self.ring_buffer_size, self.timing.max_duration
        documents, index, begin = state.documents, lines.index, lines.begin
        data_lines = batch.lines
        count = len(data_lines)
        # one check for the whole batch rather than one per line
        checked = orjson_parses(b"\n".join(data_lines[index:]))
        if not checked:
            owned_key = None
        now = clock()
        try:
            while index < count:
                data = data_lines[index]
                index += 1
                end = begin + len(data) + 1
                # a last line without its newline ends at the fragment's end (a comparison
                # costs less than a call to min, once per line)
                if end > fragment_end:  # noqa: PLR1730
                    end = fragment_end
                if owned_key is not None:
                    # route() inline, for the line that parses as orjson reads it to an
                    # object with its key (what route() returns for it)
                    try:
                        document = loads(data)
                        if document.__class__ is not dict:
                            document = route(journal, begin, data, checked)
                        else:
                            owned_key(document)
                    except (orjson.JSONDecodeError, KeyError):
                        document = route(journal, begin, data, checked)
                else:
                    document = route(journal, begin, data, checked)
                if document is not None:
                    self._applying_since = now  # for the statement guard (_over_time)
                    try:
                        apply(document, begin)
                    except DocumentRejected as exc:
                        raise TaskFailed(journal, begin, self._rejected(exc)) from None
                    documents += 1
                    begin = end
                    now = clock()
                    if (
                        documents >= limit_documents
                        or now - started >= max_duration
                        or stop.is_set()
                    ):
                        break
                else:
                    begin = end
        finally:
            state.documents = documents
            self._applying_since = None
        if index >= count:
            self._lines = None
            begin = fragment_end if not data_lines else begin
        else:
            lines.index, lines.begin = index, begin
        resume = fragment_begin if begin < fragment_end else fragment_end
        state.sources[journal] = SourceOffset(begin, resume)

    def _over_time(self) -> bool:
        """The store's statement guard: whether the document being applied has kept a
        statement running past ``document_time_limit`` (then it is interrupted)."""
        since = self._applying_since
        if since is None or self._clock() - since <= self.options.document_time_limit:
            return False
        self._interrupted = since
        return True

    def _rejected(self, exc: DocumentRejected) -> str:
        """Why the document was rejected, saying so when the statement guard stopped it."""
        if self._interrupted is None or self._interrupted != self._applying_since:
            return str(exc)
        return (
            f"{exc}: it ran for more than {self.options.document_time_limit:g}s on this "
            "document and was stopped (does the lambda ever end?)"
        )

    def _prepare_commit(self, state: _Open, reading_closed: float) -> _Commit:
        """Write the checkpoint and outputs into the open transaction (after the previous
        transaction is entirely done) and commit to the endpoint, if the task has one."""
        assert state.txn is not None
        assert self._handler is not None
        assert self._outputs is not None
        self._wait_previous()
        may_commit = self.options.may_commit
        if may_commit is not None and not may_commit():
            raise CommitWithheld(
                "this replica may no longer commit: it is past its Lease's renew deadline"
            )
        outputs = self._outputs.documents
        batches = self._outputs.seal(self.store.epoch)
        full = {**self._checkpoint, **state.sources}
        outputs += self._handler.before_commit(full)
        rows = CommitRows(
            sources=state.sources,
            output_heads=self._outputs.heads,
            appended=self._appended,
            pending=batches,
            transactions=self._transactions + 1,
        )
        checkpoint.write(state.txn, rows)
        self._faults.reached(RuntimeFaultPoint.DOCUMENTS_APPLIED)
        self._checkpoint = full
        self._transactions += 1
        self._appended = batches
        return _Commit(
            open=state,
            batches=batches,
            checkpoint=full,
            transactions=self._transactions,
            reading_closed=reading_closed,
            outputs=outputs,
        )

    def _abandon(self, state: _Open, first: Message | _Lines, error: BaseException) -> None:
        """Roll the open transaction back; the previous one may still finish."""
        if state.txn is not None:
            with contextlib.suppress(errors.StorageError):
                self.store.rollback()
        if self._outputs is not None:
            self._outputs.discard()
        if self._handler is not None:
            self._handler.discard()
        for message in [*state.captured, first]:
            if isinstance(message, CapturedDocuments) and not message.settled:
                message.settle(error)
        previous = self._previous
        if previous is not None:
            previous.done.wait()

    def _wait_previous(self) -> None:
        previous = self._previous
        if previous is None:
            return
        previous.done.wait()
        if previous.error is not None:
            raise previous.error

    # -- the committer ----------------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(queue.Full):
            self.channel.put_nowait(WAKE)

    def _commit(self, commit: _Commit) -> None:
        try:
            info = self.store.commit()
        except BaseException as exc:
            # fenced, the record did not land; any other failure may have come after it did
            self._fail_commit(commit, exc, outcome_unknown=not isinstance(exc, errors.Fenced))
            commit.store_done.set()
            return
        commit.store_done.set()
        self._wake()
        try:
            self.metrics.recovery_log_bytes_total.inc(info.end - info.begin)
            self._faults.reached(RuntimeFaultPoint.STORE_COMMITTED)
            for batch in commit.batches:
                append_batch(self.ctx.objects, self.ctx.prefix, batch, self._output_journals)
                self._faults.reached(RuntimeFaultPoint.BATCH_APPENDED)
            self._faults.reached(RuntimeFaultPoint.OUTPUTS_APPENDED)
        except BaseException as exc:
            # committed: the next primary appends what is left pending
            self._fail_commit(commit, exc, outcome_unknown=True)
            return
        finished = self._clock()
        state = commit.open
        summary = TransactionSummary(
            transaction=commit.transactions,
            documents=state.documents,
            outputs=commit.outputs,
            started=state.started,
            reading_seconds=commit.reading_closed - state.started,
            total_seconds=finished - state.started,
        )
        checkpoint_offsets = {j: s.offset for j, s in commit.checkpoint.items()}
        with self._lock:
            self._progress = Progress(
                True,
                commit.transactions,
                LastCommit(datetime.now(UTC), info.end),
                checkpoint_offsets,
                self._progress.lag_bytes,
                summary,
            )
        metrics = self.metrics
        metrics.transactions_total.inc()
        metrics.transaction_duration_seconds.observe(summary.total_seconds)
        metrics.transaction_documents.observe(state.documents)
        metrics.documents_in_total.inc(state.documents)
        metrics.documents_out_total.inc(commit.outputs)
        if self._feed is not None:
            metrics.lag_bytes.set(_lag(self._feed.heads(), checkpoint_offsets))
        for captured in state.captured:
            captured.settle(None)
        if self.options.on_commit is not None:
            self.options.on_commit(summary)
        commit.done.set()

    def _fail_commit(self, commit: _Commit, error: BaseException, *, outcome_unknown: bool) -> None:
        if not isinstance(error, errors.Fenced):
            log.error("commit of transaction %d failed: %s", commit.transactions, error)
        commit.error = error
        for captured in commit.open.captured:
            captured.settle(error, outcome_unknown=outcome_unknown)
        commit.done.set()
        # a loop waiting for the next transaction's first message must see the failure
        self._wake()


def _lag(heads: Mapping[str, int], offsets: Mapping[str, int]) -> int:
    return sum(max(0, head - offsets.get(journal, 0)) for journal, head in heads.items())
