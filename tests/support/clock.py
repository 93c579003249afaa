"""A monotonic clock for unit tests of timing logic: it moves only when the test moves it.

It is also a :class:`shardkeeper.runtime.core.timer.Timer`: a processor given it waits for
a message with no real timeout, and each move of the clock puts a WAKE on the channel being
waited on, so the processor looks at its deadlines again exactly when the time changed.
"""

from __future__ import annotations

import contextlib
import queue
import threading

from shardkeeper.runtime.core.messages import WAKE, Message


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self._now = now
        self._changed = threading.Condition()
        # the channels waited on, and the timeout each waiter asked for
        self._waiting: dict[int, tuple[queue.Queue[Message], float | None]] = {}
        self._moves = 0  # how many times the clock was moved
        self._read = threading.local()  # ``_moves`` when this thread last read the clock

    @property
    def now(self) -> float:
        return self._now

    @now.setter
    def now(self, value: float) -> None:
        with self._changed:
            self._now = value
            self._moves += 1
            for channel, _ in self._waiting.values():
                with contextlib.suppress(queue.Full):
                    channel.put_nowait(WAKE)

    def __call__(self) -> float:
        with self._changed:
            self._read.moves = self._moves
            return self._now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def wait(self, channel: queue.Queue[Message], timeout: float | None) -> Message | None:
        """Timer.wait on this clock: a timeout runs out only when the clock is moved, which
        wakes the waiter with WAKE (it looks at the clock again); no real time counts."""
        if timeout is not None and timeout <= 0:
            try:
                return channel.get_nowait()
            except queue.Empty:
                return None
        me = threading.get_ident()
        with self._changed:
            if getattr(self._read, "moves", self._moves) != self._moves:
                # moved since the waiter read it: its timeout is out of date
                return WAKE
            self._waiting[me] = (channel, timeout)
            self._changed.notify_all()
        try:
            return channel.get()
        finally:
            with self._changed:
                del self._waiting[me]
                self._changed.notify_all()

    def blocked(self, timeout: float | None, *, real: float = 10.0) -> None:
        """Wait (``real`` seconds at most) until a waiter that asked for ``timeout`` seconds
        of this clock (``None``: no deadline) is in :meth:`wait`."""
        with self._changed:
            if not self._changed.wait_for(
                lambda: any(_same(t, timeout) for _, t in self._waiting.values()), real
            ):
                asked = [t for _, t in self._waiting.values()]
                raise TimeoutError(f"no wait for {timeout}s within {real}s (waits: {asked})")


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) < 1e-9
