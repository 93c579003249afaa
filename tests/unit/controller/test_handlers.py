"""The kopf registry: which handlers run on the event loop, and what an index keeps."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, cast

from shardkeeper.controller.engine.handlers import build_registry
from shardkeeper.controller.engine.manager import Manager


def registry_handlers() -> list[Any]:
    # the handlers only close over the manager; none of these tests calls it
    registry = build_registry(cast(Manager, None))
    return [
        *registry._indexing.get_all_handlers(),
        *registry._watching.get_all_handlers(),
    ]


def test_index_and_event_handlers_are_coroutines() -> None:
    # kopf runs a synchronous handler in a thread of its pool for every call
    handlers = registry_handlers()
    assert len(handlers) >= 16
    blocking = [h.id for h in handlers if not inspect.iscoroutinefunction(h.fn)]
    assert blocking == []


def test_secret_index_keeps_only_key_names_and_version() -> None:
    by_id = {h.id: h for h in registry_handlers()}
    body = {
        "metadata": {"name": "creds", "namespace": "ns", "resourceVersion": "7"},
        "data": {"accessKey": "c2VjcmV0"},
        "stringData": {"secretKey": "plain"},
    }
    kept = asyncio.run(
        by_id["secret_index"].fn(namespace="ns", name="creds", body=body, meta=body["metadata"])
    )
    (view,) = kept.values()
    assert list(kept) == [("ns", "creds")]
    assert view.keys == frozenset({"accessKey", "secretKey"})
    assert view.resource_version == "7"
    assert "c2VjcmV0" not in repr(view)
    assert "plain" not in repr(view)
