"""How the transaction loop tells time and waits: for a message, a deadline or a stop
request, whichever comes first, without polling.

The loop waits on its read channel only. A deadline (the end of ``minTxnDuration``) is the
timeout of that wait, and whatever else must wake it puts :data:`.messages.WAKE` on the
channel: the committer when a commit is done or failed, and a :class:`StopSignal` when it is
set. A :class:`Timer` is the clock those deadlines are on and the way to wait for them;
:data:`MONOTONIC` is the real one, and tests give the processor one they move by hand.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Protocol

from shardkeeper.runtime.core.messages import Message


class Timer(Protocol):
    def __call__(self) -> float:
        """Now, in seconds of a monotonic clock."""
        ...

    def wait(self, channel: queue.Queue[Message], timeout: float | None) -> Message | None:
        """The channel's next message, waiting for one up to ``timeout`` seconds of this
        clock (``None``: until one comes; 0 or less: not at all); ``None`` if none came.
        It may return early with :data:`.messages.WAKE` (the caller looks at the clock
        again)."""
        ...


class MonotonicTimer:
    """The real timer: ``time.monotonic``, and waits as long as asked, no longer."""

    def __call__(self) -> float:
        return time.monotonic()

    def wait(self, channel: queue.Queue[Message], timeout: float | None) -> Message | None:
        try:
            if timeout is None:
                return channel.get()
            if timeout <= 0:
                return channel.get_nowait()
            return channel.get(timeout=timeout)
        except queue.Empty:
            return None

    def __repr__(self) -> str:
        return "MONOTONIC"


MONOTONIC = MonotonicTimer()


class StopSignal(threading.Event):
    """A stop request that wakes whoever waits for it elsewhere than on the event itself:
    :meth:`set` calls the listeners (the processor puts a WAKE on its read channel, so
    the loop sees the request at once instead of at its next poll)."""

    def __init__(self) -> None:
        super().__init__()
        self._listeners_lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    def listen(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` when the signal is set (now, if it already is); returns what
        takes it off again."""
        with self._listeners_lock:
            self._listeners.append(listener)
        if self.is_set():
            listener()

        def forget() -> None:
            with self._listeners_lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return forget

    def set(self) -> None:
        super().set()
        with self._listeners_lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener()
