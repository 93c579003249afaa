"""The ownership checker on synthetic logs in memory: it passes clean splits, and each of
its checks fails when the invariant it guards is broken."""

from __future__ import annotations

import json
import os
import uuid
from typing import cast

import pytest
from tests.support.fake_api import FakeObjects

from shardkeeper.storage.fragment import Fragment, FragmentKind, encode_fragment, fragment_key
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper.storage.records import CommitRecord, ForkRecord, encode_commit, encode_fork
from shardkeeper.storage.recoverylog import RecoveryLog
from shardkeeper_dev.ownership import (
    EVERYTHING,
    FULL,
    OwnershipReport,
    OwnershipViolation,
    Ranges,
    audit_ownership,
    check_ownership,
    check_task_ownership,
    claim_index_body,
    claim_index_key,
    parse_fence_body,
    uncovered,
)

PREFIX = "recovery/ns/task/"
PAGE = 64


def halves(ranges: Ranges, by: str = "key") -> tuple[Ranges, Ranges]:
    """The parent's lower half and the child's upper half of a split (docs/splits.md)."""
    if by == "key":
        pivot = (ranges.key_begin + ranges.key_end + 1) // 2
        return (
            Ranges(ranges.key_begin, pivot - 1, ranges.r_clock_begin, ranges.r_clock_end),
            Ranges(pivot, ranges.key_end, ranges.r_clock_begin, ranges.r_clock_end),
        )
    pivot = (ranges.r_clock_begin + ranges.r_clock_end + 1) // 2
    return (
        Ranges(ranges.key_begin, ranges.key_end, ranges.r_clock_begin, pivot - 1),
        Ranges(ranges.key_begin, ranges.key_end, pivot, ranges.r_clock_end),
    )


class Log:
    """Writes one recovery log's objects the way the store and the runtime do, with the
    real encoders: fences (claim in the body and, if asked, in the index), commits, forks."""

    def __init__(self, bucket: Bucket, begins: str) -> None:
        self.bucket = bucket
        self.name = f"{PREFIX}{begins}"
        self.head = 0
        self.seq = 0
        self.epoch = 0
        self.claim: Ranges | None = None

    def _append(self, epoch: int, kind: FragmentKind, payload: bytes) -> int:
        at = self.head
        fragment = Fragment(at, epoch, kind, payload)
        self.bucket.data[fragment_key(f"{self.name}/journal", at)] = encode_fragment(fragment)
        self.head = fragment.end
        return at

    def fence(
        self,
        epoch: int,
        owns: Ranges | None,
        *,
        in_body: bool = True,
        index: Ranges | bool | None = True,
    ) -> int:
        body: dict[str, object] = {"epoch": epoch, "note": "test", "nonce": uuid.uuid4().hex}
        if owns is not None and in_body:
            body["owns"] = owns.owns()
        at = self._append(epoch, FragmentKind.FENCE, json.dumps(body, sort_keys=True).encode())
        indexed = owns if index is True else index or None
        if indexed is not None:
            self.bucket.data[claim_index_key(self.name, at)] = claim_index_body(epoch, indexed)
        self.epoch = epoch
        self.claim = owns
        return at

    def commit(self, epoch: int | None = None, count: int = 1) -> int:
        at = self.head
        for _ in range(count):
            self.seq += 1
            record = CommitRecord(self.seq, os.urandom(16), PAGE, 1, [(1, os.urandom(PAGE))])
            self._append(self.epoch if epoch is None else epoch, FragmentKind.DATA,
                         encode_commit(record))  # fmt: skip
        return at

    def fork_from(self, parent: Log, at: int, epoch: int, *, register: bool = True) -> None:
        if register:
            # the real registration, as ShardStore.fork_into writes it
            RecoveryLog(cast(ObjectStore, self.bucket.store), parent.name).register_fork(
                self.name, at
            )
        self._append(epoch, FragmentKind.DATA, encode_fork(ForkRecord(parent.name, at, epoch)))
        self.epoch = epoch


class Bucket:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.store = FakeObjects("test", self.data)

    def log(self, key_begin: int = 0, r_clock_begin: int = 0) -> Log:
        return Log(self, f"{key_begin:08x}-{r_clock_begin:08x}")

    def first(self) -> Log:
        """The task's first shard: primary of epoch 1 claiming everything, some commits."""
        log = self.log()
        log.fence(1, EVERYTHING)
        log.commit(count=3)
        return log

    def split(self, parent: Log, by: str = "key", *, child_epoch: int = 1) -> tuple[Log, int]:
        """The protocol's hand-off: the parent fences again (a newer epoch) claiming its
        lower half, goes on committing; the child forks at that fence and claims the upper."""
        assert parent.claim is not None
        kept, given = halves(parent.claim, by)
        at = parent.fence(parent.epoch + 1, kept)
        parent.commit(count=2)
        child = self.log(given.key_begin, given.r_clock_begin)
        child.fork_from(parent, at, child_epoch)
        child.fence(child_epoch, given)
        child.commit(count=2)
        return child, at

    def audit(self, **options: object) -> OwnershipReport:
        return audit_ownership(self.store, PREFIX, **options)  # type: ignore[arg-type]


def checks(report: OwnershipReport) -> set[str]:
    return {violation.check for violation in report.violations}


# -- clean runs -----------------------------------------------------------------------------


def test_one_shard_passes() -> None:
    bucket = Bucket()
    bucket.first()
    report = check_ownership(bucket.store, PREFIX)  # type: ignore[arg-type]
    assert report.ok
    assert (len(report.logs), report.commits, report.fences, report.forks) == (1, 3, 1, 0)


def test_a_clean_split_in_two_passes() -> None:
    bucket = Bucket()
    parent = bucket.first()
    child, at = bucket.split(parent)
    report = check_task_ownership(bucket.store, "ns", "task")  # type: ignore[arg-type]
    assert report.violations == []
    assert report.warnings == []
    assert (report.commits, report.fences, report.forks) == (3 + 2 + 2, 3, 1)
    assert report.logs[child.name].fork == (parent.name, at)
    assert report.logs[parent.name].current_claim == Ranges(0, 0x7FFFFFFF, 0, FULL)
    assert report.logs[child.name].current_claim == Ranges(0x80000000, FULL, 0, FULL)
    assert [c[0] for c in report.logs[parent.name].claims] == [0, at]


def test_one_to_two_to_four_passes() -> None:
    bucket = Bucket()
    parent = bucket.first()
    child, _ = bucket.split(parent)
    # the parent splits by key again; the child by r-clock, while the parent goes on
    bucket.split(parent)
    bucket.split(child, "rClock", child_epoch=3)
    parent.commit()
    report = bucket.audit()
    assert report.violations == []
    assert (len(report.logs), report.forks) == (4, 3)
    leaves = sorted(log.current_claim for log in report.logs.values() if log.current_claim)
    assert sum(leaf.size for leaf in leaves) == (FULL + 1) ** 2


def test_a_stale_replica_that_fences_wide_but_never_commits_passes() -> None:
    bucket = Bucket()
    parent = bucket.first()
    bucket.split(parent)
    kept = parent.claim
    # a replica that read the spec before it narrowed: a wide claim, refenced at once
    parent.fence(parent.epoch + 1, EVERYTHING)
    parent.fence(parent.epoch + 1, kept)
    parent.commit()
    assert bucket.audit().violations == []


def test_a_fence_that_claims_nothing_is_tolerated_without_commits() -> None:
    bucket = Bucket()
    log = bucket.first()
    log.fence(2, None, index=False)
    log.fence(3, EVERYTHING)
    log.commit()
    assert bucket.audit().violations == []


def test_claims_found_in_the_index_only_count() -> None:
    bucket = Bucket()
    log = bucket.log()
    log.fence(1, EVERYTHING, in_body=False)
    log.commit()
    report = bucket.audit()
    assert report.violations == []
    assert report.logs[log.name].current_claim == EVERYTHING


# -- every check fails when its rule is broken ----------------------------------------------


def test_a_parent_commit_after_the_fork_for_the_childs_range_fails() -> None:
    bucket = Bucket()
    parent = bucket.first()
    _, at = bucket.split(parent)
    kept = parent.claim
    # a stale replica claims everything again and commits before it narrows
    parent.fence(parent.epoch + 1, EVERYTHING)
    stale = parent.epoch
    trespass = parent.commit()
    parent.fence(parent.epoch + 1, kept)
    report = bucket.audit()
    assert checks(report) == {"fork-parent-commits"}
    [violation] = report.violations
    assert (violation.log, violation.offset, violation.epoch) == (
        parent.name,
        trespass,
        stale,
    )
    assert f"{at:#x}" in violation.message
    assert str(Ranges(0x80000000, FULL, 0, FULL)) in violation.message
    with pytest.raises(OwnershipViolation) as raised:
        check_ownership(bucket.store, PREFIX)  # type: ignore[arg-type]
    assert isinstance(raised.value, AssertionError)
    assert raised.value.violations == report.violations
    assert "fork-parent-commits" in str(raised.value)


def test_commits_before_the_fork_may_overlap_the_child() -> None:
    bucket = Bucket()
    parent = bucket.first()
    parent.commit(count=5)  # under the claim of everything, before the hand-off
    bucket.split(parent)
    assert bucket.audit().violations == []


def test_a_zombie_commit_fails() -> None:
    bucket = Bucket()
    log = bucket.first()
    log.fence(2, EVERYTHING)
    zombie = log.commit(epoch=1)
    report = bucket.audit()
    assert checks(report) == {"commit-epoch"}
    [violation] = report.violations
    assert (violation.log, violation.offset, violation.epoch) == (log.name, zombie, 1)
    assert "zombie" in violation.message


def test_a_commit_of_an_epoch_that_never_fenced_fails() -> None:
    bucket = Bucket()
    log = bucket.first()
    log.commit(epoch=2)
    assert "skipped fencing" in bucket.audit().violations[0].message


def test_a_commit_before_any_fence_fails() -> None:
    bucket = Bucket()
    log = bucket.log()
    log.commit(epoch=1)
    log.fence(1, EVERYTHING)
    report = bucket.audit()
    assert checks(report) == {"commit-epoch"}
    assert "before any fence" in report.violations[0].message


def test_halves_with_a_gap_fail() -> None:
    bucket = Bucket()
    parent = bucket.first()
    at = parent.fence(2, Ranges(0, 0x3FFFFFFF, 0, FULL))
    child = bucket.log(0x80000000)
    child.fork_from(parent, at, 1)
    child.fence(1, Ranges(0x80000000, FULL, 0, FULL))
    report = bucket.audit()
    assert checks(report) == {"fork-halves", "leaves-cover"}
    halves_violation = report.failed("fork-halves")[0]
    assert (halves_violation.log, halves_violation.offset) == (parent.name, at)
    assert "to nobody" in halves_violation.message
    assert "keys [40000000, 7fffffff]" in report.failed("leaves-cover")[0].message


def test_halves_that_overlap_fail() -> None:
    bucket = Bucket()
    parent = bucket.first()
    at = parent.fence(2, Ranges(0, 0x80000000, 0, FULL))
    child = bucket.log(0x80000000)
    child.fork_from(parent, at, 1)
    child.fence(1, Ranges(0x80000000, FULL, 0, FULL))
    report = bucket.audit()
    assert checks(report) == {"fork-halves", "fork-disjoint", "leaves-disjoint"}
    assert "overlap" in report.failed("fork-halves")[0].message
    assert "keys [80000000, 80000000]" in report.failed("fork-disjoint")[0].message


def test_a_child_that_claims_outside_the_parent_fails() -> None:
    bucket = Bucket()
    parent = bucket.first()
    bucket.split(parent)
    # the lower half splits again, but the grandchild claims beyond its parent's range
    at = parent.fence(parent.epoch + 1, Ranges(0, 0x3FFFFFFF, 0, FULL))
    grandchild = bucket.log(0x40000000)
    grandchild.fork_from(parent, at, 1)
    grandchild.fence(1, Ranges(0x40000000, 0x8FFFFFFF, 0, FULL))
    assert "fork-halves" in checks(bucket.audit())


def test_a_missing_fork_registration_fails() -> None:
    bucket = Bucket()
    parent = bucket.first()
    kept, given = halves(EVERYTHING)
    at = parent.fence(2, kept)
    child = bucket.log(given.key_begin)
    child.fork_from(parent, at, 1, register=False)
    child.fence(1, given)
    report = bucket.audit()
    assert checks(report) == {"fork-registration"}
    [violation] = report.violations
    assert (violation.log, violation.offset) == (parent.name, at)
    assert child.name in violation.message


def test_a_fork_not_at_a_fence_fails() -> None:
    bucket = Bucket()
    parent = bucket.first()
    kept, given = halves(EVERYTHING)
    parent.fence(2, kept)
    child = bucket.log(given.key_begin)
    child.fork_from(parent, 0x40, 1)  # inside the first commits
    child.fence(1, given)
    assert "fork-fence" in checks(bucket.audit())


def test_a_fork_from_a_log_elsewhere_fails() -> None:
    bucket = Bucket()
    bucket.first()
    child = bucket.log(0x80000000)
    child._append(1, FragmentKind.DATA, encode_fork(ForkRecord("recovery/other/log", 0, 1)))
    child.fence(1, Ranges(0x80000000, FULL, 0, FULL))
    assert "fork-parent" in checks(bucket.audit())


def test_leaves_that_do_not_cover_everything_fail() -> None:
    bucket = Bucket()
    log = bucket.log()
    log.fence(1, Ranges(0, FULL, 0, 0x7FFFFFFF))
    log.commit()
    report = bucket.audit()
    assert checks(report) == {"leaves-cover"}
    assert "r-clocks [80000000, ffffffff]" in report.violations[0].message


def test_a_retired_log_is_not_a_leaf() -> None:
    bucket = Bucket()
    bucket.first()
    other = bucket.log(0x1234)
    other.fence(1, EVERYTHING)
    assert "leaves-disjoint" in checks(bucket.audit())
    assert bucket.audit(retired={other.name}).violations == []
    # by the Shard's name too
    assert bucket.audit(retired={"task-00001234-00000000"}).violations == []


def test_fence_epochs_that_decrease_fail() -> None:
    bucket = Bucket()
    log = bucket.first()
    log.fence(3, EVERYTHING)
    behind = log.fence(2, EVERYTHING)
    report = bucket.audit()
    assert checks(report) == {"fence-epoch-order"}
    assert report.violations[0].offset == behind


def test_two_fences_of_one_epoch_warn_unless_strict() -> None:
    bucket = Bucket()
    log = bucket.first()
    again = log.fence(1, EVERYTHING)
    log.commit()
    report = bucket.audit()
    assert report.violations == []
    assert [(w.check, w.offset) for w in report.warnings] == [("fence-epoch-reuse", again)]
    assert checks(bucket.audit(strict_epochs=True)) == {"fence-epoch-reuse"}


def test_commits_under_a_fence_that_claims_nothing_fail() -> None:
    bucket = Bucket()
    log = bucket.first()
    unclaimed = log.fence(2, None, index=False)
    log.commit(count=3)
    report = bucket.audit()
    assert checks(report) == {"unclaimed-commits"}
    assert len(report.violations) == 1  # once per fence, not per commit
    assert f"{unclaimed:#x}" in report.violations[0].message


def test_a_claim_wider_than_the_logs_first_fails() -> None:
    bucket = Bucket()
    log = bucket.log()
    log.fence(1, Ranges(0, 0x7FFFFFFF, 0, FULL))
    wider = log.fence(2, EVERYTHING)
    report = bucket.audit()
    assert checks(report) == {"claim-within-start"}
    assert report.violations[0].offset == wider


def test_an_index_that_disagrees_with_its_fence_fails() -> None:
    bucket = Bucket()
    log = bucket.log()
    log.fence(1, EVERYTHING, index=Ranges(0, 1, 0, 1))
    log.commit()
    assert checks(bucket.audit()) == {"claim-index"}
    orphan = claim_index_key(log.name, 0x99)
    bucket.data[orphan] = claim_index_body(1, EVERYTHING)
    assert "not there" in bucket.audit().violations[-1].message


def test_a_gap_in_the_journal_fails() -> None:
    bucket = Bucket()
    log = bucket.first()
    log.head += 10
    log.fence(2, EVERYTHING)
    assert checks(bucket.audit()) == {"contiguous"}


def test_a_corrupt_fragment_fails() -> None:
    bucket = Bucket()
    log = bucket.first()
    key = fragment_key(f"{log.name}/journal", 0)
    bucket.data[key] = bucket.data[key][:-1] + b"!"
    assert "fragment" in checks(bucket.audit())


def test_checkpoint_rows_carry_the_newest_epoch() -> None:
    bucket = Bucket()
    parent = bucket.first()
    child, _ = bucket.split(parent, child_epoch=4)
    parent_shard = "task-00000000-00000000"
    good = [(parent_shard, 2, {"offsets": {}}), (child.name, 4, None)]
    assert bucket.audit(checkpoints=good).violations == []
    stale = [(parent_shard, 1, None)]
    [violation] = bucket.audit(checkpoints=stale).violations
    assert (violation.check, violation.log, violation.epoch) == ("row-epoch", parent.name, 1)
    assert bucket.audit(checkpoints=stale, retired={parent.name}).failed("row-epoch") == []
    ahead = [(child.name, 5, None)]
    assert checks(bucket.audit(checkpoints=ahead)) == {"row-epoch"}
    nowhere = [("task-0000abcd-00000000", 1, None)]
    assert checks(bucket.audit(checkpoints=nowhere)) == {"row-epoch"}


# -- the pieces -----------------------------------------------------------------------------


def test_uncovered_cells_are_exact() -> None:
    lower, upper = halves(EVERYTHING)
    assert uncovered([lower, upper]) == []
    assert uncovered([lower]) == [upper]
    left, right = halves(upper, "rClock")
    assert uncovered([lower, left]) == [right]
    assert uncovered([]) == [EVERYTHING]


def test_claims_parse_strictly() -> None:
    assert Ranges.from_owns(EVERYTHING.owns()) == EVERYTHING
    with pytest.raises(ValueError, match="8 lowercase hex"):
        Ranges.from_owns({**EVERYTHING.owns(), "keyEnd": "FFFFFFFF"})
    with pytest.raises(ValueError, match="empty"):
        Ranges(5, 4, 0, 0)
    body = parse_fence_body(b'{"epoch": 3, "note": "x", "nonce": "n"}')
    assert (body.epoch, body.owns) == (3, None)


def test_report_lists_what_it_read() -> None:
    bucket = Bucket()
    parent = bucket.first()
    bucket.split(parent)
    report = bucket.audit()
    summary = report.summary()
    assert f"forked from {parent.name}" in summary
    assert report.as_dict()["claims"] == {parent.name: 2, f"{PREFIX}80000000-00000000": 1}
