"""The two parts a task kind plugs into the processor: a feed and a handler.

The **feed** fills the read channel: the readers of the source collections (derivations
and materializations) or the HTTP ingest endpoint (captures). The **handler** applies each
message inside the open store transaction and, for a materialization, commits to the
endpoint before the store commits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from shardkeeper.runtime.core.checkpoint import SavedState, SourceOffset
from shardkeeper.runtime.core.documents import Document
from shardkeeper.runtime.core.messages import CapturedDocuments, SourceDocument
from shardkeeper.runtime.core.outputs import OutputBuffer
from shardkeeper.storage.store import ShardStore, Transaction

# applies one source document of a batch, given where it begins in the batch's journal
SourceApplier = Callable[[Document, int], None]


class Feed(Protocol):
    def start(self, checkpoint: Mapping[str, SourceOffset]) -> None: ...

    def stop(self) -> None: ...

    def heads(self) -> dict[str, int]:
        """The latest known head of each source journal (for lag)."""
        ...


class TaskHandler(Protocol):
    def open(self, store: ShardStore, saved: SavedState) -> dict[str, SourceOffset] | None:
        """Prepare on the primary store before the first transaction. A handler whose
        endpoint holds the authoritative checkpoint returns it."""
        ...

    def apply(
        self,
        txn: Transaction,
        message: SourceDocument | CapturedDocuments,
        outputs: OutputBuffer,
    ) -> int:
        """Apply one message; returns how many documents it held. Raises
        :class:`.errors.DocumentRejected` for a source document that fails."""
        ...

    def source_applier(
        self, txn: Transaction, collection: str, outputs: OutputBuffer, journal: str
    ) -> SourceApplier:
        """What :meth:`apply` does with a :class:`SourceDocument`, for the documents of one
        batch of ``journal``, as ``apply(document, begin)`` without making messages: what
        is the same for the whole batch is looked up once, not once per document. A
        handler that reads no source documents returns one that refuses them."""
        ...

    def before_commit(self, checkpoint: Mapping[str, SourceOffset]) -> int:
        """Commit to the endpoint, if any, with the transaction's full ``checkpoint``;
        returns how many rows it wrote there."""
        ...

    def discard(self) -> None:
        """Forget the current transaction (it rolled back)."""
        ...

    def close(self) -> None: ...


class HandlerDefaults:
    """What a handler without an endpoint of its own does at each step: nothing."""

    def open(self, store: ShardStore, saved: SavedState) -> dict[str, SourceOffset] | None:
        return None

    def before_commit(self, checkpoint: Mapping[str, SourceOffset]) -> int:
        return 0

    def discard(self) -> None:
        return None

    def close(self) -> None:
        return None


class SourceHandler:
    """A handler of source documents (derivations, materializations): each message is one
    document, applied by :meth:`apply_source`, which is what such a kind implements."""

    reads = "a source handler"  # what the handler is, for the error about a wrong message

    def apply(
        self,
        txn: Transaction,
        message: SourceDocument | CapturedDocuments,
        outputs: OutputBuffer,
    ) -> int:
        if not isinstance(message, SourceDocument):
            raise TypeError(f"{self.reads} reads source documents, not {message!r}")
        self.apply_source(
            txn,
            message.collection,
            message.document,
            outputs,
            journal=message.journal,
            begin=message.begin,
        )
        return 1

    def apply_source(
        self,
        txn: Transaction,
        collection: str,
        document: Document,
        outputs: OutputBuffer,
        *,
        journal: str,
        begin: int,
    ) -> None:
        """Apply one source document, the one at ``begin`` of ``journal``."""
        raise NotImplementedError

    def source_applier(
        self, txn: Transaction, collection: str, outputs: OutputBuffer, journal: str
    ) -> SourceApplier:
        apply_source = self.apply_source

        def apply(document: Document, begin: int) -> None:
            apply_source(txn, collection, document, outputs, journal=journal, begin=begin)

        return apply
