"""The informer's bookkeeping: resourceVersions, bookmarks, and a re-list after 410 Gone
that reports what disappeared meanwhile. The API server is scripted."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any, cast

from shardkeeper_dev.node.informer import Informer, ObjectsByKey
from shardkeeper_dev.node.kube import ApiError, Kube


def obj(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": version}}


class ScriptedServer:
    """Answers lists and watches from scripts, and records what it was asked."""

    def __init__(
        self,
        lists: list[list[dict[str, Any]]],
        watches: list[list[dict[str, Any]] | ApiError],
        stop: threading.Event,
    ) -> None:
        self.lists = lists
        self.watches = watches
        self.stop = stop
        self.watched_from: list[str] = []
        self.listed = 0

    def request(self, method: str, path: str, *, query: Mapping[str, Any] | None = None) -> Any:
        items = self.lists[self.listed]
        self.listed += 1
        version = str(10 * self.listed)
        return {
            "kind": "ConfigMapList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": version},
            "items": items,
        }

    def watch(
        self, path: str, query: Mapping[str, Any], *, read_timeout: float
    ) -> Iterator[dict[str, Any]]:
        self.watched_from.append(str(query["resourceVersion"]))
        if not self.watches:
            self.stop.set()
            return
        script = self.watches.pop(0)
        if isinstance(script, ApiError):
            raise script
        yield from script


def run(server: ScriptedServer, stop: threading.Event) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    informer = Informer(
        cast(Kube, server),
        "/api/v1/namespaces/ns/configmaps",
        ObjectsByKey(),
        [lambda kind, o: seen.append((kind, o["metadata"]["name"]))],
    )
    informer.run(stop)
    return seen


def test_watch_resumes_from_the_last_version_and_relists_after_gone() -> None:
    stop = threading.Event()
    server = ScriptedServer(
        lists=[[obj("a", "5"), obj("b", "6")], [obj("a", "30")], [obj("a", "40")]],
        watches=[
            [
                {"type": "MODIFIED", "object": obj("a", "11")},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}},
            ],
            [
                {"type": "ADDED", "object": obj("c", "16")},
                {"type": "ERROR", "object": {"code": 410, "reason": "Expired"}},
            ],
            [{"type": "DELETED", "object": obj("a", "31")}],
            ApiError(410, "Gone", None),
            [],
        ],
        stop=stop,
    )
    seen = run(server, stop)
    assert seen == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("MODIFIED", "a"),
        ("ADDED", "c"),
        # the re-list: b and c went while the watch was gone, a is still there
        ("DELETED", "b"),
        ("DELETED", "c"),
        ("ADDED", "a"),
        ("DELETED", "a"),
        # a 410 answer to the watch request itself means another re-list
        ("ADDED", "a"),
    ]
    # each watch resumes where the previous one ended (bookmarks count); after a 410, the
    # next one starts from the new list's version
    assert server.watched_from == ["10", "15", "20", "31", "30", "30"]
    assert server.listed == 3


def test_other_errors_are_retried_without_a_relist() -> None:
    stop = threading.Event()
    server = ScriptedServer(
        lists=[[obj("a", "1")]],
        watches=[ApiError(500, "Internal", None), []],
        stop=stop,
    )
    # no pause in tests: the retry waits on the stop event, which is not set yet, so
    # shorten it through the module's constant
    from shardkeeper_dev.node import timing

    saved, timing.WATCH_RETRY = timing.WATCH_RETRY, 0.0
    try:
        run(server, stop)
    finally:
        timing.WATCH_RETRY = saved
    assert server.listed == 1
    assert server.watched_from == ["10", "10", "10"]
