"""When a transaction stops reading: Gazette's dynamic transactions. Pure.

A transaction begins when its first message is ready. It goes on taking messages while
more are ready; when none is, it waits for one only while it is younger than
``minTxnDuration``, and it stops reading once it is ``maxTxnDuration`` old, ready
messages or not. A shard asked to stop closes the transaction at once (and commits it).
"""

from __future__ import annotations

import dataclasses

from shardkeeper.api.task import TaskSpec


@dataclasses.dataclass(frozen=True)
class TxnTiming:
    """``minTxnDuration`` and ``maxTxnDuration`` in seconds."""

    min_duration: float
    max_duration: float

    def __post_init__(self) -> None:
        if not 0 <= self.min_duration <= self.max_duration or self.max_duration <= 0:
            raise ValueError(
                f"need 0 <= minTxnDuration ({self.min_duration}s) <= maxTxnDuration "
                f"({self.max_duration}s) and maxTxnDuration > 0"
            )

    @classmethod
    def of(cls, spec: TaskSpec) -> TxnTiming:
        return cls(
            spec.shards.min_txn_duration.total_seconds(),
            spec.effective_max_txn_duration().total_seconds(),
        )

    def reading(self, elapsed: float) -> bool:
        """Whether a transaction ``elapsed`` seconds old may still take messages."""
        return elapsed < self.max_duration

    def wait_for_more(self, elapsed: float) -> float:
        """How long a transaction ``elapsed`` seconds old waits for a message when none is
        ready; 0 means it stops reading now."""
        if elapsed >= self.max_duration or elapsed >= self.min_duration:
            return 0.0
        return self.min_duration - elapsed

    def remaining(self, elapsed: float) -> float:
        """Seconds until the transaction must stop reading."""
        return max(0.0, self.max_duration - elapsed)
