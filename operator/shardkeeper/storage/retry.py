"""Back-off policies, as pure functions of their inputs (randomness is passed in).

Retries use "full jitter" (a uniform draw below an exponential cap) so that many writers
throttled at once do not come back in lock-step. Tail polling backs off while a journal is
idle and polls again at once while data keeps arriving.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How long transient object-store faults are retried before giving up."""

    max_attempts: int = 10
    base_delay: float = 0.05
    max_delay: float = 4.0
    # total time budget across attempts, in seconds; whichever limit comes first ends it
    deadline: float = 60.0

    def delay(self, attempt: int, uniform: Callable[[float, float], float]) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        cap = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return uniform(0.0, cap)

    def gives_up(self, attempt: int, elapsed: float, next_delay: float) -> bool:
        return attempt >= self.max_attempts or elapsed + next_delay > self.deadline


@dataclasses.dataclass(frozen=True)
class PollPolicy:
    """Bounds of the delay between polls of a journal's head while tailing.

    Delays double from ``min_delay`` up to ``max_delay`` while a journal is idle. Once it
    has been quiet for ``idle_after`` seconds (the delays waited since the last data,
    summed), they go on doubling up to ``idle_max_delay``: an idle journal costs a request
    every ``idle_max_delay`` instead of every ``max_delay``, while a journal whose data
    comes in bursts still sees each burst within ``max_delay``. (A writer's hint, see
    ``runtime/core/hints.py``, wakes a long wait early.)"""

    min_delay: float = 0.02
    max_delay: float = 2.0
    factor: float = 2.0
    idle_after: float = math.inf
    idle_max_delay: float = 0.0  # 0: no longer than max_delay

    @property
    def longest(self) -> float:
        return max(self.max_delay, self.idle_max_delay)


@dataclasses.dataclass(frozen=True)
class PollBackoff:
    """The state of a tail's polling: the next delay after a poll found data or not."""

    policy: PollPolicy
    current: float = 0.0
    # seconds waited since the last poll that found data
    quiet: float = 0.0

    def after(self, found: bool) -> PollBackoff:
        if found:
            # under load: read the next fragment at once
            return dataclasses.replace(self, current=0.0, quiet=0.0)
        quiet = self.quiet + self.current
        if self.current == 0.0:
            return dataclasses.replace(self, current=self.policy.min_delay, quiet=quiet)
        cap = self.policy.max_delay
        if quiet >= self.policy.idle_after:
            cap = self.policy.longest
        grown = min(cap, max(self.current, self.current * self.policy.factor))
        return dataclasses.replace(self, current=grown, quiet=quiet)

    @property
    def idle_at_max(self) -> bool:
        return self.current >= self.policy.longest
