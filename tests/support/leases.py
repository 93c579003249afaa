"""An in-memory Lease API for unit tests of election: the API server's optimistic
concurrency (a resourceVersion bumped by every write, 409 for a stale replace or for a
create of a name that exists), as :class:`shardkeeper.kube.election.LeaseApi` sees it."""

from __future__ import annotations

import copy
import itertools
from typing import Any

from shardkeeper.kube.lease import LeaseRecord


class FakeLeaseApi:
    def __init__(self, name: str = "shard-a", namespace: str = "ns") -> None:
        self.name = name
        self.namespace = namespace
        self.obj: dict[str, Any] | None = None
        self.versions = itertools.count(1)
        self.writes = 0
        self.failing = 0  # this many requests raise, as an unreachable API server does

    def _request(self) -> None:
        if self.failing:
            self.failing -= 1
            raise ConnectionError("the API server is unreachable")

    def read(self) -> dict[str, Any] | None:
        self._request()
        return copy.deepcopy(self.obj)

    def create(self, lease: dict[str, Any]) -> dict[str, Any] | None:
        self._request()
        if self.obj is not None:
            return None  # 409: the name is taken
        return self._store(lease)

    def replace(self, lease: dict[str, Any]) -> dict[str, Any] | None:
        self._request()
        assert self.obj is not None, "a replace of no Lease is a 404"
        mine = (lease.get("metadata") or {}).get("resourceVersion")
        if mine != self.obj["metadata"]["resourceVersion"]:
            return None  # 409: someone wrote it since
        return self._store(lease)

    def _store(self, lease: dict[str, Any]) -> dict[str, Any]:
        metadata = {
            **(lease.get("metadata") or {}),
            "name": self.name,
            "namespace": self.namespace,
            "resourceVersion": str(next(self.versions)),
        }
        self.obj = {**copy.deepcopy(lease), "metadata": metadata}
        self.writes += 1
        return copy.deepcopy(self.obj)

    def holder(self) -> str | None:
        assert self.obj is not None
        return LeaseRecord.from_spec(self.obj["spec"]).holder
