"""The order in which a shard's pods move to a new template: standbys first, primary last.

The StatefulSet's update strategy is ``OnDelete``: its controller replaces a pod with the
new template only once the pod is deleted, and the operator decides which pod goes, one at
a time. A RollingUpdate cannot express this: it replaces pods from the highest ordinal
down, and its ``partition`` only holds back the pods *below* an ordinal, while the primary
is whichever pod holds the Lease. So:

1. nothing happens while a pod is terminating or missing (one pod at a time);
2. an outdated pod that is not ready serves nothing, so it goes first;
3. otherwise the roll waits until every updated pod is ready again, so a standby is
   tailing the log before the next pod goes;
4. outdated standbys go next, highest ordinal first, and the primary goes last, so that
   it hands over (a clean shutdown releases the Lease) to a standby on the new template.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from shardkeeper.controller.specs.views import PodView


@dataclasses.dataclass(frozen=True)
class RollStep:
    """What to do next: delete ``pod``, wait (``waiting`` says for what), or nothing."""

    pod: PodView | None = None
    role: str = ""
    waiting: str = ""

    @property
    def done(self) -> bool:
        return self.pod is None and not self.waiting


def _ordinal(pod: PodView) -> int:
    suffix = pod.name.rsplit("-", 1)[-1]
    return int(suffix) if suffix.isdigit() else -1


def replacement_order(pods: Sequence[PodView], primary: str | None) -> list[PodView]:
    """Standbys from the highest ordinal down, then the primary."""
    return sorted(pods, key=lambda p: (p.name == primary, -_ordinal(p)))


def next_step(
    pods: Sequence[PodView], update_revision: str, primary: str | None, wanted: int
) -> RollStep:
    if not update_revision:
        return RollStep(waiting="the StatefulSet has no update revision yet")
    outdated = [p for p in pods if p.revision != update_revision]
    if not outdated:
        return RollStep()
    terminating = [p.name for p in pods if p.terminating]
    if terminating:
        return RollStep(waiting=f"{', '.join(terminating)} is terminating")
    if len(pods) < wanted:
        return RollStep(waiting=f"{len(pods)} of {wanted} pods exist")
    unready = [p for p in outdated if not p.ready]
    if unready:
        pod = replacement_order(unready, primary)[0]
        return RollStep(pod=pod, role="not ready")
    starting = [p.name for p in pods if p.revision == update_revision and not p.ready]
    if starting:
        return RollStep(waiting=f"{', '.join(starting)} is not ready yet")
    pod = replacement_order(outdated, primary)[0]
    return RollStep(pod=pod, role="primary" if pod.name == primary else "standby")
