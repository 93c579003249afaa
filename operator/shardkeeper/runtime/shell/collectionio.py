"""Writing documents to a collection, and reading them back, outside of a shard.

:class:`CollectionWriter` appends the way a capture does (its own journal, ``_meta.uuid``
on every document, one fragment per call); :func:`read_collection` reads every journal of
a collection from the start. Tests, examples and tools use them; shards use
:mod:`.outputs` and :mod:`.sources`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from shardkeeper.runtime.core.documents import Document, parse_line, split_lines
from shardkeeper.runtime.core.outputs import OutputBuffer
from shardkeeper.runtime.core.sources import list_journals
from shardkeeper.storage.fragment import FragmentKind
from shardkeeper.storage.journal import Journal
from shardkeeper.storage.layout import collection_journal
from shardkeeper.storage.objectstore import ObjectStore


@dataclasses.dataclass(frozen=True)
class JournalDocument:
    """A document as read from a journal."""

    journal: str
    offset: int
    document: Document


class CollectionWriter:
    """Appends to the journal of ``writer`` in a collection, from its current head."""

    def __init__(
        self,
        objects: ObjectStore,
        prefix: str,
        *,
        namespace: str,
        collection: str,
        writer: str,
        epoch: int = 1,
    ) -> None:
        self.collection = collection
        self.journal = collection_journal(namespace, collection, writer)
        self.epoch = epoch
        journal = Journal(objects, prefix + self.journal)
        self._writer = journal.writer(epoch, journal.head())

    @property
    def head(self) -> int:
        return self._writer.head

    def append(self, documents: Iterable[Mapping[str, Any]]) -> list[JournalDocument]:
        """Append ``documents`` as one fragment; returns them as written, with offsets."""
        buffer = OutputBuffer({self.collection: self.journal}, {self.journal: self.head})
        offsets = []
        written = []
        for document in documents:
            offsets.append(buffer.next_offset(self.journal))
            written.append(buffer.add(self.collection, dict(document)))
        for batch in buffer.seal(self.epoch):
            self._writer.append(batch.payload)
        return [
            JournalDocument(self.journal, offset, document)
            for offset, document in zip(offsets, written, strict=True)
        ]


def read_journal(objects: ObjectStore, prefix: str, journal: str) -> list[JournalDocument]:
    """Every document of one journal, in order."""
    found = []
    for fragment in Journal(objects, prefix + journal).read(0):
        if fragment.kind is not FragmentKind.DATA:
            continue
        for line in split_lines(fragment.payload, fragment.begin):
            found.append(JournalDocument(journal, line.begin, parse_line(line.data)))
    return found


def read_collection(
    objects: ObjectStore, prefix: str, namespace: str, collection: str
) -> list[JournalDocument]:
    """Every document of every journal of a collection, journal by journal."""
    found = []
    for journal in list_journals(objects, prefix, namespace, collection):
        found.extend(read_journal(objects, prefix, journal))
    return found
