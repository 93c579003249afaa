"""A work queue of objects to reconcile, with the guarantees of client-go's workqueue.

- A key is in the queue at most once, however many events ask for it.
- A key is reconciled by one worker at a time; if it is asked for while a worker has it,
  it is queued again when that worker is done, so the last change is never missed.
- A failed key comes back after an exponential back-off per key; a success resets it.
- A key can be asked for after a delay (periodic checks, waiting on something unwatched).
- A key can be urgent (a new Task or Shard): urgent keys go before the others, so new
  work is not stuck behind status updates.

Nothing in it is needed for correctness after a restart: the watches list every object
again, and every reconcile starts from what is observed.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from typing import NamedTuple

from shardkeeper.controller.engine import metrics


class Key(NamedTuple):
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclasses.dataclass(frozen=True)
class Backoff:
    base: float = 0.5
    cap: float = 60.0

    def delay(self, failures: int) -> float:
        return float(min(self.cap, self.base * 2 ** max(0, failures - 1)))


class WorkQueue:
    def __init__(self, backoff: Backoff | None = None) -> None:
        self.backoff = backoff or Backoff()
        self._urgent: collections.deque[Key] = collections.deque()
        self._queue: collections.deque[Key] = collections.deque()
        self._dirty: set[Key] = set()
        self._processing: set[Key] = set()
        self._failures: collections.Counter[Key] = collections.Counter()
        self._timers: dict[Key, tuple[float, asyncio.TimerHandle]] = {}
        self._wakeup = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        return len(self._urgent) + len(self._queue)

    def add(self, key: Key, *, urgent: bool = False) -> None:
        if self._closed:
            return
        if key in self._dirty:
            if urgent and key in self._queue:
                self._queue.remove(key)
                self._urgent.append(key)
            return
        self._dirty.add(key)
        if key not in self._processing:
            (self._urgent if urgent else self._queue).append(key)
            self._changed()

    def add_after(self, key: Key, delay: float) -> None:
        """Queue ``key`` in ``delay`` seconds; an earlier request for it wins."""
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        pending = self._timers.get(key)
        if pending is not None:
            if pending[0] <= due:
                return
            pending[1].cancel()
        self._timers[key] = (due, loop.call_at(due, self._fire, key))

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def get(self) -> Key:
        while not (self._urgent or self._queue):
            if self._closed:
                raise asyncio.CancelledError
            self._wakeup.clear()
            await self._wakeup.wait()
        key = self._urgent.popleft() if self._urgent else self._queue.popleft()
        self._processing.add(key)
        self._dirty.discard(key)
        self._changed()
        return key

    def done(self, key: Key) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.append(key)
            self._changed()

    def failed(self, key: Key) -> float:
        """Count a failure of ``key``; the delay before it should be tried again."""
        self._failures[key] += 1
        return self.backoff.delay(self._failures[key])

    def forget(self, key: Key) -> None:
        self._failures.pop(key, None)

    def close(self) -> None:
        self._closed = True
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._wakeup.set()

    def _changed(self) -> None:
        metrics.QUEUE_DEPTH.set(len(self))
        if len(self):
            self._wakeup.set()
