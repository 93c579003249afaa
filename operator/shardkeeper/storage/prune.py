"""Pruning a recovery log: remove what no recovery can need any more.

A log is needed from the oldest point any recovery starts from:

* its own recovery starts at its newest snapshot (or at offset 0 without one);
* each log forked from it (registered under ``forks/``) whose own recovery still reaches
  back into it starts at this log's newest snapshot at or below the fork's fence;
* a reader tailing the log (a hot standby) that the caller names with ``retain_from``
  still reads from there.

A child reaches back while it has no snapshot of its own covering what it (or its own
children, recursively) must recover. Fragments that end before the oldest needed
point go; the one ending right at it stays, so that the head of a journal with nothing
after its newest snapshot can still be found by listing. So do snapshots no requirement
chose, snapshot data without a manifest (once older than a grace period, so a snapshot
being written is left alone) and fork registrations of children that no longer reach
back.

Pruning never unfences. Every writer that was fenced has its head (the key its next
append would create) at a fence fragment: the fence its successor appended there. Had
pruning deleted that fence, a paused old primary waking up would create the key and
believe it committed into the pruned range. So a fence in the pruned range is not
deleted but overwritten with a **tombstone** (:func:`.fragment.tombstone`, a fence with
no payload): the key stays taken, so the old writer's conditional create still fails and
it learns it was fenced; the tombstone covers no offsets, so listings skip it and the
journal stays contiguous. The overwrite is one unconditional PUT, so the key is never
free, not even for a moment. Pruning never touches the fragment ending at the oldest
needed point nor anything after it, and refuses a plan that would reach past the head,
where the live writer appends.

``python -m shardkeeper.storage.prune --dry-run ...`` prints the plan without deleting.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import sys
from collections.abc import Mapping, Sequence

from shardkeeper.storage import errors
from shardkeeper.storage.client import make_s3_client
from shardkeeper.storage.fragment import (
    MAX_FENCE_BYTES,
    OFFSET_DIGITS,
    FragmentKind,
    encode_fragment,
    tombstone,
)
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper.storage.recoverylog import RecoveryLog
from shardkeeper.storage.snapshot import Manifest, latest_snapshot, list_manifest_keys

DEFAULT_ORPHAN_GRACE = datetime.timedelta(hours=1)
MAX_FORK_DEPTH = 64


@dataclasses.dataclass(frozen=True)
class Requirement:
    why: str
    snapshot: Manifest | None
    # a reader's position rather than a recovery's starting snapshot
    at: int | None = None

    @property
    def offset(self) -> int:
        if self.at is not None:
            return self.at
        return self.snapshot.offset if self.snapshot else 0


@dataclasses.dataclass(frozen=True)
class Tombstone:
    """A fence in the pruned range: its key is overwritten with a tombstone of its epoch."""

    key: str
    begin: int
    epoch: int


@dataclasses.dataclass(frozen=True)
class PrunePlan:
    log: str
    keep_from: int
    requirements: tuple[Requirement, ...]
    fragments: tuple[str, ...]  # data fragments: deleted
    tombstones: tuple[Tombstone, ...]  # fences: overwritten, never deleted
    manifests: tuple[str, ...]
    snapshot_data: tuple[str, ...]
    registrations: tuple[str, ...]
    # log bytes (offsets) of the data fragments removed, and of the fragments that stay
    removed_bytes: int = 0
    kept_bytes: int = 0

    @property
    def keys(self) -> tuple[str, ...]:
        """What the plan deletes (tombstones' keys stay)."""
        return self.fragments + self.manifests + self.snapshot_data + self.registrations

    def describe(self) -> str:
        lines = [f"log {self.log}: keeping data from offset {self.keep_from:#x}"]
        for req in self.requirements:
            snap = req.snapshot.snapshot_id if req.snapshot else "no snapshot"
            if req.at is not None:
                snap = "its position"
            lines.append(f"  needed from {req.offset:#x} by {req.why} ({snap})")
        for title, keys in (
            ("fragments", self.fragments),
            ("snapshot manifests", self.manifests),
            ("snapshot data objects", self.snapshot_data),
            ("fork registrations", self.registrations),
        ):
            lines.append(f"  {len(keys)} {title} to remove")
            lines.extend(f"    {key}" for key in keys)
        lines.append(f"  {len(self.tombstones)} fences to leave as tombstones (keys stay taken)")
        lines.extend(f"    {t.key}" for t in self.tombstones)
        lines.append(f"  {self.removed_bytes} log bytes to remove, {self.kept_bytes} to keep")
        return "\n".join(lines)


def _reaches_parent(log: RecoveryLog, depth: int = 0) -> bool:
    """Whether recovering ``log`` (or a log forked from it) still reads its parent."""
    if depth > MAX_FORK_DEPTH:
        raise RecursionError(f"forks nested deeper than {MAX_FORK_DEPTH} under {log.name}")
    if log.fork_record() is None:
        # an empty log is a fork being set up: it will read its parent
        return log.journal.bounds() is None
    points: list[int | None] = [None]
    for _, registration in log.fork_registrations():
        if _reaches_parent(log.sibling(registration.child), depth + 1):
            points.append(registration.fence_offset)
    return any(latest_snapshot(log, at_most=point) is None for point in points)


def plan_prune(
    log: RecoveryLog,
    *,
    now: datetime.datetime | None = None,
    orphan_grace: datetime.timedelta = DEFAULT_ORPHAN_GRACE,
    retain_from: int | None = None,
) -> PrunePlan:
    """What pruning ``log`` would remove. ``retain_from``: the lowest offset a reader tailing
    the log is known to be at (a hot standby); nothing it has yet to read is removed."""
    now = now or datetime.datetime.now(datetime.UTC)
    requirements = [Requirement("its own recovery", latest_snapshot(log))]
    stale_registrations = []
    for key, registration in log.fork_registrations():
        child = log.sibling(registration.child)
        if _reaches_parent(child):
            snapshot = latest_snapshot(log, at_most=registration.fence_offset)
            why = f"fork {registration.child} at {registration.fence_offset:#x}"
            requirements.append(Requirement(why, snapshot))
        else:
            stale_registrations.append(key)
    if retain_from is not None:
        why = f"a reader tailing the log at {retain_from:#x}"
        requirements.append(Requirement(why, None, at=retain_from))
    keep_from = min(req.offset for req in requirements)
    fragments, tombstones, removed_bytes, kept_bytes = _removable(log, keep_from)
    kept_ids = {req.snapshot.snapshot_id for req in requirements if req.snapshot}
    newest = requirements[0].snapshot
    manifests = []
    for _, key in list_manifest_keys(log):
        snapshot_id = key[len(log.snapshots_prefix) : -len(".json")]
        if snapshot_id not in kept_ids:
            manifests.append(key)
    listed_ids = {
        key[len(log.snapshots_prefix) : -len(".json")] for _, key in list_manifest_keys(log)
    }
    data = []
    for obj in log.store.list(log.snapshot_data_prefix):
        snapshot_id = obj.key[len(log.snapshot_data_prefix) :].split("/", 1)[0]
        if snapshot_id in kept_ids:
            continue
        if snapshot_id in listed_ids:
            data.append(obj.key)
            continue
        # no manifest: a failed snapshot, or one still being written
        digits = snapshot_id[:OFFSET_DIGITS]
        if len(digits) != OFFSET_DIGITS or digits.strip("0123456789abcdef"):
            continue  # not ours: leave it alone
        offset = int(digits, 16)
        old_enough = now - obj.last_modified >= orphan_grace
        if newest is not None and offset < newest.offset and old_enough:
            data.append(obj.key)
    return PrunePlan(
        log=log.name,
        keep_from=keep_from,
        requirements=tuple(requirements),
        fragments=fragments,
        tombstones=tombstones,
        manifests=tuple(manifests),
        snapshot_data=tuple(data),
        registrations=tuple(stale_registrations),
        removed_bytes=removed_bytes,
        kept_bytes=kept_bytes,
    )


def _removable(
    log: RecoveryLog, keep_from: int
) -> tuple[tuple[str, ...], tuple[Tombstone, ...], int, int]:
    """The data fragments that end before ``keep_from``, the fences among them, and the log
    bytes of the removed fragments and of those that stay."""
    infos = log.journal.list_fragments()
    head = infos[-1].end if infos else 0
    if keep_from > head:
        raise errors.StorageError(
            f"refusing to prune log {log.name!r} up to {keep_from:#x}, past its head "
            f"{head:#x}: the live writer appends there"
        )
    data: list[str] = []
    fences: list[Tombstone] = []
    removed = kept = 0
    for info in infos:
        if info.end >= keep_from:
            kept += info.end - info.begin
            continue
        removed += info.end - info.begin
        if info.end - info.begin <= MAX_FENCE_BYTES:
            # small enough to be a fence (no fence is larger): read it to know
            fragment = log.journal.read_fragment(info.begin)
            if fragment is not None and fragment.kind is FragmentKind.FENCE:
                fences.append(Tombstone(info.key, info.begin, fragment.epoch))
                continue
        data.append(info.key)
    return tuple(data), tuple(fences), removed, kept


def prune(
    log: RecoveryLog,
    *,
    dry_run: bool = False,
    now: datetime.datetime | None = None,
    orphan_grace: datetime.timedelta = DEFAULT_ORPHAN_GRACE,
    retain_from: int | None = None,
) -> PrunePlan:
    plan = plan_prune(log, now=now, orphan_grace=orphan_grace, retain_from=retain_from)
    if not dry_run:
        # manifests before their data, so no manifest ever points at deleted data
        log.store.delete(plan.manifests)
        log.store.delete(plan.snapshot_data)
        for fence in plan.tombstones:
            # an overwrite, not a delete and a create: the key is never free
            log.store.put(fence.key, encode_fragment(tombstone(fence.begin, fence.epoch)))
        log.store.delete(plan.fragments)
        log.store.delete(plan.registrations)
    return plan


def parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    """The command line of ``python -m shardkeeper.storage.prune``; defaults from ``env``."""
    cli = argparse.ArgumentParser(
        prog="python -m shardkeeper.storage.prune", description=__doc__.split("\n\n")[0]
    )
    cli.add_argument("--log", required=True, help="the recovery log's name (key prefix)")
    cli.add_argument("--bucket", default=env.get("SHARDKEEPER_S3_BUCKET"), required=False)
    cli.add_argument("--endpoint", default=env.get("SHARDKEEPER_S3_ENDPOINT"))
    cli.add_argument(
        "--region", default=env.get("SHARDKEEPER_S3_REGION", env.get("AWS_REGION", "us-east-1"))
    )
    cli.add_argument("--dry-run", action="store_true", help="print the plan, delete nothing")
    cli.add_argument(
        "--orphan-grace-seconds",
        type=float,
        default=DEFAULT_ORPHAN_GRACE.total_seconds(),
        help="leave snapshot data without a manifest alone until it is this old",
    )
    return cli


def main(argv: Sequence[str] | None = None) -> int:
    env = os.environ
    cli = parser(env)
    args = cli.parse_args(argv)
    access_key = env.get("SHARDKEEPER_S3_ACCESS_KEY") or env.get("AWS_ACCESS_KEY_ID")
    secret_key = env.get("SHARDKEEPER_S3_SECRET_KEY") or env.get("AWS_SECRET_ACCESS_KEY")
    if not args.bucket or not access_key or not secret_key:
        cli.error(
            "set --bucket (or SHARDKEEPER_S3_BUCKET) and the credentials in "
            "SHARDKEEPER_S3_ACCESS_KEY/SHARDKEEPER_S3_SECRET_KEY or AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY"
        )
    client = make_s3_client(
        endpoint=args.endpoint, access_key=access_key, secret_key=secret_key, region=args.region
    )
    log = RecoveryLog(ObjectStore(client, args.bucket), args.log)
    grace = datetime.timedelta(seconds=args.orphan_grace_seconds)
    plan = prune(log, dry_run=args.dry_run, orphan_grace=grace)
    print(("DRY RUN: nothing deleted\n" if args.dry_run else "") + plan.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
