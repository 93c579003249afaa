"""List-then-watch with resourceVersion bookkeeping: a local copy of a set of objects,
kept current from one watch per namespace, re-listed when the server answers 410 Gone.

Handlers run on the informer's thread; they must be quick (enqueue, wake a worker).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from shardkeeper_dev.node import timing
from shardkeeper_dev.node.kube import ApiError, Kube, key_of

log = logging.getLogger(__name__)

Handler = Callable[[str, dict[str, Any]], None]


class ObjectsByKey:
    """Raw JSON objects by ``namespace/name`` (or name), shared by the informers that fill
    it. Not the operator's ``controller.engine.cache.Cache``, which holds typed, indexed
    views of its own kinds."""

    def __init__(self) -> None:
        self._objects: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self._objects.get(key)

    def values(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._objects.values())

    def put(self, obj: dict[str, Any]) -> None:
        with self._lock:
            self._objects[key_of(obj)] = obj

    def remove(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self._objects.pop(key, None)


class Gone(Exception):
    """The watch's resourceVersion is too old: list again."""


class Informer:
    def __init__(
        self,
        kube: Kube,
        path: str,
        cache: ObjectsByKey,
        handlers: Iterable[Handler],
        *,
        query: Mapping[str, str] | None = None,
    ) -> None:
        self._kube = kube
        self._path = path
        self._cache = cache
        self._handlers = list(handlers)
        self._query = dict(query or {})
        # the keys this informer put into the shared cache, to know what a re-list removed
        self._keys: set[str] = set()
        self.synced = threading.Event()

    def run(self, stop: threading.Event) -> None:
        version: str | None = None
        while not stop.is_set():
            try:
                if version is None:
                    version = self._relist()
                version = self._watch(version, stop)
            except Gone:
                version = None
            except ApiError as err:
                if err.status == 410:
                    version = None
                else:
                    log.warning("watching %s: %s", self._path, err)
                    stop.wait(timing.WATCH_RETRY)
            except Exception as err:  # connection trouble: the server may be restarting
                log.warning("watching %s: %r", self._path, err)
                stop.wait(timing.WATCH_RETRY)

    def _relist(self) -> str:
        listing = self._kube.request("GET", self._path, query=self._query)
        fresh = {key_of(obj): obj for obj in listing.get("items") or []}
        kind = listing.get("kind", "").removesuffix("List")
        for key in sorted(self._keys - fresh.keys()):
            gone = self._cache.remove(key)
            if gone is not None:
                self._dispatch("DELETED", gone)
        for obj in fresh.values():
            # list items carry no kind; handlers may want it
            obj.setdefault("kind", kind)
            obj.setdefault("apiVersion", listing.get("apiVersion", "v1"))
            self._cache.put(obj)
            self._dispatch("ADDED", obj)
        self._keys = set(fresh)
        self.synced.set()
        return str(listing["metadata"]["resourceVersion"])

    def _watch(self, version: str, stop: threading.Event) -> str:
        query = {
            **self._query,
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timing.WATCH_TIMEOUT),
        }
        for event in self._kube.watch(self._path, query, read_timeout=timing.WATCH_READ_TIMEOUT):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise Gone
                raise ApiError(int(obj.get("code") or 0), str(obj.get("reason")), obj)
            version = str(obj["metadata"]["resourceVersion"])
            if kind == "BOOKMARK":
                continue
            key = key_of(obj)
            if kind == "DELETED":
                self._cache.remove(key)
                self._keys.discard(key)
            else:
                self._cache.put(obj)
                self._keys.add(key)
            self._dispatch(str(kind), obj)
            if stop.is_set():
                break
        return version

    def _dispatch(self, kind: str, obj: dict[str, Any]) -> None:
        for handler in self._handlers:
            try:
                handler(kind, obj)
            except Exception:
                log.exception("handling %s %s", kind, key_of(obj))
