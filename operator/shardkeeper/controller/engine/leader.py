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
import functools
import logging
import time
from collections.abc import Callable

from shardkeeper.controller.engine import metrics
from shardkeeper.controller.engine.kube import AsyncKube
from shardkeeper.controller.specs.names import FIELD_MANAGER
from shardkeeper.kube import election
from shardkeeper.kube.lease import Verdict

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Timing:
    duration: float = 15.0
    renew_every: float = 5.0
    renew_deadline: float = 10.0
    retry_every: float = 2.0


def _count(verb: str) -> None:
    metrics.API_REQUESTS.labels(verb=verb, resource="leases").inc()


class LeaderElector:
    """The operator's side of :class:`shardkeeper.kube.election.Elector`: its steps run in
    the client's thread pool, and a leader renews without reading the Lease first (one
    request a renewal). ``api`` is the Lease's API, by default the API server's."""

    def __init__(
        self,
        kube: AsyncKube,
        namespace: str,
        name: str,
        identity: str,
        *,
        timing: Timing | None = None,
        clock: Callable[[], float] = time.monotonic,
        api: election.LeaseApi | None = None,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timing = timing or Timing()
        self.clock = clock
        if api is None:
            api = election.KubeLeaseApi(
                kube.transport, namespace, name, field_manager=FIELD_MANAGER, count=_count
            )
        self.election = election.Elector(
            api, identity, int(self.timing.duration), read_first=False, monotonic=clock
        )
        self._last_contact: float | None = None

    def in_contact(self) -> bool:
        """Whether an attempt at the Lease reached the API server lately: a standby that
        cannot reach it could not take over, so it is not ready."""
        window = self.timing.retry_every + self.timing.renew_every + self.timing.renew_deadline
        last = self._last_contact
        return last is not None and self.clock() - last <= window

    async def _try(self) -> bool:
        """One attempt to take or renew the Lease; whether this replica holds it now."""
        result = await self.kube.run(functools.partial(self.election.step, True))
        self._last_contact = self.clock()
        if result.taken is not None and result.taken is not Verdict.ABSENT:
            log.info(
                "took the leader Lease %s/%s over from %r (%s)",
                self.namespace,
                self.name,
                result.previous,
                result.taken.value,
            )
        return result.mine

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
        try:
            if await self.kube.run(self.election.release):
                log.info("released the leader Lease")
        except Exception as exc:
            log.warning("could not release the leader Lease: %s", exc)
