"""What a derivation is to the processor: migrations, then one call per source document.

Both kinds (SQL lambdas, Python plug-ins) run inside the shard store's open transaction,
so what they change in the store commits together with the checkpoint and the outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from shardkeeper.runtime.core.checkpoint import SavedState, SourceOffset, record_migrations
from shardkeeper.runtime.core.documents import Document
from shardkeeper.runtime.core.errors import DocumentRejected
from shardkeeper.runtime.core.handler import HandlerDefaults, SourceApplier, SourceHandler
from shardkeeper.runtime.core.outputs import OutputBuffer
from shardkeeper.runtime.core.routing import KeyExtractor, MissingKey
from shardkeeper.runtime.core.schemas import DocumentSchema
from shardkeeper.storage.store import ShardStore, Transaction


class SqlHandle(Protocol):
    """The open store transaction, as task code sees it."""

    def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> Any: ...


class Deriver(Protocol):
    def pending_migrations(self, applied: Sequence[str]) -> list[str]:
        """Migrations not yet run; raises :class:`.errors.TaskMisconfigured` if ``applied`` (what
        the store ran) is not a prefix of the task's migrations."""
        ...

    def migrate(self, txn: SqlHandle, migrations: Sequence[str], first: int) -> None:
        """Run ``migrations`` (numbered from ``first``)."""
        ...

    def derive(self, txn: SqlHandle, source: str, document: Document) -> list[Document]:
        """Outputs of one source document, new plain dicts of the caller's (it sets their
        ``_meta`` in place); raises :class:`.errors.DocumentRejected`."""
        ...

    def deriving(self, txn: SqlHandle, source: str) -> Callable[[Document], list[Document]]:
        """:meth:`derive` of ``source`` in ``txn``, for the documents of one batch."""
        ...


class DerivationHandler(SourceHandler, HandlerDefaults):
    """Checks each source document, runs the derivation on it, checks and frames outputs."""

    reads = "a derivation"

    def __init__(
        self,
        deriver: Deriver,
        sources: Mapping[str, DocumentSchema],
        output: str,
        output_schema: DocumentSchema,
        output_key: KeyExtractor,
    ) -> None:
        self.deriver = deriver
        self.sources = dict(sources)
        self.output = output
        self.output_schema = output_schema
        self.output_key = output_key
        self._accepts = {name: schema.accepts for name, schema in self.sources.items()}

    def open(self, store: ShardStore, saved: SavedState) -> dict[str, SourceOffset] | None:
        pending = self.deriver.pending_migrations(saved.migrations)
        if pending:
            first = len(saved.migrations)
            with store.transaction() as txn:
                self.deriver.migrate(txn, pending, first)
                record_migrations(txn, first, pending)
        return None

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
        self.source_applier(txn, collection, outputs, journal)(document, begin)

    def source_applier(
        self, txn: Transaction, collection: str, outputs: OutputBuffer, journal: str
    ) -> SourceApplier:
        # apply_source with every lookup that is the same for the batch done here, once
        accepts, source_schema = self._accepts[collection], self.sources[collection]
        derive = self.deriver.deriving(txn, collection)
        output_accepts, output_schema = self.output_schema.accepts, self.output_schema
        add = outputs.adder(self.output)
        # outputs are plain dicts (see Deriver.derive): a key of top-level fields is read
        # with one C call, and require() explains a key that is missing
        output_key = self.output_key.getter or self.output_key.require
        explain = self.output_key.require

        def apply(document: Document, begin: int) -> None:
            if not accepts(document):
                problem = source_schema.problem(document)
                if problem is not None:
                    raise DocumentRejected(problem)
            for output in derive(document):
                if not output_accepts(output):
                    problem = output_schema.problem(output)
                    if problem is not None:
                        raise DocumentRejected(f"an output fails: {problem}")
                try:
                    try:
                        output_key(output)
                    except (KeyError, TypeError):
                        explain(output)
                except MissingKey as exc:
                    raise DocumentRejected(f"an output lacks its key: {exc}") from None
                add(output)

        return apply
