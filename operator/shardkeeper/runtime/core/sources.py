"""Reading a shard's source collections into its read channel.

A source is a Collection: every journal under its directory, one per writing shard. A
discovery thread lists the directory now and then and starts a reader thread for each
journal it has not seen; each reader tails its journal from the checkpoint and puts its
lines, in batches, into the read channel, a bounded queue (``readChannelSize``
documents): when the transaction loop falls behind, readers wait. The loop routes each
line (:func:`route_lines`, see :mod:`.routing`) and keeps only the shard's documents.
Idle journals are polled seldom, and their writers' hints wake the readers
(docs/data-plane.md, "Idle reading and write hints").

A document that is not a JSON object, or lacks its key, cannot be routed: the loop fails
with :class:`.errors.TaskFailed` at exactly that document.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence

from shardkeeper.runtime.core.checkpoint import SourceOffset
from shardkeeper.runtime.core.documents import Document, DocumentError, parse_line
from shardkeeper.runtime.core.errors import TaskFailed
from shardkeeper.runtime.core.hints import HINT_FROM, HintWatcher
from shardkeeper.runtime.core.messages import (
    Message,
    ReadFailure,
    SourceAdvance,
    SourceDocument,
    SourceLines,
)
from shardkeeper.runtime.core.routing import (
    KeyExtractor,
    MissingKey,
    Ranges,
    key_hash,
    pack_key,
    r_clock,
)
from shardkeeper.storage.fragment import Fragment, FragmentKind, fragment_info
from shardkeeper.storage.journal import Journal, Wait
from shardkeeper.storage.layout import collection_dir, collection_journal, object_key
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper.storage.retry import PollBackoff, PollPolicy

log = logging.getLogger(__name__)

#: how an idle source journal is polled: every 10 ms growing to 500 ms, then, after 10 s
#: without data, on up to 30 s (a writer's hint ends a long wait early, see .hints)
SOURCE_POLL = PollPolicy(min_delay=0.01, max_delay=0.5, idle_after=10.0, idle_max_delay=30.0)


@dataclasses.dataclass(frozen=True)
class ReaderOptions:
    poll: PollPolicy = SOURCE_POLL
    # how often the collections' directories are listed for new journals: every
    # ``discover_every`` seconds at first, the interval doubling up to ``discover_max``
    # while the sources are idle and no new journal shows up (data read from any of them,
    # or a new one, starts it over: a split's new writer is found at once under load)
    discover_every: float = 1.0
    discover_max: float = 120.0
    # how often the heads of journals whose readers are behind are listed (for the lag);
    # a reader that waits at its journal's head knows the head already
    heads_every: float = 1.0
    put_timeout: float = 0.1
    # documents handed to the transaction loop at once
    batch_documents: int = 256
    # whether readers ask journals' writers for hints (see .hints)
    hints: bool = True


def list_journals(objects: ObjectStore, prefix: str, namespace: str, collection: str) -> list[str]:
    """The relative names of a collection's journals: one listing of its directory's
    directories (a page per thousand journals)."""
    base = object_key(prefix, collection_dir(namespace, collection))
    return [
        collection_journal(namespace, collection, found[len(base) :].rstrip("/"))
        for found in objects.directories(base)
    ]


class SourceReader:
    """Reader threads of every journal of the shard's sources, feeding ``channel``."""

    def __init__(
        self,
        objects: ObjectStore,
        prefix: str,
        *,
        namespace: str,
        sources: Sequence[str],
        channel: queue.Queue[Message],
        options: ReaderOptions | None = None,
        retained: Collection[str] = (),
    ) -> None:
        self.objects = objects
        # sources whose Collection sets spec.retention: only there may a journal's first
        # fragments be gone; elsewhere a missing beginning is lost data and fails the read
        self.retained = frozenset(retained)
        self.prefix = prefix
        self.namespace = namespace
        self.sources = list(sources)
        self.channel = channel
        self.options = options or ReaderOptions()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}
        self._heads: dict[str, int] = {}
        # journals whose reader waits at the head (its head is the one it read up to)
        self._at_head: set[str] = set()
        # whether any reader read data since the last discovery (it keeps discovery quick)
        self._read_since_discovery = False
        self._wakes: dict[str, threading.Event] = {}
        self._start: dict[str, SourceOffset] = {}
        self._discovery: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, checkpoint: Mapping[str, SourceOffset]) -> None:
        """List the sources and start reading each journal from ``checkpoint``."""
        self._start = dict(checkpoint)
        self._discover()
        self._discovery = threading.Thread(
            target=self._discover_loop, name="discover sources", daemon=True
        )
        self._discovery.start()

    def stop(self) -> None:
        """Stop every thread and wait for them (the discovery first: it starts readers).
        Hint watchers are not waited for: a long-poll under way ends on its own."""
        self._stop.set()
        if self._discovery is not None:
            self._discovery.join()
        for wake in list(self._wakes.values()):
            wake.set()
        for thread in list(self._threads.values()):
            thread.join()

    def heads(self) -> dict[str, int]:
        """The latest known head of each source journal."""
        with self._lock:
            return dict(self._heads)

    # -- discovery ---------------------------------------------------------------------------

    def _discover_loop(self) -> None:
        options = self.options
        policy = PollPolicy(min_delay=options.discover_every, max_delay=options.discover_max)
        schedule = PollBackoff(policy, current=options.discover_every)
        tick = min(options.discover_every, options.heads_every)
        waited = 0.0
        since_heads = 0.0
        while not self._stop.wait(tick):
            waited += tick
            since_heads += tick
            try:
                if waited >= schedule.current:
                    waited = 0.0
                    with self._lock:
                        active, self._read_since_discovery = self._read_since_discovery, False
                    schedule = schedule.after(found=self._discover() or active)
                if since_heads >= options.heads_every:
                    since_heads = 0.0
                    self._refresh_heads()
            except Exception as exc:
                self._put(ReadFailure(exc))
                return

    def _discover(self) -> bool:
        """Start reading the journals not seen yet; whether there were any."""
        found = False
        for source in self.sources:
            for journal in list_journals(self.objects, self.prefix, self.namespace, source):
                if journal not in self._threads:
                    self._begin(source, journal)
                    found = True
        return found

    def _begin(self, source: str, journal: str) -> None:
        start = self._start.get(journal, SourceOffset(0, 0))
        with self._lock:
            self._heads.setdefault(journal, start.fragment)
        self._wakes[journal] = threading.Event()
        thread = threading.Thread(
            target=self._read, args=(source, journal, start), name=f"read {journal}", daemon=True
        )
        self._threads[journal] = thread
        thread.start()

    def _refresh_heads(self) -> None:
        """List the heads of the journals whose readers are behind (reading a backlog)."""
        with self._lock:
            behind = {j: h for j, h in self._heads.items() if j not in self._at_head}
        for journal, known in behind.items():
            head = Journal(self.objects, object_key(self.prefix, journal)).head(known)
            with self._lock:
                self._heads[journal] = max(head, self._heads.get(journal, 0))

    # -- reading -----------------------------------------------------------------------------

    def _put(self, message: Message) -> bool:
        while not self._stop.is_set():
            try:
                self.channel.put(message, timeout=self.options.put_timeout)
                return True
            except queue.Full:
                continue
        return False

    def _waiter(self, journal: str, tail: Journal) -> Wait:
        """How the reader of ``journal`` waits at its head: on its wake event, which a hint
        of the journal's writer (or :meth:`stop`) sets."""
        wake = self._wakes[journal]
        watcher: HintWatcher | None = None
        if self.options.hints:
            watcher = HintWatcher(self.objects, tail.prefix, wake.set, self._stop)

        def wait(offset: int, seconds: float) -> None:
            with self._lock:
                self._at_head.add(journal)
            if watcher is not None and seconds >= HINT_FROM:
                watcher.watch(offset)
            if not self._stop.is_set():
                wake.wait(seconds)
            wake.clear()

        return wait

    def _read(self, source: str, journal: str, start: SourceOffset) -> None:
        tail = Journal(self.objects, object_key(self.prefix, journal))
        wait = self._waiter(journal, tail)
        try:
            if journal not in self._start and source in self.retained:
                start = self._first_retained(journal, tail, start)
            fragments = tail.tail(start.fragment, self._stop, poll=self.options.poll, wait=wait)
            for fragment in fragments:
                with self._lock:
                    self._at_head.discard(journal)
                    self._read_since_discovery = True
                    self._heads[journal] = max(fragment.end, self._heads.get(journal, 0))
                if not self._route(source, journal, fragment, start.offset):
                    return
        except Exception as exc:
            if not self._stop.is_set():
                log.warning("reading %s failed: %s", journal, exc)
                self._put(ReadFailure(exc))

    def _first_retained(self, journal: str, tail: Journal, start: SourceOffset) -> SourceOffset:
        """Where a journal this shard never read begins now: past 0 when collection
        retention (``storage/retention.py``) removed its first fragments. Only a journal's
        beginning is ever removed, so a gap after this point still fails the read."""
        first = self.objects.first_after(tail.prefix + "/", tail.prefix + "/")
        info = None if first is None else fragment_info(tail.prefix, first.key, first.size)
        if info is None or info.begin <= start.fragment:
            return start
        # the documents before it were removed by the collection's retention
        log.info(
            "reading a journal from its first retained fragment",
            extra={"journal": journal, "offset": info.begin},
        )
        return SourceOffset(info.begin, info.begin)

    def _route(self, source: str, journal: str, fragment: Fragment, skip_to: int) -> bool:
        """Put the fragment's lines (those from ``skip_to`` on) in batches; False to stop
        reading. Splitting is one C call: the lines' offsets follow from their lengths, and
        the transaction loop works them out as it parses (the reader's time per line would
        be taken from the loop's, under the interpreter lock)."""
        begin, lines = fragment.begin, list[bytes]()
        if fragment.kind is FragmentKind.DATA:
            begin, lines = _lines_from(fragment.payload, fragment.begin, skip_to)
        limit = self.options.batch_documents
        for first in range(0, max(1, len(lines)), limit):
            chunk = tuple(lines[first : first + limit])
            batch = SourceLines(source, journal, fragment.begin, fragment.end, begin, chunk)
            if not self._put(batch):
                return False
            begin += sum(map(len, chunk)) + len(chunk)
        return True


def _lines_from(payload: bytes, begin: int, skip_to: int) -> tuple[int, list[bytes]]:
    """The lines (without newlines) of a payload that starts at journal offset ``begin``,
    from the first that begins at or after ``skip_to``, and where that one begins. A last
    line without a newline is still a line (the parser then refuses it)."""
    start = 0
    if skip_to > begin:
        start = skip_to - begin
        if start < len(payload) and payload[start - 1] != 0x0A:  # inside a line: the next
            found = payload.find(b"\n", start)
            start = len(payload) if found < 0 else found + 1
    if start >= len(payload):
        return begin + len(payload), []
    lines = (payload[start:] if start else payload).split(b"\n")
    if not lines[-1]:
        lines.pop()  # the newline ending the last line
    return begin + start, lines


class LineRouter:
    """Parses one source collection's lines and keeps the shard's documents."""

    def __init__(self, key: KeyExtractor, ranges: Ranges) -> None:
        self.key = key
        self.ranges = ranges
        # a shard that owns a whole range skips hashing for it (the key must exist all the same)
        self._everything = ranges.everything
        # a shard that owns every document and a key of top-level fields: what reads that
        # key from a dict, for a loop that parses lines itself and calls route() only for a
        # line that is not a JSON object with its key (route then raises, or parses it as
        # the stdlib does where orjson refused it)
        self.owned_key = key.getter if self._everything else None

    def route(
        self, journal: str, begin: int, data: bytes, checked: bool = False
    ) -> Document | None:
        """The document of the line at ``begin`` if the shard owns it, else ``None``.
        Raises :class:`TaskFailed` at a line that is not a JSON object or lacks its key.
        ``checked``: :func:`.documents.orjson_parses` holds for the line (its batch was
        checked at once)."""
        try:
            document = parse_line(data, checked=checked)
            if self._everything:
                self.key.require(document)
                return document
            values = self.key.values(document)
        except (DocumentError, MissingKey) as exc:
            raise TaskFailed(journal, begin, str(exc)) from None
        ranges = self.ranges
        owned = (ranges.all_keys or ranges.owns_key(key_hash(pack_key(values)))) and (
            ranges.all_clocks or ranges.owns_clock(r_clock(document, journal, begin))
        )
        return document if owned else None


def route_lines(
    batch: SourceLines, key: KeyExtractor, ranges: Ranges
) -> Iterator[SourceDocument | SourceAdvance]:
    """The shard's documents of a batch, in order, and an advance over a trailing stretch
    of others (or over a batch without data, such as a fence). Raises :class:`TaskFailed`
    at a line that is not a JSON object or lacks its key. (The transaction loop does the
    same without a message per document, see :meth:`.processor.Processor`.)"""
    router = LineRouter(key, ranges)
    journal, fragment_begin, fragment_end = batch.journal, batch.fragment_begin, batch.fragment_end
    passed_over = not batch.lines
    begin = batch.begin
    end = fragment_end
    for data in batch.lines:
        end = min(begin + len(data) + 1, fragment_end)
        document = router.route(journal, begin, data)
        if document is None:
            passed_over = True
        else:
            passed_over = False
            resume = fragment_begin if end < fragment_end else fragment_end
            yield SourceDocument(batch.collection, journal, begin, end, resume, document)
        begin = end
    if passed_over:
        resume = fragment_begin if end < fragment_end else fragment_end
        yield SourceAdvance(journal, end, resume)
