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
from collections.abc import Iterable, Mapping, Sequence

from shardkeeper.runtime.documents import Document, document_uuid, encode_line, with_uuid
from shardkeeper.storage import errors
from shardkeeper.storage.journal import Journal
from shardkeeper.storage.objectstore import ObjectStore

# a transaction's output to one journal is cut into fragments of at most this many bytes
MAX_FRAGMENT_BYTES = 4 << 20


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

    @property
    def end(self) -> int:
        return self.begin + len(self.payload)


class OutputBuffer:
    """Frames a transaction's output documents at the offsets they will occupy.

    ``journals`` maps each output collection to this shard's journal in it (a relative
    name); ``heads`` holds each journal's next offset as the store recorded it.
    """

    def __init__(
        self,
        journals: Mapping[str, str],
        heads: Mapping[str, int],
        *,
        max_fragment_bytes: int = MAX_FRAGMENT_BYTES,
    ) -> None:
        self.journals = dict(journals)
        self.max_fragment_bytes = max_fragment_bytes
        self.heads = {j: heads.get(j, 0) for j in self.journals.values()}
        self._chunks: dict[str, list[bytes]] = {j: [] for j in self.heads}
        self._sizes: dict[str, int] = dict.fromkeys(self.heads, 0)
        self.documents = 0

    def add(self, collection: str, document: Document) -> Document:
        """Frame ``document`` for ``collection``; returns it as written (with its UUID)."""
        journal = self.journals[collection]
        offset = self.next_offset(journal)
        written = with_uuid(document, document_uuid(journal, offset))
        line = encode_line(written)
        self._chunks[journal].append(line)
        self._sizes[journal] += len(line)
        self.documents += 1
        return written

    def next_offset(self, journal: str) -> int:
        """Where the next document framed for ``journal`` will sit."""
        return self.heads[journal] + self._sizes[journal]

    def seal(self, epoch: int) -> list[OutputBatch]:
        """The transaction's batches, in append order; the heads move past them."""
        batches: list[OutputBatch] = []
        for journal, lines in self._chunks.items():
            begin = self.heads[journal]
            for payload in _cut(lines, self.max_fragment_bytes):
                batches.append(OutputBatch(journal, begin, epoch, payload))
                begin += len(payload)
            self.heads[journal] = begin
            self._chunks[journal] = []
            self._sizes[journal] = 0
        self.documents = 0
        return batches

    def discard(self) -> None:
        """Forget what the current transaction framed (it rolled back)."""
        for journal in self._chunks:
            self._chunks[journal] = []
            self._sizes[journal] = 0
        self.documents = 0


def _cut(lines: Sequence[bytes], limit: int) -> Iterable[bytes]:
    """Whole lines joined into payloads of at most ``limit`` bytes (a longer line alone)."""
    chunk: list[bytes] = []
    size = 0
    for line in lines:
        if chunk and size + len(line) > limit:
            yield b"".join(chunk)
            chunk, size = [], 0
        chunk.append(line)
        size += len(line)
    if chunk:
        yield b"".join(chunk)


def append_batch(objects: ObjectStore, prefix: str, batch: OutputBatch) -> None:
    """Append ``batch`` at exactly its offset, or find it already there; else raise."""
    journal = Journal(objects, prefix + batch.journal)
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
