"""Named steps of a transaction's commit and of a replica's takeover, for fault
injection, in the style of :mod:`shardkeeper.storage.faults`.

The processor (and the replica, ``runtime/shell/replica.py``) calls
``faults.reached(point)`` at each step. In production that does nothing; tests pass a hook
that raises at a chosen point, standing in for the process dying there, then run a new
processor on the same log to show that outputs still appear exactly once. A test of real
processes names a point in ``SHARDKEEPER_PAUSE_AT`` instead (``runtime/shell/pause.py``):
the process stops itself there, as a replica paused by the machine would.
"""

from __future__ import annotations

import enum
from typing import Protocol


class RuntimeFaultPoint(enum.Enum):
    DOCUMENTS_APPLIED = "txn: documents applied and rows written, store not yet committed"
    STORE_COMMITTED = "txn: store commit landed in the recovery log, no output appended"
    BATCH_APPENDED = "txn: one output batch appended"
    OUTPUTS_APPENDED = "txn: every output batch appended, not yet acknowledged"
    PENDING_REAPPENDED = "start: batches the last commit left pending appended again"
    # the replica's takeover (runtime/shell/replica.py)
    TAKEOVER_BEGUN = "takeover: won the Lease, no epoch chosen yet"
    FENCE_DUE = "takeover: epoch chosen and the Lease checked, the log not yet fenced"


class RuntimeFaults(Protocol):
    def reached(self, point: RuntimeFaultPoint) -> None: ...


class NoRuntimeFaults:
    def reached(self, point: RuntimeFaultPoint) -> None:
        return None


NO_RUNTIME_FAULTS: RuntimeFaults = NoRuntimeFaults()
