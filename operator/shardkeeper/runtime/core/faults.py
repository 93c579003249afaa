"""Named steps of a transaction's commit, for fault injection, in the style of
:mod:`shardkeeper.storage.faults`.

The processor calls ``faults.reached(point)`` at each step. In production that does
nothing; tests pass a hook that raises at a chosen point, standing in for the process
dying there, then run a new processor on the same log to show that outputs still appear
exactly once.
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


class RuntimeFaults(Protocol):
    def reached(self, point: RuntimeFaultPoint) -> None: ...


class NoRuntimeFaults:
    def reached(self, point: RuntimeFaultPoint) -> None:
        return None


NO_RUNTIME_FAULTS: RuntimeFaults = NoRuntimeFaults()
