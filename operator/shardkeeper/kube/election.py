"""Election with a ``coordination.k8s.io/v1`` Lease, one step at a time: the one
:class:`Elector` that shard replicas (``runtime/shell/lease.py``, on a thread) and operator
replicas (``controller/engine/leader.py``, in its thread pool) both drive.

Every write is a create or a replace carrying the ``resourceVersion`` that was read (or
last written), so two replicas racing for the Lease cannot both win: the loser gets 409
and reads again. Expiry is judged on the observer's own clock (see :mod:`.lease`).

A step that wins returns :attr:`StepResult.sent_at`, the monotonic time its write was
*sent*: no later than anyone saw it, so a holder that counts its duration from then gives
the Lease up before any other replica can take it over.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from shardkeeper.kube.client import REQUEST_TIMEOUT, ApiError, Transport, request
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
from shardkeeper.kube.paths import resource_path

# a 409 means someone wrote in between: look again, this many times a step
ATTEMPTS = 3


class LeaseApi(Protocol):
    """Reads and writes one Lease; a write returns ``None`` when it lost a race (409)."""

    def read(self) -> dict[str, Any] | None:
        """The Lease, or ``None`` if there is none."""

    def create(self, lease: dict[str, Any]) -> dict[str, Any] | None:
        """Create the Lease (this API names it); ``None`` if it exists already."""

    def replace(self, lease: dict[str, Any]) -> dict[str, Any] | None:
        """Replace it; ``None`` unless ``lease``'s resourceVersion is still current."""


class KubeLeaseApi:
    """A :class:`LeaseApi` on the API server, over any transport. ``owner`` (an owner
    reference) goes on a Lease this API creates, and ``field_manager`` names who created it;
    ``count(verb)`` is told of every request."""

    def __init__(
        self,
        transport: Transport,
        namespace: str,
        name: str,
        *,
        timeout: float = REQUEST_TIMEOUT,
        owner: dict[str, Any] | None = None,
        field_manager: str | None = None,
        count: Callable[[str], None] = lambda verb: None,
    ) -> None:
        self.transport = transport
        self.namespace = namespace
        self.name = name
        self.timeout = timeout
        self.owner = owner
        self.field_manager = field_manager
        self.count = count
        self.leases = resource_path(LEASE_API_VERSION, "leases", namespace)
        self.lease = resource_path(LEASE_API_VERSION, "leases", namespace, name)

    def read(self) -> dict[str, Any] | None:
        try:
            return self._request("get", "GET", self.lease)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, lease: dict[str, Any]) -> dict[str, Any] | None:
        metadata: dict[str, Any] = {
            **(lease.get("metadata") or {}),
            "name": self.name,
            "namespace": self.namespace,
        }
        if self.owner is not None:
            # deleting the owner (a Shard) deletes its Lease
            metadata["ownerReferences"] = [self.owner]
        query = {"fieldManager": self.field_manager} if self.field_manager else None
        body = {**lease, "metadata": metadata}
        return self._write("create", "POST", self.leases, body, query)

    def replace(self, lease: dict[str, Any]) -> dict[str, Any] | None:
        return self._write("update", "PUT", self.lease, lease)

    def _write(
        self,
        verb: str,
        method: str,
        path: str,
        body: dict[str, Any],
        query: dict[str, str] | None = None,
    ) -> dict[str, Any] | None:
        try:
            return self._request(verb, method, path, body, query)
        except ApiError as exc:
            if exc.status == 409:
                return None
            raise

    def _request(
        self,
        verb: str,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        query: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        self.count(verb)
        obj: dict[str, Any] = request(
            self.transport, method, path, query=query, body=body, timeout=self.timeout
        )
        return obj


@dataclasses.dataclass(frozen=True)
class StepResult:
    holder: str | None  # who holds the Lease after this step, as far as we know
    mine: bool  # we hold it, from a write that succeeded
    sent_at: float  # monotonic time the successful write was sent (when ``mine``)
    # when this step took the Lease (rather than renewed it): why it could, and from whom
    taken: Verdict | None = None
    previous: str | None = None


def new_lease(record: LeaseRecord) -> dict[str, Any]:
    """A Lease to create; its :class:`LeaseApi` names it."""
    return {
        "apiVersion": LEASE_API_VERSION,
        "kind": "Lease",
        "metadata": {},
        "spec": record.to_spec(),
    }


class Elector:
    """One election step at a time (a lock keeps a step and a release apart).

    With ``read_first`` (the default) every step reads the Lease before writing it; without,
    a holder renews the Lease as it last wrote it, one request a renewal, and reads only
    when that write loses (409).
    """

    def __init__(
        self,
        api: LeaseApi,
        me: str,
        duration: int,
        *,
        read_first: bool = True,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.api = api
        self.me = me
        self.duration = duration
        self.read_first = read_first
        self._monotonic = monotonic
        self._wall = wall
        self._lock = threading.Lock()
        self._sighting: Sighting | None = None
        self._written: dict[str, Any] | None = None  # the Lease as our last write left it

    def step(self, want: bool) -> StepResult:
        """Observe the Lease; if ``want``, acquire it when free or expired, renew it if ours."""
        with self._lock:
            if want and not self.read_first and self._written is not None:
                renewed = self._renew(self._written)
                if renewed is not None:
                    return renewed
            for _ in range(ATTEMPTS):
                current = self.api.read()
                record = None
                if current is not None:
                    record = LeaseRecord.from_spec(current.get("spec") or {})
                    self._sighting = sight(
                        self._sighting, record, resource_version(current), self._monotonic()
                    )
                verdict = assess(
                    self._sighting if record is not None else None, self.me, self._monotonic()
                )
                if not want or verdict is Verdict.HELD:
                    return StepResult(record.holder if record else None, False, 0.0)
                new = claimed(record, self.me, self.duration, self._wall())
                sent_at = self._monotonic()
                if current is None:
                    written = self.api.create(new_lease(new))
                else:
                    written = self.api.replace({**current, "spec": new.to_spec()})
                if written is not None:
                    self._wrote(new, written)
                    if verdict is Verdict.MINE:
                        return StepResult(self.me, True, sent_at)
                    previous = record.holder if record else None
                    return StepResult(self.me, True, sent_at, verdict, previous)
            self._written = None
            holder = self._sighting.record.holder if self._sighting else None
            return StepResult(holder, False, 0.0)

    def _renew(self, held: dict[str, Any]) -> StepResult | None:
        """Replace the Lease as we last wrote it; ``None`` if someone wrote it since."""
        new = claimed(
            LeaseRecord.from_spec(held.get("spec") or {}), self.me, self.duration, self._wall()
        )
        sent_at = self._monotonic()
        written = self.api.replace({**held, "spec": new.to_spec()})
        if written is None:
            self._written = None
            return None
        self._wrote(new, written)
        return StepResult(self.me, True, sent_at)

    def _wrote(self, record: LeaseRecord, written: dict[str, Any]) -> None:
        self._written = written
        self._sighting = sight(self._sighting, record, resource_version(written), self._monotonic())

    def expires_in(self) -> float | None:
        """Seconds until the Lease of another holder expires as we count, if it has one."""
        sighting = self._sighting
        if sighting is None or sighting.record.holder in (None, self.me):
            return None
        return sighting.since + sighting.record.duration_seconds - self._monotonic()

    def release(self) -> bool:
        """Clear ``holderIdentity`` if we hold the Lease. True if we released it."""
        with self._lock:
            self._written = None
            for _ in range(ATTEMPTS):
                current = self.api.read()
                if current is None:
                    return False
                record = LeaseRecord.from_spec(current.get("spec") or {})
                if record.holder != self.me:
                    return False
                if self.api.replace({**current, "spec": released(record).to_spec()}) is not None:
                    return True
            return False
