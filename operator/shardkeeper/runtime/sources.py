"""Reading a shard's source collections into its read channel.

A source is a Collection: every journal under its directory, one per writing shard. A
discovery thread lists the directory now and then and starts a reader thread for each
journal it has not seen; each reader tails its journal from the checkpoint, routes every
document (see :mod:`.routing`) and puts the shard's own into the read channel, a bounded
queue (``readChannelSize``): when the transaction loop falls behind, readers wait.

A document that is not a JSON object, or lacks its key, cannot be routed; the reader puts
a :class:`.messages.ReadFailure` naming it and stops, so the loop fails at exactly that
document.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from collections.abc import Mapping, Sequence

from shardkeeper.runtime.checkpoint import SourceOffset
from shardkeeper.runtime.documents import DocumentError, parse_line, split_lines
from shardkeeper.runtime.errors import TaskFailed
from shardkeeper.runtime.messages import (
    Message,
    ReadFailure,
    SourceAdvance,
    SourceDocument,
)
from shardkeeper.runtime.routing import KeyExtractor, MissingKey, Ranges, r_clock
from shardkeeper.runtime.storagemap import collection_dir, collection_journal, key_prefix
from shardkeeper.storage.fragment import Fragment, FragmentKind
from shardkeeper.storage.journal import Journal
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper.storage.retry import PollPolicy

log = logging.getLogger(__name__)

# sorts after every fragment key (16 hex digits) of a journal directory
_AFTER_FRAGMENTS = "~"


@dataclasses.dataclass(frozen=True)
class Source:
    """A source collection as a reader needs it."""

    collection: str
    key: KeyExtractor


@dataclasses.dataclass(frozen=True)
class ReaderOptions:
    poll: PollPolicy = dataclasses.field(
        default_factory=lambda: PollPolicy(min_delay=0.01, max_delay=0.5)
    )
    # how often the collections' directories are listed for new journals (and heads)
    discover_every: float = 1.0
    put_timeout: float = 0.1


def list_journals(objects: ObjectStore, prefix: str, namespace: str, collection: str) -> list[str]:
    """The relative names of a collection's journals, found by listing one key per journal."""
    base = key_prefix(prefix, collection_dir(namespace, collection)) + "/"
    names: list[str] = []
    after = base
    while True:
        found = objects.first_after(base, after)
        if found is None:
            return names
        writer, slash, _ = found.key[len(base) :].partition("/")
        if not slash:  # an object right in the directory is no journal
            after = found.key
            continue
        names.append(collection_journal(namespace, collection, writer))
        after = f"{base}{writer}/{_AFTER_FRAGMENTS}"


class SourceReader:
    """Reader threads of every journal of the shard's sources, feeding ``channel``."""

    def __init__(
        self,
        objects: ObjectStore,
        prefix: str,
        *,
        namespace: str,
        sources: Sequence[Source],
        ranges: Ranges,
        channel: queue.Queue[Message],
        options: ReaderOptions | None = None,
    ) -> None:
        self.objects = objects
        self.prefix = prefix
        self.namespace = namespace
        self.sources = list(sources)
        self.ranges = ranges
        self.channel = channel
        self.options = options or ReaderOptions()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}
        self._heads: dict[str, int] = {}
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
        """Stop every thread and wait for them (the discovery first: it starts readers)."""
        self._stop.set()
        if self._discovery is not None:
            self._discovery.join()
        for thread in list(self._threads.values()):
            thread.join()

    def heads(self) -> dict[str, int]:
        """The latest known head of each source journal."""
        with self._lock:
            return dict(self._heads)

    # -- discovery ---------------------------------------------------------------------------

    def _discover_loop(self) -> None:
        while not self._stop.wait(self.options.discover_every):
            try:
                self._discover()
                self._refresh_heads()
            except Exception as exc:
                self._put(ReadFailure(exc))
                return

    def _discover(self) -> None:
        for source in self.sources:
            for journal in list_journals(
                self.objects, self.prefix, self.namespace, source.collection
            ):
                if journal not in self._threads:
                    self._begin(source, journal)

    def _begin(self, source: Source, journal: str) -> None:
        start = self._start.get(journal, SourceOffset(0, 0))
        with self._lock:
            self._heads.setdefault(journal, start.fragment)
        thread = threading.Thread(
            target=self._read, args=(source, journal, start), name=f"read {journal}", daemon=True
        )
        self._threads[journal] = thread
        thread.start()

    def _refresh_heads(self) -> None:
        for journal, known in self.heads().items():
            head = Journal(self.objects, self.prefix + journal).head(known)
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

    def _read(self, source: Source, journal: str, start: SourceOffset) -> None:
        tail = Journal(self.objects, self.prefix + journal)
        try:
            for fragment in tail.tail(start.fragment, self._stop, poll=self.options.poll):
                with self._lock:
                    self._heads[journal] = max(fragment.end, self._heads.get(journal, 0))
                if not self._route(source, journal, fragment, start.offset):
                    return
        except Exception as exc:
            if not self._stop.is_set():
                log.warning("reading %s failed: %s", journal, exc)
                self._put(ReadFailure(exc))

    def _route(self, source: Source, journal: str, fragment: Fragment, skip_to: int) -> bool:
        """Put the fragment's documents that are the shard's; False to stop reading."""
        if fragment.kind is not FragmentKind.DATA:
            return self._put(SourceAdvance(journal, fragment.end, fragment.end))
        passed_over = False
        for line in split_lines(fragment.payload, fragment.begin):
            if line.begin < skip_to:
                continue
            try:
                document = parse_line(line.data)
                key = source.key.hash(document)
            except (DocumentError, MissingKey) as exc:
                self._put(ReadFailure(TaskFailed(journal, line.begin, str(exc))))
                return False
            if not self.ranges.owns(key, r_clock(document, journal, line.begin)):
                passed_over = True
                continue
            passed_over = False
            resume = fragment.begin if line.end < fragment.end else fragment.end
            message = SourceDocument(
                source.collection, journal, line.begin, line.end, resume, document
            )
            if not self._put(message):
                return False
        if passed_over:
            return self._put(SourceAdvance(journal, fragment.end, fragment.end))
        return True
