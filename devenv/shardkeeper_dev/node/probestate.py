"""When a probe is due and what its consecutive results add up to, as a kubelet counts."""

from __future__ import annotations

import dataclasses
from typing import Any

from shardkeeper_dev.node.podcontext import Obj

HANDLERS = ("httpGet", "tcpSocket", "exec", "grpc")


@dataclasses.dataclass(frozen=True)
class ProbeSpec:
    handler: dict[str, Any]
    initial_delay: float
    period: float
    timeout: float
    success_threshold: int
    failure_threshold: int
    # liveness and startup probes may shorten the grace period of the kill they cause
    termination_grace: int | None

    @classmethod
    def from_probe(cls, probe: Obj) -> ProbeSpec:
        grace = probe.get("terminationGracePeriodSeconds")
        return cls(
            handler={k: v for k, v in probe.items() if k in HANDLERS},
            initial_delay=float(probe.get("initialDelaySeconds", 0)),
            period=float(probe.get("periodSeconds", 10)),
            timeout=float(probe.get("timeoutSeconds", 1)),
            success_threshold=int(probe.get("successThreshold", 1)),
            failure_threshold=int(probe.get("failureThreshold", 3)),
            termination_grace=None if grace is None else int(grace),
        )


class ProbeState:
    """One probe of one container run. ``result`` flips only after ``success_threshold``
    successes or ``failure_threshold`` failures in a row."""

    def __init__(self, spec: ProbeSpec, started_at: float, initial: bool) -> None:
        self.spec = spec
        self.result = initial
        self.next_due = started_at + spec.initial_delay
        self.last_message = ""
        self._successes = 0
        self._failures = 0

    def due(self, now: float) -> bool:
        return now >= self.next_due

    def record(self, ok: bool, message: str, now: float) -> bool:
        """Count one result; True when it changed ``result``."""
        self.next_due = now + self.spec.period
        self.last_message = message
        if ok:
            self._successes += 1
            self._failures = 0
            if not self.result and self._successes >= self.spec.success_threshold:
                self.result = True
                return True
        else:
            self._failures += 1
            self._successes = 0
            if self.result and self._failures >= self.spec.failure_threshold:
                self.result = False
                return True
        return False

    @property
    def failed_out(self) -> bool:
        """The failure threshold is reached: for liveness and startup probes, the verdict
        that kills the container (a startup probe starts out failing, so ``result`` alone
        does not show it)."""
        return self._failures >= self.spec.failure_threshold
