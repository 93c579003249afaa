"""Conditions as values: what each of Ready, Progressing and Degraded should say now, and
which of them changed, for the Events a person sees.

``Reconciling`` and ``Stalled`` follow from those three, for tools that read status the
kstatus way (Flux, ``kubectl wait``-like health checks): Reconciling is Progressing, and
Stalled is "not Ready, and Degraded": it will not get better without a person."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from datetime import datetime

from shardkeeper.api.meta import (
    DEGRADED,
    PROGRESSING,
    READY,
    Condition,
    ConditionStatus,
    find_condition,
    set_condition,
)

TRUE, FALSE = ConditionStatus.TRUE, ConditionStatus.FALSE
RECONCILING = "Reconciling"
STALLED = "Stalled"
_REASON = re.compile(r"^[A-Z][A-Za-z0-9]*$")
MAX_MESSAGE = 4096
# An object derived from the resource that the API server refused (see refusals.py).
REFUSED = "DerivedObjectRefused"
# Reasons whose message is news of its own: another object refused, or another answer.
NEWS_IN_MESSAGE = frozenset({REFUSED})


@dataclasses.dataclass(frozen=True)
class ConditionValue:
    """The value one condition should have."""

    type: str
    status: ConditionStatus
    reason: str
    message: str

    def __post_init__(self) -> None:
        if not _REASON.match(self.reason):
            raise ValueError(f"condition reason {self.reason!r} is not a CamelCase word")


PAUSED_ANNOTATION = "shardkeeper.io/paused"
"""On a Task, ``"true"``: the operator changes nothing of it for now (see paused())."""
PAUSED = "Paused"


def is_paused(annotations: dict[str, str] | None) -> bool:
    return (annotations or {}).get(PAUSED_ANNOTATION) == "true"


def paused(verdicts: Sequence[ConditionValue]) -> list[ConditionValue]:
    """The verdicts of a paused Task or Shard: Progressing says so instead; Ready and
    Degraded go on saying what the replicas report."""
    message = (
        f"reconciling is paused by the annotation {PAUSED_ANNOTATION}=true: no workload "
        "change, roll, new shard or new split until it is removed (a split under way "
        "carries on)"
    )
    return [progressing(False, PAUSED, message) if v.type == PROGRESSING else v for v in verdicts]


def ready(status: bool, reason: str, message: str) -> ConditionValue:
    return ConditionValue(READY, TRUE if status else FALSE, reason, message)


def progressing(status: bool, reason: str, message: str) -> ConditionValue:
    return ConditionValue(PROGRESSING, TRUE if status else FALSE, reason, message)


def degraded(status: bool, reason: str, message: str) -> ConditionValue:
    return ConditionValue(DEGRADED, TRUE if status else FALSE, reason, message)


def merge(
    previous: Sequence[Condition],
    verdicts: Sequence[ConditionValue],
    *,
    generation: int | None,
    now: datetime,
) -> list[Condition]:
    """The conditions with each verdict applied; a transition time moves only with its
    status, so re-applying the same verdicts changes nothing but what they say."""

    def apply(conditions: list[Condition], values: Sequence[ConditionValue]) -> list[Condition]:
        for value in values:
            conditions = set_condition(
                conditions,
                value.type,
                value.status,
                value.reason,
                value.message[:MAX_MESSAGE],
                observed_generation=generation,
                now=now,
            )
        return conditions

    conditions = apply(list(previous), verdicts)
    return apply(conditions, kstatus(conditions))


def kstatus(conditions: Sequence[Condition]) -> list[ConditionValue]:
    """Reconciling and Stalled, as the other conditions say; none before they are set."""
    found = {c.type: c for c in conditions}
    ready_, progressing_, degraded_ = (found.get(t) for t in (READY, PROGRESSING, DEGRADED))
    out = []
    if progressing_ is not None:
        out.append(
            ConditionValue(
                RECONCILING, progressing_.status, progressing_.reason, progressing_.message
            )
        )
    if ready_ is not None and degraded_ is not None:
        stalled = ready_.status == FALSE and degraded_.status == TRUE
        out.append(
            ConditionValue(STALLED, TRUE, degraded_.reason, degraded_.message)
            if stalled
            else ConditionValue(STALLED, FALSE, "NotStalled", "")
        )
    return out


@dataclasses.dataclass(frozen=True)
class Change:
    """A condition that now has another status or reason than before (or, for a reason in
    ``NEWS_IN_MESSAGE``, another message)."""

    verdict: ConditionValue
    before: Condition | None


def changes(previous: Sequence[Condition], verdicts: Sequence[ConditionValue]) -> list[Change]:
    out = []
    for verdict in verdicts:
        before = find_condition(list(previous), verdict.type)
        if before is None or news(before) != news(verdict):
            out.append(Change(verdict, before))
    return out


def news(condition: Condition | ConditionValue) -> tuple[str, str, str]:
    """What of a condition makes news: its status and reason, and its message too for a
    reason in ``NEWS_IN_MESSAGE``."""
    message = condition.message if condition.reason in NEWS_IN_MESSAGE else ""
    return str(condition.status), condition.reason, message[:MAX_MESSAGE]


def is_true(conditions: Sequence[Condition], type_: str) -> bool:
    found = find_condition(list(conditions), type_)
    return found is not None and found.status == TRUE


def is_false(conditions: Sequence[Condition], type_: str) -> bool:
    found = find_condition(list(conditions), type_)
    return found is not None and found.status == FALSE
