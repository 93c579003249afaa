"""Leader election with a coordination.k8s.io/v1 Lease, as client-go's leaderelection does.

Only the holder of the Lease runs kopf and reconciles. It renews every ``renew_every``
seconds; a standby polls every ``retry_every`` seconds and takes the Lease once it has
seen the same record, unrenewed, for ``duration`` seconds. Expiry is judged by the
standby's own clock from when it last saw the record change, never by comparing
timestamps written on another machine, so clock skew does not matter. A leader that
cannot renew within ``renew_deadline`` stops (the process exits non-zero and its
Deployment restarts it as a standby); one that stops cleanly releases the Lease, so a
standby takes over at its next poll.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from shardkeeper.controller.engine import metrics
from shardkeeper.controller.engine.kube import ApiError, AsyncKube
from shardkeeper.kube.lease import (
    LEASE_API_VERSION,
    LeaseRecord,
    Sighting,
    Verdict,
    assess,
    claimed,
    released,
    resource_version,
    sight,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Timing:
    duration: float = 15.0
    renew_every: float = 5.0
    renew_deadline: float = 10.0
    retry_every: float = 2.0


class Elector:
    def __init__(
        self,
        kube: AsyncKube,
        namespace: str,
        name: str,
        identity: str,
        *,
        timing: Timing | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timing = timing or Timing()
        self.clock = clock
        self._sighting: Sighting | None = None
        # the Lease as this replica last wrote it, while it holds it
        self._held: dict[str, Any] | None = None

    async def _renew(self) -> bool:
        """Renew the Lease as last written, without reading it first: one request a
        renewal. Whether that worked (a 409 means someone wrote it since)."""
        if self._held is None:
            return False
        try:
            self._held = await self.kube.replace(self._record(self._held, datetime.now(UTC)))
        except ApiError as err:
            if err.status == 409:
                self._held = None
                return False
            raise
        return True

    async def _try(self) -> bool:
        """One attempt to take or renew the Lease; whether this replica holds it now."""
        if await self._renew():
            return True
        lease = await self.kube.get(LEASE_API_VERSION, "Lease", self.namespace, self.name)
        now = datetime.now(UTC)
        if lease is None:
            try:
                self._held = await self.kube.create(self._record(None, now))
            except ApiError as err:
                if err.status == 409:
                    return False
                raise
            return True
        record = LeaseRecord.from_spec(lease.get("spec") or {})
        self._sighting = sight(self._sighting, record, resource_version(lease), self.clock())
        verdict = assess(self._sighting, self.identity, self.clock())
        if verdict is Verdict.HELD:
            return False
        try:
            self._held = await self.kube.replace(self._record(lease, now))
        except ApiError as err:
            if err.status == 409:  # someone else wrote it first
                return False
            raise
        if verdict is not Verdict.MINE:
            log.info(
                "took the leader Lease %s/%s over from %r (%s)",
                self.namespace,
                self.name,
                record.holder,
                verdict.value,
            )
        return True

    def _record(self, lease: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
        """The Lease that makes this replica the holder; a replace carries the
        resourceVersion it read, so it fails if anyone wrote since."""
        previous = None if lease is None else LeaseRecord.from_spec(lease.get("spec") or {})
        spec = claimed(previous, self.identity, int(self.timing.duration), now).to_spec()
        if lease is not None:
            return {**lease, "spec": spec}
        return {
            "apiVersion": LEASE_API_VERSION,
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": spec,
        }

    async def acquire(self) -> None:
        """Wait until this replica holds the Lease."""
        log.info(
            "waiting to lead (Lease %s/%s, identity %s)", self.namespace, self.name, self.identity
        )
        while True:
            try:
                if await self._try():
                    metrics.LEADER.set(1)
                    log.info("leading as %s", self.identity)
                    return
            except Exception as exc:
                log.warning("leader election: %s", exc)
            await asyncio.sleep(self.timing.retry_every)

    async def hold(self) -> None:
        """Renew until renewing fails for longer than the deadline; then return."""
        last_renewed = self.clock()
        while True:
            await asyncio.sleep(self.timing.renew_every)
            try:
                if await self._try():
                    last_renewed = self.clock()
                    continue
                log.error("another replica took the leader Lease")
                self._held = None
                break
            except Exception as exc:
                log.warning("renewing the leader Lease failed: %s", exc)
            if self.clock() - last_renewed > self.timing.renew_deadline:
                log.error("could not renew the leader Lease for %.0fs", self.timing.renew_deadline)
                break
        metrics.LEADER.set(0)

    async def release(self) -> None:
        """Give the Lease up (if still ours), so that a standby need not wait for it."""
        metrics.LEADER.set(0)
        self._held = None
        try:
            lease = await self.kube.get(LEASE_API_VERSION, "Lease", self.namespace, self.name)
            if lease is None:
                return
            record = LeaseRecord.from_spec(lease.get("spec") or {})
            if record.holder != self.identity:
                return
            await self.kube.replace({**lease, "spec": released(record).to_spec()})
            log.info("released the leader Lease")
        except Exception as exc:
            log.warning("could not release the leader Lease: %s", exc)
