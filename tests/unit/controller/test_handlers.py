"""The kopf registry: which handlers run on the event loop, and what an index keeps."""

from __future__ import annotations

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
    assert len(handlers) >= 14
    blocking = [h.id for h in handlers if not inspect.iscoroutinefunction(h.fn)]
    assert blocking == []


def test_kopf_watches_no_secrets() -> None:
    # a kopf watch streams every Secret of the cluster, values and all (see secrets.py)
    watched = {h.selector.any_name for h in registry_handlers() if h.selector is not None}
    assert "tasks" in watched
    assert "secrets" not in watched
