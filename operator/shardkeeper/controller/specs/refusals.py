"""Refusals: an object derived from a Task or Shard that the API server will not take (pure).

The CRDs refuse up front what they can foresee (see api/); what they cannot (a pod template
field passed through, an admission policy, a quota, a rule of a newer API server) comes
back from the apply. Such an answer is about the object, not the connection: sending the
same object again gets the same answer until someone changes the spec or the cluster's
rules. So it is shown in the owner's conditions and tried again only after a back-off.
"""

from __future__ import annotations

import dataclasses

from shardkeeper.controller.specs import conditions as cond
from shardkeeper.controller.specs.conditions import REFUSED

# 400 malformed, 403 forbidden (admission webhooks, quotas, LimitRanges, RBAC escalation),
# 413 too large, 422 invalid (validation, ValidatingAdmissionPolicies).
REFUSING_STATUSES = frozenset({400, 403, 413, 422})
# Server-side apply answers 500 when the object does not fit the kind's schema (an
# unknown field, a duplicate list key): no retry changes that.
TYPED_PATCH_FAILURE = "failed to create typed patch object"


def is_refusal(status: int, message: str) -> bool:
    """Whether an apply's error answer refuses the object itself (see the module doc)."""
    return status in REFUSING_STATUSES or (
        status == 500 and message.startswith(TYPED_PATCH_FAILURE)
    )


@dataclasses.dataclass(frozen=True)
class Refusal:
    """The API server refused to apply ``kind`` ``name``, in its own words."""

    kind: str
    name: str
    status: int
    message: str

    @property
    def text(self) -> str:
        return f"the API server refused {self.kind} {self.name} ({self.status}): {self.message}"


def refused_verdicts(refusal: Refusal, *, running: bool) -> tuple[cond.ConditionValue, ...]:
    """What a refusal makes of Degraded, and of Ready and Progressing unless the owner
    still runs what was applied before (``running``: only a change was refused)."""
    degraded = cond.degraded(True, REFUSED, refusal.text)
    if running:
        return (degraded,)
    return (
        cond.ready(False, REFUSED, refusal.text),
        cond.progressing(False, REFUSED, refusal.text),
        degraded,
    )
