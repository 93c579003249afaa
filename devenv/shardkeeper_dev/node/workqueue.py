"""Keys to reconcile on one thread, each at most once at a time, retried after failures.

Reconcilers are level-based: they read the current object from a cache, so a key queued
many times is handled once, and a retry sees the newest state.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

RETRY_FIRST = 0.5
RETRY_MAX = 30.0


class KeysToReconcile:
    """String keys due for ``reconcile``, run on the caller's thread with retries. Not the
    operator's ``controller.engine.queue.WorkQueue``: that one is asyncio and hands typed
    keys to workers that report ``done``/``failed`` themselves."""

    def __init__(self, name: str, reconcile: Callable[[str], None]) -> None:
        self.name = name
        self._reconcile = reconcile
        self._due: list[tuple[float, str]] = []
        self._queued: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._cond = threading.Condition()

    def add(self, key: str, delay: float = 0.0) -> None:
        when = time.monotonic() + delay
        with self._cond:
            if key in self._queued and self._queued[key] <= when:
                return
            self._queued[key] = when
            heapq.heappush(self._due, (when, key))
            self._cond.notify()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            key = self._next(stop)
            if key is None:
                continue
            try:
                self._reconcile(key)
                self._failures.pop(key, None)
            except Exception as err:
                count = self._failures.get(key, 0) + 1
                self._failures[key] = count
                delay = min(RETRY_FIRST * 2 ** (count - 1), RETRY_MAX)
                log.warning("%s %s failed (retry in %.1fs): %s", self.name, key, delay, err)
                self.add(key, delay)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _next(self, stop: threading.Event) -> str | None:
        with self._cond:
            while not stop.is_set():
                now = time.monotonic()
                while self._due and self._queued.get(self._due[0][1]) != self._due[0][0]:
                    heapq.heappop(self._due)  # superseded by an earlier entry
                if self._due and self._due[0][0] <= now:
                    _, key = heapq.heappop(self._due)
                    del self._queued[key]
                    return key
                timeout = self._due[0][0] - now if self._due else 1.0
                self._cond.wait(min(timeout, 1.0))
        return None
