"""What each kind's handler takes: a capture only captured documents, a source handler only
source documents, each through :meth:`apply` and, in batches, through ``source_applier``."""

from __future__ import annotations

from typing import Any, cast

import pytest

from shardkeeper.runtime.core.documents import Document
from shardkeeper.runtime.core.handler import SourceHandler, TaskHandler
from shardkeeper.runtime.core.messages import CapturedDocuments, SourceDocument
from shardkeeper.runtime.core.outputs import OutputBuffer
from shardkeeper.runtime.kinds.capture import CaptureHandler
from shardkeeper.storage.store import Transaction

TXN = cast(Transaction, None)


class Outputs:
    def __init__(self) -> None:
        self.added: list[tuple[str, Document]] = []

    def add(self, collection: str, document: Document) -> None:
        self.added.append((collection, document))


class Recording(SourceHandler):
    reads = "a recording handler"

    def __init__(self) -> None:
        self.applied: list[tuple[str, Document, str, int]] = []

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
        self.applied.append((collection, document, journal, begin))


def test_a_capture_applies_captured_documents_and_refuses_source_documents() -> None:
    handler: TaskHandler = CaptureHandler()
    outputs = Outputs()
    buffer = cast(OutputBuffer, outputs)
    assert handler.apply(TXN, CapturedDocuments("orders", [{"id": 1}, {"id": 2}]), buffer) == 2
    assert outputs.added == [("orders", {"id": 1}), ("orders", {"id": 2})]
    source = SourceDocument("orders", "j", 0, 10, 0, {"id": 3})
    with pytest.raises(TypeError, match="captured documents, not"):
        handler.apply(TXN, source, buffer)
    refuse = handler.source_applier(TXN, "orders", buffer, "collections/ns/orders/w")
    with pytest.raises(TypeError, match="not documents of collections/ns/orders/w"):
        refuse({"id": 4}, 0)
    assert len(outputs.added) == 2


def test_a_source_handler_applies_source_documents_one_by_one_or_by_batch() -> None:
    handler = Recording()
    buffer = cast(OutputBuffer, Outputs())
    assert handler.apply(TXN, SourceDocument("orders", "j", 5, 9, 0, {"id": 1}), buffer) == 1
    apply = handler.source_applier(TXN, "orders", buffer, "k")
    apply({"id": 2}, 9)
    assert handler.applied == [("orders", {"id": 1}, "j", 5), ("orders", {"id": 2}, "k", 9)]
    with pytest.raises(TypeError, match="a recording handler reads source documents"):
        handler.apply(TXN, cast(Any, CapturedDocuments("orders", [])), buffer)
