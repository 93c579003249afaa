"""What flows through a shard's read channel to its transaction loop.

Readers of source journals put :class:`SourceLines` (which the loop turns into
:class:`SourceDocument`, a document in the shard's ranges, and :class:`SourceAdvance`,
documents outside them passed over so the checkpoint moves on) and :class:`ReadFailure`;
a capture's ingest endpoint puts :class:`CapturedDocuments`.
:data:`WAKE` carries no data: it makes a waiting loop look at the clock again.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from typing import NamedTuple

from shardkeeper.runtime.core.documents import Document
from shardkeeper.runtime.core.idempotency import Remembered


# one per document: a NamedTuple is made several times faster than a frozen dataclass
class SourceDocument(NamedTuple):
    """A document of a source collection within the shard's ranges."""

    collection: str
    journal: str
    begin: int
    end: int
    # where reading resumes once this document is processed: the begin of its fragment,
    # or the fragment's end when the document is the fragment's last
    resume: int
    document: Document


class SourceAdvance(NamedTuple):
    """Documents up to ``end`` were read and none of them is the shard's."""

    journal: str
    end: int
    resume: int


@dataclasses.dataclass(frozen=True)
class SourceLines:
    """Consecutive lines of one fragment of a source journal, not yet parsed.

    Readers hand lines over in batches, and the transaction loop parses and routes them
    (see :class:`.sources.LineRouter`): one hand-over between threads per batch rather than
    per document, and the parsing runs on the thread that processes, instead of contending
    with it. A transaction may end inside a batch; the rest opens the next transaction.

    ``lines`` are without their newlines: the first begins at ``begin``, each next one just
    past the newline of the one before, and a line ends past its newline (the last may have
    none: it then ends at ``fragment_end``)."""

    collection: str
    journal: str
    fragment_begin: int
    fragment_end: int
    begin: int
    lines: tuple[bytes, ...]


@dataclasses.dataclass(frozen=True)
class ReadFailure:
    """A reader hit ``error`` (a :class:`.errors.TaskFailed` for a bad document)."""

    error: BaseException


class CapturedDocuments:
    """Documents posted to a capture, waiting to be committed and then acknowledged.

    With an idempotency ``key``, the handler looks it up in the open transaction: a key
    already recorded sets ``first`` (what its first request wrote) and nothing is written
    again; otherwise the key is recorded with the documents (see :mod:`.idempotency`)."""

    def __init__(
        self,
        collection: str,
        documents: list[Document],
        key: str | None = None,
        digest: bytes = b"",
    ) -> None:
        self.collection = collection
        self.documents = documents
        self.key = key
        self.digest = digest  # of the request, to tell a retry from another request
        self.first: Remembered | None = None
        self.error: BaseException | None = None
        # whether, after an error, the documents may have been written all the same (the
        # commit failed or stopped after its record may have reached the recovery log)
        self.outcome_unknown = False
        self._settled = threading.Event()

    def settle(self, error: BaseException | None = None, *, outcome_unknown: bool = False) -> None:
        """Called once: after the commit and its appends (``None``), or on failure."""
        self.error = error
        self.outcome_unknown = error is not None and outcome_unknown
        self._settled.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._settled.wait(timeout)

    @property
    def settled(self) -> bool:
        return self._settled.is_set()


class _Wake:
    def __repr__(self) -> str:
        return "WAKE"


WAKE = _Wake()

Message = SourceDocument | SourceAdvance | SourceLines | ReadFailure | CapturedDocuments | _Wake


class ReadChannel(queue.Queue[Message]):
    """The read channel: a bounded queue whose writers waiting for room are woken once it
    is half empty, not at every message taken.

    A reader blocked on a full channel then puts several batches per wake-up, rather than
    being woken (and handed the interpreter lock) after every batch the loop takes: one
    wake-up per half a channel instead of one per batch of documents. Writers that wait
    with a timeout still look again when it runs out."""

    def get(self, block: bool = True, timeout: float | None = None) -> Message:
        # Queue.get, but for when it notifies not_full
        with self.not_empty:
            if not block:
                if not self._qsize():
                    raise queue.Empty
            elif timeout is None:
                while not self._qsize():
                    self.not_empty.wait()
            elif timeout < 0:
                raise ValueError("'timeout' must be a non-negative number")
            else:
                deadline = time.monotonic() + timeout
                while not self._qsize():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0.0:
                        raise queue.Empty
                    self.not_empty.wait(remaining)
            message: Message = self._get()
            if self._qsize() <= self.maxsize // 2:
                self.not_full.notify()
            return message
