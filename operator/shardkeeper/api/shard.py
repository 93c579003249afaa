"""Shard: one unit of a task's execution, owning a key range and an r-clock range."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, Field, StringConstraints

from shardkeeper.api.meta import (
    AGE_COLUMN,
    DNS1123_LABEL_PATTERN,
    GROUP,
    ApiModel,
    Conditions,
    PrinterColumn,
    RangeBound,
    Resource,
    Rule,
    StatusModel,
    Time,
    distinct,
    immutable,
)
from shardkeeper.api.task import TASK_NAME_MAX_LENGTH, SplitBy, TaskName

# "<task>-<keyBegin>-<rClockBegin>": see TASK_NAME_MAX_LENGTH.
SHARD_NAME_MAX_LENGTH = TASK_NAME_MAX_LENGTH + 18
ShardName = Annotated[
    str, StringConstraints(pattern=DNS1123_LABEL_PATTERN, max_length=SHARD_NAME_MAX_LENGTH)
]
JOURNAL_NAME_PATTERN = r"^[A-Za-z0-9_.=+%-]+(/[A-Za-z0-9_.=+%-]+)*$"
JournalName = Annotated[str, StringConstraints(pattern=JOURNAL_NAME_PATTERN, max_length=512)]


def shard_name(task: str, key_begin: int, r_clock_begin: int) -> str:
    """The name of a task's shard: unique, because shards of a task never share both begins."""
    return f"{task}-{key_begin:08x}-{r_clock_begin:08x}"


class ShardPhase(StrEnum):
    """Where a shard is in its life."""

    PENDING = "Pending"
    RECOVERING = "Recovering"
    RUNNING = "Running"
    SPLITTING = "Splitting"
    DISABLED = "Disabled"
    FAILED = "Failed"
    RETIRED = "Retired"


class ReplicaState(StrEnum):
    """Role of one replica of a shard, as in Gazette."""

    IDLE = "IDLE"
    BACKFILL = "BACKFILL"
    STANDBY = "STANDBY"
    PRIMARY = "PRIMARY"
    FAILED = "FAILED"


ROLE_LABEL = f"{GROUP}/role"
"""On a shard pod whose replica is PRIMARY, set by that replica: ``primary``. A capture
task's Service selects it (docs/shard-pod.md)."""
PRIMARY_ROLE = "primary"


class SplitStep(StrEnum):
    """Steps of the split state machine."""

    PLAN = "Plan"
    CHILDREN = "Children"
    CATCH_UP = "CatchUp"
    HAND_OFF = "HandOff"
    FINISH = "Finish"
    DONE = "Done"
    ABORT = "Abort"
    ABORTED = "Aborted"


SPLIT_ENDED = frozenset({SplitStep.DONE, SplitStep.ABORTED})
"""The steps in which no split of the shard is running."""


def _narrows_only(field: str) -> dict[str, Any]:
    """Schema extras for a range end that a split may lower but nothing may raise."""
    rule = Rule("self <= oldSelf", f"{field} may only shrink, as a split narrows it")
    return {"x-kubernetes-validations": [rule.schema()]}


class SplitRequest(ApiModel):
    """Asks the operator to split this shard in two at the middle of one of its ranges."""

    by: SplitBy = SplitBy.KEY
    """Which range to halve: key or rClock."""


class RestoreSource(ApiModel):
    """Where a shard of a restored task starts: another log, up to the end of one commit
    (docs/backup-and-restore.md). The operator sets it when it creates the shard."""

    shard: ShardName
    """The source task's shard whose range this one took."""
    recovery_log: JournalName
    """The recovery log to fork, relative to the StorageMapping's prefix."""
    offset: Annotated[int, Field(ge=0)]
    """The offset in that log just past the commit to start from."""
    seq: Annotated[int, Field(ge=0)] = 0
    """That commit's sequence number."""
    committed_at: Time | None = None
    """When that commit was made (unset for a log written before commits carried a time)."""


class ShardSpec(ApiModel):
    """The slice of a task's work that a shard owns. The operator writes it; a person only
    sets split to ask for a split."""

    task: Annotated[TaskName, Field(json_schema_extra=immutable("task"))]
    """Name of the Task, in the same namespace, that the shard runs. Immutable."""
    key_begin: Annotated[RangeBound, Field(json_schema_extra=immutable("keyBegin"))]
    """First key hash the shard owns (inclusive), 8 lowercase hex digits. Immutable."""
    key_end: Annotated[RangeBound, Field(json_schema_extra=_narrows_only("keyEnd"))]
    """Last key hash the shard owns (inclusive), 8 lowercase hex digits. May only shrink."""
    r_clock_begin: Annotated[RangeBound, Field(json_schema_extra=immutable("rClockBegin"))]
    """First r-clock value the shard owns (inclusive), 8 lowercase hex digits. Immutable."""
    r_clock_end: Annotated[RangeBound, Field(json_schema_extra=_narrows_only("rClockEnd"))]
    """Last r-clock value the shard owns (inclusive), 8 lowercase hex digits. May only shrink."""
    recovery_log: Annotated[JournalName, Field(json_schema_extra=immutable("recoveryLog"))]
    """Name of the journal that records every change to the shard's store. Immutable."""
    split_source: ShardName | None = None
    """While a split runs: the parent shard whose recovery log this shard is built from."""
    split_targets: Annotated[
        list[ShardName],
        AfterValidator(distinct),
        Field(max_length=2, json_schema_extra={"x-kubernetes-list-type": "set"}),
    ] = Field(default_factory=list)
    """While a split runs: the shards this shard is being split into."""
    split: SplitRequest | None = None
    """Set to ask for a split; the operator clears it when the split is done or aborted.
    The one field of a Shard that people write."""
    restore_source: Annotated[
        RestoreSource | None, Field(json_schema_extra=immutable("restoreSource"))
    ] = None
    """For a shard of a task with spec.restoreFrom: the log and offset its store starts
    from. Immutable."""

    RULES = (
        Rule(
            "self.keyBegin <= self.keyEnd",
            "keyBegin must not exceed keyEnd",
            field_path=".keyBegin",
            holds=lambda s: s.key_begin <= s.key_end,
        ),
        Rule(
            "self.rClockBegin <= self.rClockEnd",
            "rClockBegin must not exceed rClockEnd",
            field_path=".rClockBegin",
            holds=lambda s: s.r_clock_begin <= s.r_clock_end,
        ),
        Rule(
            "!has(self.split) || (self.split.by == 'key' ? self.keyBegin != self.keyEnd "
            ": self.rClockBegin != self.rClockEnd)",
            "the range to split holds a single value and cannot be halved",
            field_path=".split",
            holds=lambda s: (
                s.split is None
                or (
                    s.key_begin != s.key_end
                    if s.split.by == SplitBy.KEY
                    else s.r_clock_begin != s.r_clock_end
                )
            ),
        ),
        Rule(
            "!has(self.split) || !has(self.splitSource)",
            "a shard that a split is still building (splitSource is set) cannot be split",
            field_path=".split",
            holds=lambda s: s.split is None or s.split_source is None,
        ),
    )

    def pivot(self, by: SplitBy) -> int:
        """First value of the upper half when the range is split: (begin + end + 1) / 2."""
        if by == SplitBy.KEY:
            return (self.key_begin + self.key_end + 1) // 2
        return (self.r_clock_begin + self.r_clock_end + 1) // 2


class CommitPoint(StatusModel):
    """A commit: when, and at which recovery-log offset."""

    time: Time | None = None
    """When the transaction committed."""
    offset: Annotated[int, Field(ge=0)] | None = None
    """Recovery-log offset just past the commit."""


class ReplicaStatus(StatusModel):
    """One replica (pod) of the shard."""

    pod: str
    """Name of the pod."""
    state: ReplicaState
    """IDLE, BACKFILL (restoring), STANDBY (tailing the log), PRIMARY or FAILED."""
    epoch: Annotated[int, Field(ge=0)] = 0
    """Epoch of the primary that this replica follows or is."""
    last_commit: CommitPoint | None = None
    """Last commit this replica has applied."""
    lag: Annotated[int, Field(ge=0)] | None = None
    """Bytes of the recovery log this replica has not applied yet."""
    recovery_log_head: Annotated[int, Field(ge=0)] | None = None
    """Recovery-log offset this replica has read up to."""
    message: Annotated[str, StringConstraints(max_length=4096)] = ""
    """Why the replica failed, if it did."""


class Checkpoint(StatusModel):
    """Summary of the shard's last committed checkpoint."""

    committed_at: Time | None = None
    """When it was committed."""
    transactions: Annotated[int, Field(ge=0)] = 0
    """Transactions committed since the shard was created."""
    recovery_log_offset: Annotated[int, Field(ge=0)] | None = None
    """Recovery-log offset just past the commit that recorded it."""
    sources: Annotated[dict[str, Annotated[int, Field(ge=0)]], Field(max_length=256)] = Field(
        default_factory=dict
    )
    """Read offset of each source journal."""


class RecoveryLogPrune(StatusModel):
    """The last automatic prune of the recovery log by a primary (docs/data-plane.md)."""

    at: Time
    """When it ended."""
    kept_from: Annotated[int, Field(ge=0)] = 0
    """Recovery-log offset from which the log's data was kept."""
    log_bytes: Annotated[int, Field(ge=0)] = 0
    """Bytes of the recovery log's fragments left after it (snapshots not counted)."""
    removed_bytes: Annotated[int, Field(ge=0)] = 0
    """Bytes of recovery-log fragments it removed."""
    removed_objects: Annotated[int, Field(ge=0)] = 0
    """Objects it deleted: fragments, old snapshots' manifests and data, fork registrations."""


class SplitStepRecord(StatusModel):
    """When the split entered a step."""

    step: SplitStep
    """The step."""
    at: Time
    """When the split entered it."""


class SplitProgress(StatusModel):
    """Progress of the split of this (parent) shard, one guarded step at a time."""

    step: SplitStep
    """Current step."""
    by: SplitBy
    """The range being halved."""
    pivot: RangeBound | None = None
    """First value of the upper half, 8 lowercase hex digits."""
    children: Annotated[list[str], Field(max_length=2)] = Field(default_factory=list)
    """Names of the child shards."""
    started_at: Time | None = None
    """When the split was planned."""
    steps: Annotated[list[SplitStepRecord], Field(max_length=16)] = Field(default_factory=list)
    """Every step the split has entered, in order, with its time."""
    message: Annotated[str, StringConstraints(max_length=4096)] = ""
    """Why the split is waiting, or why it was aborted."""


class ShardStatus(StatusModel):
    """Observed state of a Shard."""

    observed_generation: int | None = None
    """The metadata.generation this status describes."""
    conditions: Conditions = Field(default_factory=list)
    """Ready is True while a primary processes (or the shard is disabled)."""
    phase: ShardPhase = ShardPhase.PENDING
    """Pending, Recovering, Running, Splitting, Disabled, Failed or Retired."""
    primary: str | None = None
    """Name of the pod that is primary."""
    epoch: Annotated[int, Field(ge=0)] = 0
    """Epoch of the current primary; it grows by one with each new primary, which fences
    the previous one."""
    replicas: Annotated[
        list[ReplicaStatus],
        Field(
            max_length=8,
            # a map keyed by pod, so each replica server-side-applies only its own entry
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["pod"],
            },
        ),
    ] = Field(default_factory=list)
    """One entry per replica, keyed by pod; each replica writes only its own."""
    checkpoint: Checkpoint | None = None
    """The last committed checkpoint."""
    recovery_log_head: Annotated[int, Field(ge=0)] | None = None
    """Write head of the recovery log: the offset just past its last record."""
    last_prune: RecoveryLogPrune | None = None
    """The primary's last automatic prune of the recovery log (Task spec.shards.pruneEvery)."""
    lag: Annotated[int, Field(ge=0)] | None = None
    """Bytes of source journals within the shard's ranges that the primary has not read."""
    split: SplitProgress | None = None
    """Progress of a split of this shard, while it runs and after it ends."""
    lag_above_since: Time | None = None
    """Since when status.lag has stayed above the Task's autoSplit.lagBytes, as the operator
    saw it; unset while it is not, while the shard splits, and without autoSplit."""


class Shard(Resource):
    """One unit of execution of a task: it owns a key range and an r-clock range.

    Created and owned by the operator, one per shard. Set spec.split to ask for a split;
    everything else is the operator's.
    """

    KIND: ClassVar[str] = "Shard"
    PLURAL: ClassVar[str] = "shards"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("sks",)
    NAME_MAX_LENGTH: ClassVar[int] = SHARD_NAME_MAX_LENGTH
    NAME_PATTERN: ClassVar[str] = DNS1123_LABEL_PATTERN
    PRINTER_COLUMNS: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn(name="Task", type="string", json_path=".spec.task", description="Task"),
        PrinterColumn(
            name="Key Begin",
            type="string",
            json_path=".spec.keyBegin",
            description="First key hash owned",
        ),
        PrinterColumn(
            name="Key End", type="string", json_path=".spec.keyEnd", description="Last key hash"
        ),
        PrinterColumn(
            name="RClock Begin",
            type="string",
            json_path=".spec.rClockBegin",
            description="First r-clock value owned",
        ),
        PrinterColumn(
            name="RClock End",
            type="string",
            json_path=".spec.rClockEnd",
            description="Last r-clock value owned",
        ),
        PrinterColumn(name="Phase", type="string", json_path=".status.phase", description="Phase"),
        PrinterColumn(
            name="Primary",
            type="string",
            json_path=".status.primary",
            description="Pod that is primary",
        ),
        PrinterColumn(
            name="Lag",
            type="integer",
            json_path=".status.lag",
            description="Source bytes not yet read",
        ),
        PrinterColumn(
            name="Epoch",
            type="integer",
            json_path=".status.epoch",
            description="Epoch of the primary",
            priority=1,
        ),
        PrinterColumn(
            name="Split",
            type="string",
            json_path=".status.split.step",
            description="Step of the split",
            priority=1,
        ),
        AGE_COLUMN,
    )

    spec: ShardSpec
    status: ShardStatus = Field(default_factory=ShardStatus)
