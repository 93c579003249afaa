"""Named step boundaries of the commit, append and snapshot paths, for fault injection.

The storage code calls ``faults.reached(point)`` at each boundary. In production that does
nothing; tests pass a hook that raises (or exits the process) at a chosen point, to prove
that a crash there loses nothing that was committed and shows nothing that was not.
"""

from __future__ import annotations

import enum
from typing import Protocol


class FaultPoint(enum.Enum):
    # commit path of the shard store
    COMMIT_BEGUN = "commit: transaction begun"
    COMMIT_STATEMENTS_RUN = "commit: statements run, not yet committed locally"
    COMMIT_LOCAL = "commit: committed in the local database, not yet appended"
    COMMIT_RECORD_BUILT = "commit: record built from the WAL frames"
    APPEND_BEFORE_PUT = "append: fragment encoded, not yet sent"
    APPEND_AFTER_PUT = "append: fragment created in the bucket, not yet acknowledged"
    COMMIT_APPENDED = "commit: record appended to the recovery log"
    COMMIT_ACKNOWLEDGED = "commit: commit returned to the caller"
    # snapshot path
    SNAPSHOT_BEGUN = "snapshot: read transaction pinned"
    SNAPSHOT_PART_WRITTEN = "snapshot: one data part written"
    SNAPSHOT_DATA_WRITTEN = "snapshot: every data part written, no manifest yet"
    SNAPSHOT_MANIFEST_WRITTEN = "snapshot: manifest written"
    # local replay
    REPLAY_PAGES_WRITTEN = "replay: pages written to the database file, not yet marked clean"


#: the points of a commit, in the order a commit reaches them
COMMIT_POINTS = (
    FaultPoint.COMMIT_BEGUN,
    FaultPoint.COMMIT_STATEMENTS_RUN,
    FaultPoint.COMMIT_LOCAL,
    FaultPoint.COMMIT_RECORD_BUILT,
    FaultPoint.APPEND_BEFORE_PUT,
    FaultPoint.APPEND_AFTER_PUT,
    FaultPoint.COMMIT_APPENDED,
    FaultPoint.COMMIT_ACKNOWLEDGED,
)
#: from this point on a commit is durable: recovery must show it
COMMIT_DURABLE_FROM = FaultPoint.APPEND_AFTER_PUT

SNAPSHOT_POINTS = (
    FaultPoint.SNAPSHOT_BEGUN,
    FaultPoint.SNAPSHOT_PART_WRITTEN,
    FaultPoint.SNAPSHOT_DATA_WRITTEN,
    FaultPoint.SNAPSHOT_MANIFEST_WRITTEN,
)


class Faults(Protocol):
    def reached(self, point: FaultPoint) -> None: ...


class NoFaults:
    def reached(self, point: FaultPoint) -> None:
        return None


NO_FAULTS: Faults = NoFaults()
