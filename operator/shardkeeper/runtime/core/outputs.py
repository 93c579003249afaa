"""Output journals: framing a transaction's outputs and appending them exactly once.

Each output collection has one journal per writing shard. A transaction's outputs are laid
out while it runs, at offsets that follow the journal's head as the store last recorded
it; the batches (journal, begin offset, epoch, bytes) are written into the store
transaction together with the state and the checkpoint, and appended to the journals only
after that commit has landed in the recovery log.

An append is a conditional create at exactly the recorded offset. If the object there
already holds identical bytes, an earlier attempt (this process before a crash, or a
paused old primary replaying the same commit) wrote it, and the append counts as done.
Anything else at that offset breaks the invariant, and :class:`OutputConflict` stops the
shard. Since a batch is appended only after the commit that records it, and a restart
appends every batch the store still lists before anything else, no output is lost and
none is written twice.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Callable, Container, Iterable, Mapping
from concurrent.futures import Future

from shardkeeper.runtime.core.compression import StreamingCompression, Submit
from shardkeeper.runtime.core.documents import (
    CLOCK_FIELD,
    META,
    UUID_FIELD,
    Document,
    encode_line,
    encode_plain_line,
    uuid_maker,
    with_uuid,
)
from shardkeeper.runtime.core.errors import TaskError
from shardkeeper.storage import errors
from shardkeeper.storage.journal import Journal
from shardkeeper.storage.layout import (
    collection_dir,
    collection_journal,
    object_key,
    writer_pattern,
)
from shardkeeper.storage.objectstore import ObjectStore

# a transaction's output to one journal is cut into fragments of at most this many bytes
MAX_FRAGMENT_BYTES = 4 << 20
# a payload being written is handed to its compression in pieces of about this many bytes
COMPRESSION_PIECE_BYTES = 256 << 10


class OutputConflict(errors.StorageError):
    """An output journal holds other bytes where this shard's committed output belongs."""

    def __init__(self, journal: str, offset: int, detail: str) -> None:
        super().__init__(
            f"output journal {journal!r} holds other data at offset {offset:#x} than the "
            f"batch this shard committed there ({detail}): another writer appended to this "
            "shard's journal. Nothing more is written; find who writes to it"
        )
        self.journal = journal
        self.offset = offset


@dataclasses.dataclass(frozen=True)
class OutputBatch:
    """Documents committed for one output journal at one offset, not yet known appended."""

    journal: str
    begin: int
    epoch: int
    payload: bytes
    # the payload compressed for the store (see checkpoint.write), begun while the
    # transaction went on; None: compressed when written
    compressed: Future[bytes] | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def end(self) -> int:
        return self.begin + len(self.payload)


class _Journal:
    """What a transaction framed so far for one output journal: its lines, already joined
    into payloads of at most ``limit`` bytes (a longer line alone).

    Lines go straight into growing buffers: holding each as an object until the commit
    costs more than writing it (tens of thousands of objects per transaction, in memory
    that is new each time)."""

    __slots__ = (
        "compressed",
        "compression",
        "compressor",
        "current",
        "full",
        "hand_at",
        "handed",
        "head",
        "limit",
        "name",
        "next",
        "uuid",
    )

    def __init__(self, name: str, head: int, limit: int, compressor: Submit | None) -> None:
        self.name = name
        self.uuid = uuid_maker(name)
        self.limit = limit
        self.compressor = compressor
        self.head = head  # where this transaction's first output goes
        self.clear()

    def clear(self) -> None:
        self.full: list[bytes] = []  # payloads that take no more lines
        self.compressed: list[Future[bytes] | None] = []  # of each full payload
        self.next = self.head  # where the next output goes
        self.restart()

    def restart(self) -> None:
        """Begin a new payload at :attr:`next`."""
        self.current = bytearray()  # the payload being filled, after the full ones
        self.compression: StreamingCompression | None = None  # made for its first piece
        self.handed = 0  # how much of the payload its compression has
        # the offset past which the next piece is handed over (a number to compare once
        # per line)
        self.hand_at = self.next + COMPRESSION_PIECE_BYTES if self.compressor else sys.maxsize

    def _compression(self) -> StreamingCompression:
        assert self.compressor is not None
        if self.compression is None:
            self.compression = StreamingCompression(self.compressor)
        return self.compression

    def hand_over(self) -> None:
        """Hand what the payload gained since the last time to its compression."""
        current = self.current
        self._compression().add(bytes(current[self.handed :]))
        self.handed = len(current)
        self.hand_at = self.next + COMPRESSION_PIECE_BYTES

    def sealed(self) -> tuple[bytes, Future[bytes] | None]:
        """The payload, complete, and its compression (by then all but the last piece of
        it is done, or under way)."""
        payload = bytes(self.current)
        if self.compressor is None:
            return payload, None
        return payload, self._compression().finish(payload[self.handed :])


class OutputBuffer:
    """Frames a transaction's output documents at the offsets they will occupy.

    ``journals`` maps each output collection to this shard's journal in it (a relative
    name); ``heads`` holds each journal's next offset as the store recorded it.
    ``compressor``, if given, compresses each payload for the store (see
    :mod:`.checkpoint`) on another thread while it is being written, piece by piece: by the
    time the transaction commits, only the last piece of its last payload is left, rather
    than whole payloads one after the other on the way to the commit.
    """

    def __init__(
        self,
        journals: Mapping[str, str],
        heads: Mapping[str, int],
        *,
        max_fragment_bytes: int = MAX_FRAGMENT_BYTES,
        compressor: Submit | None = None,
    ) -> None:
        self.journals = dict(journals)
        self.max_fragment_bytes = max_fragment_bytes
        self.heads = {j: heads.get(j, 0) for j in self.journals.values()}
        self._framed = {
            j: _Journal(j, head, max_fragment_bytes, compressor) for j, head in self.heads.items()
        }
        self._by_collection = {c: self._framed[j] for c, j in self.journals.items()}
        self.documents = 0
        # each document's _meta.clock: the commit sequence number of the transaction that
        # frames it. A split's child goes on from its parent's sequence, so the documents
        # of one key keep their order across the journals of both sides (see clock_of).
        self.clock = 0

    def add(self, collection: str, document: Document, *, owned: bool = False) -> Document:
        """Frame ``document`` for ``collection``; returns it as written (with its UUID).

        ``owned`` says the caller made ``document`` for this call and keeps no reference to
        it: its ``_meta`` is then set in place rather than in a copy."""
        return self._frame(self._by_collection[collection], owned, document)

    def adder(self, collection: str) -> Callable[[Document], object]:
        """:meth:`add` of owned documents for ``collection``, the journal looked up once."""
        return functools.partial(self._frame, self._by_collection[collection], True)

    def _frame(self, framed: _Journal, owned: bool, document: Document) -> Document:
        offset = framed.next
        doc_uuid = framed.uuid(offset)
        # the common case, written by orjson: no _meta yet, and only values that orjson
        # writes as the stdlib does (see encode_plain_line; the loop is plain_float's, inline:
        # this runs for every value of every output)
        plain = document.get(META) is None
        if plain:
            for value in document.values():
                kind = value.__class__
                if kind is str or kind is int or value is None or kind is bool:
                    continue
                if kind is float and (1e-4 <= abs(value) < _INFINITY or value == 0.0):
                    continue
                plain = False
                break
        if plain:
            written = document if owned else dict(document)
            written[META] = {UUID_FIELD: doc_uuid, CLOCK_FIELD: self.clock}
            line = encode_plain_line(written)
        else:
            written = with_uuid(document, doc_uuid, self.clock)
            line = encode_line(written)
        current = framed.current
        if current and len(current) + len(line) > framed.limit:
            self._fill(framed)
            current = framed.current
        current += line
        framed.next = end = offset + len(line)
        if end >= framed.hand_at:
            framed.hand_over()
        self.documents += 1
        return written

    def _fill(self, framed: _Journal) -> None:
        payload, compressed = framed.sealed()
        framed.full.append(payload)
        framed.compressed.append(compressed)
        framed.restart()

    def next_offset(self, journal: str) -> int:
        """Where the next document framed for ``journal`` will sit."""
        return self._framed[journal].next

    def seal(self, epoch: int) -> list[OutputBatch]:
        """The transaction's batches, in append order; the heads move past them."""
        batches: list[OutputBatch] = []
        for journal, framed in self._framed.items():
            begin = framed.head
            payloads = list(zip(framed.full, framed.compressed, strict=True))
            if framed.current:
                payloads.append(framed.sealed())
            for payload, compressed in payloads:
                batches.append(OutputBatch(journal, begin, epoch, payload, compressed))
                begin += len(payload)
            self.heads[journal] = framed.head = begin
            framed.clear()
        self.documents = 0
        return batches

    def discard(self) -> None:
        """Forget what the current transaction framed (it rolled back)."""
        for framed in self._framed.values():
            framed.clear()
        self.documents = 0


_INFINITY = float("inf")


class ForeignOutput(TaskError):
    """A batch the store holds for appending names a journal that is not one of the task's
    output journals: the store was tampered with (task SQL, say), and nothing is
    appended."""

    def __init__(self, journal: str) -> None:
        super().__init__(
            f"the shard store holds an output batch for journal {journal!r}, which is not "
            "one of this task's output journals: refused, nothing was appended. The store's "
            "pending outputs were changed by something other than the runtime"
        )
        self.journal = journal


class OutputJournals:
    """The journals a task's outputs may go to: those of its output collections written
    by one of its shards (this one, or a split's parent whose pending batch it inherited).
    A name with anything else in it (another task's shard, a recovery log, ``..``) is
    none of them."""

    def __init__(self, namespace: str, task: str, collections: Iterable[str], writer: str) -> None:
        names = list(collections)
        self._directories = tuple(collection_dir(namespace, c) for c in names)
        self._writer = writer_pattern(task)
        self._own = frozenset(collection_journal(namespace, c, writer) for c in names)

    def __contains__(self, journal: object) -> bool:
        if not isinstance(journal, str):
            return False
        if journal in self._own:
            return True
        for directory in self._directories:
            if journal.startswith(directory):
                return bool(self._writer.match(journal[len(directory) :]))
        return False


def append_batch(
    objects: ObjectStore, prefix: str, batch: OutputBatch, journals: Container[str]
) -> None:
    """Append ``batch`` at exactly its offset, or find it already there; else raise.
    ``journals`` are those the task may append to: a batch for any other raises
    :class:`ForeignOutput` before anything is written."""
    if batch.journal not in journals:
        raise ForeignOutput(batch.journal)
    journal = Journal(objects, object_key(prefix, batch.journal))
    writer = journal.writer(batch.epoch, batch.begin)
    written = writer.try_append(batch.payload)
    if written.begin != batch.begin or written.payload != batch.payload:
        raise OutputConflict(
            batch.journal,
            batch.begin,
            f"{len(written.payload)} bytes of epoch {written.epoch} instead of "
            f"{len(batch.payload)} bytes of epoch {batch.epoch}",
        )
    if written.epoch != batch.epoch:
        raise OutputConflict(
            batch.journal, batch.begin, f"epoch {written.epoch} instead of {batch.epoch}"
        )
