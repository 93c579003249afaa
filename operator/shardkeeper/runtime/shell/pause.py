"""``SHARDKEEPER_PAUSE_AT``: a test's way to pause a real replica process at one named
step (a :class:`RuntimeFaultPoint`), as a machine that freezes a process would.

The process sends itself SIGSTOP the first time it reaches the point; the test sees it
stopped, does what it wants meanwhile, and sends SIGCONT. Unset (always, in a pod the
operator made), it is :data:`NO_RUNTIME_FAULTS`.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Mapping

from shardkeeper.runtime.core.faults import NO_RUNTIME_FAULTS, RuntimeFaultPoint, RuntimeFaults

log = logging.getLogger(__name__)

PAUSE_AT = "SHARDKEEPER_PAUSE_AT"


class PauseOnce:
    """Stops this process the first time ``point`` is reached."""

    def __init__(self, point: RuntimeFaultPoint) -> None:
        self.point = point
        self._lock = threading.Lock()
        self._paused = False

    def reached(self, point: RuntimeFaultPoint) -> None:
        if point is not self.point:
            return
        with self._lock:
            if self._paused:
                return
            self._paused = True
        log.warning("pausing at %s (%s)", point.name, point.value)
        os.kill(os.getpid(), signal.SIGSTOP)
        log.warning("resumed at %s", point.name)


def pause_from_env(env: Mapping[str, str]) -> RuntimeFaults:
    """The hook ``SHARDKEEPER_PAUSE_AT`` asks for; a ValueError names a bad point."""
    name = env.get(PAUSE_AT, "").strip()
    if not name:
        return NO_RUNTIME_FAULTS
    try:
        return PauseOnce(RuntimeFaultPoint[name])
    except KeyError:
        known = ", ".join(p.name for p in RuntimeFaultPoint)
        raise ValueError(f"{PAUSE_AT}={name!r} names no fault point (one of {known})") from None
