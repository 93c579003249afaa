"""A recovery log: where one shard store's history lives in a bucket.

Layout under the log's name (a key prefix such as ``recovery/<task>/<shard>``)::

    <name>/journal/<offset>                     the journal of records (see .records)
    <name>/snapshots/<offset>-<id>.json         snapshot manifests, by the offset they reach
    <name>/snapshot-data/<offset>-<id>/<part>   snapshot page data
    <name>/forks/<child log, escaped>.json      logs forked from this one, for pruning
    <name>/claims/<offset>.json                 what each fence at that offset claims

Offsets in keys are 16 zero-padded hex digits, so listings come in offset order.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.parse

from shardkeeper.storage import errors
from shardkeeper.storage.faults import NO_FAULTS, Faults
from shardkeeper.storage.fragment import OFFSET_DIGITS, Fragment, FragmentKind
from shardkeeper.storage.journal import Claim, FenceInfo, Journal
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper.storage.records import FORK_MAGIC, ForkRecord, decode_record


@dataclasses.dataclass(frozen=True)
class FenceClaim:
    """An index entry: the fence at ``offset`` was written by ``epoch`` and claims
    ``owns``. The fence itself holds the same claim; the index spares reading the
    journal to find it."""

    offset: int
    epoch: int
    owns: dict[str, str]


@dataclasses.dataclass(frozen=True)
class ForkRegistration:
    """Written into a parent log when a child forks from it, so pruning keeps what the
    child's recovery needs from the parent."""

    child: str
    fence_offset: int


class RecoveryLog:
    def __init__(self, store: ObjectStore, name: str, *, faults: Faults = NO_FAULTS) -> None:
        if not name or name.startswith("/") or name.endswith("/"):
            raise ValueError(
                f"a log name is a key prefix without leading or trailing '/': {name!r}"
            )
        self.store = store
        self.name = name
        self.faults = faults
        self.journal = Journal(store, f"{name}/journal", faults=faults)

    def __repr__(self) -> str:
        return f"RecoveryLog(s3://{self.store.bucket}/{self.name})"

    def sibling(self, name: str) -> RecoveryLog:
        """Another log in the same bucket (a fork's parent or child)."""
        return RecoveryLog(self.store, name, faults=self.faults)

    # -- keys ----------------------------------------------------------------------------

    @property
    def snapshots_prefix(self) -> str:
        return f"{self.name}/snapshots/"

    @property
    def snapshot_data_prefix(self) -> str:
        return f"{self.name}/snapshot-data/"

    @property
    def forks_prefix(self) -> str:
        return f"{self.name}/forks/"

    @property
    def claims_prefix(self) -> str:
        return f"{self.name}/claims/"

    def claim_key(self, offset: int) -> str:
        return f"{self.claims_prefix}{offset:0{OFFSET_DIGITS}x}.json"

    def snapshot_id(self, offset: int, nonce: str) -> str:
        return f"{offset:0{OFFSET_DIGITS}x}-{nonce}"

    def manifest_key(self, snapshot_id: str) -> str:
        return f"{self.snapshots_prefix}{snapshot_id}.json"

    def part_key(self, snapshot_id: str, index: int) -> str:
        return f"{self.snapshot_data_prefix}{snapshot_id}/{index:06d}"

    def fork_key(self, child: str) -> str:
        return f"{self.forks_prefix}{urllib.parse.quote(child, safe='')}.json"

    # -- fencing and forks -----------------------------------------------------------------

    def fence(self, epoch: int, *, note: str = "", from_offset: int = 0) -> FenceInfo:
        """Take this log over for ``epoch`` without a store (e.g. to hand a split off)."""
        _, fence = self.journal.fence(epoch, note=note, from_offset=from_offset)
        return fence

    def index_claim(self, fence: FenceInfo, owns: Claim) -> None:
        """Record what the fence ``fence`` claims. A writer does so before its first commit
        after that fence, so a claim that governs commits is always in the index."""
        body = json.dumps({"epoch": fence.epoch, "owns": dict(owns)}, sort_keys=True).encode()
        self.store.put(self.claim_key(fence.offset), body)

    def claims(self) -> list[FenceClaim]:
        """The indexed claims, in offset order."""
        found = []
        for obj in self.store.list(self.claims_prefix):
            name = obj.key[len(self.claims_prefix) :].removesuffix(".json")
            data = self.store.get(obj.key)
            if data is None:
                continue
            try:
                offset = int(name, 16)
                body = json.loads(data)
                owns = {str(k): str(v) for k, v in dict(body["owns"]).items()}
                found.append(FenceClaim(offset, int(body["epoch"]), owns))
            except (ValueError, KeyError, TypeError) as exc:
                raise errors.JournalCorrupt(f"{obj.key}: unreadable claim: {exc}") from None
        return sorted(found, key=lambda c: c.offset)

    def fork_record(self) -> tuple[Fragment, ForkRecord] | None:
        """The fork record this log starts with, if it was forked from another log."""
        first = self.journal.read_fragment(0)
        if first is None or first.kind is not FragmentKind.DATA:
            return None
        if not first.payload.startswith(FORK_MAGIC):
            return None
        record = decode_record(self.journal.key(0), first.payload)
        assert isinstance(record, ForkRecord)
        return first, record

    def register_fork(self, child: str, fence_offset: int) -> None:
        body = json.dumps({"child": child, "fence_offset": fence_offset}).encode()
        if not self.store.create(self.fork_key(child), body):
            existing = self.read_fork_registration(child)
            if existing is None or existing.fence_offset != fence_offset:
                raise errors.ForkMismatch(
                    f"log {child!r} is already registered as a fork of {self.name!r} at "
                    f"{existing and existing.fence_offset!r}, not at {fence_offset:#x}"
                )

    def read_fork_registration(self, child: str) -> ForkRegistration | None:
        data = self.store.get(self.fork_key(child))
        return None if data is None else _parse_registration(self.fork_key(child), data)

    def fork_registrations(self) -> list[tuple[str, ForkRegistration]]:
        found = []
        for obj in self.store.list(self.forks_prefix):
            data = self.store.get(obj.key)
            if data is not None:
                found.append((obj.key, _parse_registration(obj.key, data)))
        return found


def _parse_registration(key: str, data: bytes) -> ForkRegistration:
    try:
        body = json.loads(data)
        return ForkRegistration(str(body["child"]), int(body["fence_offset"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise errors.JournalCorrupt(f"{key}: unreadable fork registration: {exc}") from None
