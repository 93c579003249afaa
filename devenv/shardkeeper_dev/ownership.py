"""The ownership checker: proof, after a run, that a task's splits never let two primaries
commit for the same key and r-clock point (docs/splits.md, "Fences claim ranges").

It reads every recovery log under a prefix (a task's ``recovery/<namespace>/<task>/``),
fragment by fragment, with the claims that fences make (in their payload, or in the index
``<log>/claims/<offset>.json``), the forks the logs record and register, and optionally
the checkpoint rows of a materialization. Each rule is a named check; a broken rule is a
:class:`Violation` naming the check, the log, the offset, the epoch and the ranges
concerned. :func:`audit_ownership` returns every finding in an :class:`OwnershipReport`;
:func:`check_ownership` raises :class:`OwnershipViolation` (an ``AssertionError``) when
there is any violation, so a test just calls it.

Checks:

``contiguous``           fragments of a journal follow each other with no gap or overlap
``fragment``             every fragment and record decodes (checksum, layout)
``commit-epoch``         a commit carries the epoch of the newest fence before it
                         (older: a zombie committed; newer: a writer skipped fencing; none:
                         a commit before any fence)
``fence-epoch-order``    fence epochs never decrease along a log
``fence-epoch-reuse``    two different fences of one epoch (a warning unless
                         ``strict_epochs``: tracked as a separate issue)
``fence-body``           a fence's payload is its JSON body and names its fragment's epoch
``claim-index``          an index entry sits on a fence of its epoch and says what it says
``unclaimed-commits``    every commit is attributed to a claim (of the newest fence before it)
``claim-within-start``   every claim of a log lies within the log's first claim
``fork-record``          a fork record is the first fragment of a log, of its writer's epoch
``fork-parent``          the parent of a fork is one of the logs read
``fork-fence``           the parent has a claiming fence where the child forked
``fork-registration``    the parent registers the fork, at that offset
``fork-disjoint``        the parent's claim at the fork does not overlap the child's claims
``fork-parent-commits``  no commit of the parent after the fork is for a claim overlapping
                         one of the child's claims
``fork-halves``          the parent's claim at the fork and the child's first claim split
                         the parent's claim before the fork exactly: no gap, no overlap
``leaves-disjoint``      the current claims of the live logs are pairwise disjoint
``leaves-cover``         ... and together cover every key and r-clock point
``row-epoch``            a checkpoint row's epoch is the newest fence epoch of its shard's
                         log (older only for a retired shard)

A fence without a claim (written by no shard primary: a test's or a tool's) is tolerated
as long as no commit follows it under it.

Only reads: it never writes to the bucket. Lives in the dev package so that tests and
benchmarks share it; the product never imports it.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import json
import re
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Any, NamedTuple, Protocol

from shardkeeper.storage import errors
from shardkeeper.storage.fragment import (
    OFFSET_DIGITS,
    Fragment,
    FragmentInfo,
    FragmentKind,
    decode_fragment,
    fragment_info,
    is_tombstone,
)
from shardkeeper.storage.layout import task_recovery_dir
from shardkeeper.storage.objectstore import ObjectInfo
from shardkeeper.storage.records import CommitRecord, ForkRecord, decode_record

FULL = 0xFFFFFFFF
JOURNAL = "/journal/"
CLAIMS = "/claims/"
FORKS = "/forks/"
#: at most this many uncovered or doubly covered cells are named in one violation
MAX_CELLS = 5


class Objects(Protocol):
    """What the checker needs of a bucket (an ``ObjectStore``, or a test's fake)."""

    @property
    def bucket(self) -> str: ...

    def list(self, prefix: str, *, start_after: str | None = None) -> Iterator[ObjectInfo]: ...

    def get(self, key: str) -> bytes | None: ...


# -- ranges ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, order=True)
class Ranges:
    """A key range times an r-clock range, ends included, as a claim states them."""

    key_begin: int
    key_end: int
    r_clock_begin: int
    r_clock_end: int

    def __post_init__(self) -> None:
        for value in dataclasses.astuple(self):
            if not 0 <= value <= FULL:
                raise ValueError(f"{value:#x} is not a 32-bit range bound")
        if self.key_begin > self.key_end or self.r_clock_begin > self.r_clock_end:
            raise ValueError(f"empty ranges: {self}")

    @classmethod
    def from_owns(cls, owns: object) -> Ranges:
        """The ranges of a claim ``{"keyBegin", "keyEnd", "rClockBegin", "rClockEnd"}`` (8
        hex digits each); ValueError for anything else."""
        if not isinstance(owns, Mapping):
            raise ValueError(f"a claim is an object, not {owns!r}")
        bounds = []
        for field in ("keyBegin", "keyEnd", "rClockBegin", "rClockEnd"):
            value = owns.get(field)
            if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{8}", value):
                raise ValueError(f"claim field {field} is {value!r}, not 8 lowercase hex digits")
            bounds.append(int(value, 16))
        return cls(*bounds)

    def owns(self) -> dict[str, str]:
        """As a fence or an index entry states it."""
        return {
            "keyBegin": f"{self.key_begin:08x}",
            "keyEnd": f"{self.key_end:08x}",
            "rClockBegin": f"{self.r_clock_begin:08x}",
            "rClockEnd": f"{self.r_clock_end:08x}",
        }

    def __str__(self) -> str:
        return (
            f"keys [{self.key_begin:08x}, {self.key_end:08x}] x r-clocks "
            f"[{self.r_clock_begin:08x}, {self.r_clock_end:08x}]"
        )

    @property
    def size(self) -> int:
        """How many (key, r-clock) points."""
        return (self.key_end - self.key_begin + 1) * (self.r_clock_end - self.r_clock_begin + 1)

    def overlaps(self, other: Ranges) -> bool:
        return (
            self.key_begin <= other.key_end
            and other.key_begin <= self.key_end
            and self.r_clock_begin <= other.r_clock_end
            and other.r_clock_begin <= self.r_clock_end
        )

    def contains(self, other: Ranges) -> bool:
        return (
            self.key_begin <= other.key_begin
            and other.key_end <= self.key_end
            and self.r_clock_begin <= other.r_clock_begin
            and other.r_clock_end <= self.r_clock_end
        )

    def intersection(self, other: Ranges) -> Ranges | None:
        if not self.overlaps(other):
            return None
        return Ranges(
            max(self.key_begin, other.key_begin),
            min(self.key_end, other.key_end),
            max(self.r_clock_begin, other.r_clock_begin),
            min(self.r_clock_end, other.r_clock_end),
        )


EVERYTHING = Ranges(0, FULL, 0, FULL)


@dataclasses.dataclass(frozen=True)
class FenceBody:
    epoch: int
    note: str
    owns: Ranges | None


def parse_fence_body(payload: bytes) -> FenceBody:
    """A fence's payload: ``{"epoch", "note", "nonce"}`` and, for a shard primary's fence,
    ``"owns"``. ValueError if it is not one."""
    try:
        body = json.loads(payload)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("epoch"), int):
        raise ValueError(f"no epoch in {body!r}")
    owns = body.get("owns")
    return FenceBody(
        body["epoch"], str(body.get("note", "")), None if owns is None else Ranges.from_owns(owns)
    )


def claim_index_body(epoch: int, owns: Ranges) -> bytes:
    """The bytes of ``<log>/claims/<offset>.json`` (what ``RecoveryLog.index_claim``
    writes), for tests that write the index themselves."""
    return json.dumps({"epoch": epoch, "owns": owns.owns()}, sort_keys=True).encode()


def claim_index_key(log: str, offset: int) -> str:
    return f"{log}{CLAIMS}{offset:0{OFFSET_DIGITS}x}.json"


# -- findings -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Violation:
    check: str
    log: str
    offset: int | None
    epoch: int | None
    message: str

    def __str__(self) -> str:
        where = self.log
        if self.offset is not None:
            where += f" @ {self.offset:#x}"
        if self.epoch is not None:
            where += f" (epoch {self.epoch})"
        return f"[{self.check}] {where}: {self.message}"


class CheckpointRow(NamedTuple):
    """A materialization's row of ``shardkeeper_checkpoints``: its shard (a Shard's name
    ``<task>-<keyBegin>-<rClockBegin>`` or a log's name), the epoch that wrote it."""

    shard: str
    epoch: int
    checkpoint: Any = None


@dataclasses.dataclass(frozen=True)
class LogSummary:
    name: str
    first_offset: int
    head: int
    commits: int
    fences: int
    # (parent log, fence offset) if this log was forked
    fork: tuple[str, int] | None
    # (fence offset, epoch, ranges) of every claiming fence, in offset order
    claims: tuple[tuple[int, int, Ranges], ...]
    newest_epoch: int
    current_claim: Ranges | None


@dataclasses.dataclass
class OwnershipReport:
    prefix: str
    logs: dict[str, LogSummary]
    violations: list[Violation]
    warnings: list[Violation]
    retired: frozenset[str] = frozenset()

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def commits(self) -> int:
        return sum(log.commits for log in self.logs.values())

    @property
    def fences(self) -> int:
        return sum(log.fences for log in self.logs.values())

    @property
    def forks(self) -> int:
        return sum(1 for log in self.logs.values() if log.fork is not None)

    def failed(self, check: str) -> list[Violation]:
        return [v for v in self.violations if v.check == check]

    def summary(self) -> str:
        lines = [
            f"{len(self.logs)} logs under {self.prefix!r}: {self.commits} commits, "
            f"{self.fences} fences, {self.forks} forks; {len(self.violations)} violations, "
            f"{len(self.warnings)} warnings"
        ]
        for log in self.logs.values():
            fork = f", forked from {log.fork[0]} @ {log.fork[1]:#x}" if log.fork else ""
            retired = " (retired)" if log.name in self.retired else ""
            lines.append(
                f"  {log.name}{retired}: {log.commits} commits, {log.fences} fences, "
                f"{len(log.claims)} claims, now {log.current_claim}{fork}"
            )
        lines += [f"  violation {v}" for v in self.violations]
        lines += [f"  warning {w}" for w in self.warnings]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """For a benchmark's results file."""
        return {
            "prefix": self.prefix,
            "logs": len(self.logs),
            "commits": self.commits,
            "fences": self.fences,
            "forks": self.forks,
            "claims": {name: len(log.claims) for name, log in self.logs.items()},
            "violations": [str(v) for v in self.violations],
            "warnings": [str(w) for w in self.warnings],
        }


class OwnershipViolation(AssertionError):
    """The logs break the split invariant; ``violations`` lists every way they do."""

    def __init__(self, report: OwnershipReport) -> None:
        self.report = report
        self.violations = list(report.violations)
        super().__init__(report.summary())


# -- reading one log ------------------------------------------------------------------------


@dataclasses.dataclass
class _Fence:
    offset: int
    end: int
    epoch: int
    claim: Ranges | None
    commits: list[_Commit] = dataclasses.field(default_factory=list)

    def claim_contains(self, claim: Ranges) -> bool:
        return self.claim is not None and self.claim.contains(claim)


@dataclasses.dataclass(frozen=True)
class _Commit:
    offset: int
    epoch: int
    seq: int


@dataclasses.dataclass
class _Log:
    name: str
    infos: list[FragmentInfo]
    fences: list[_Fence] = dataclasses.field(default_factory=list)
    commits: int = 0
    fork: ForkRecord | None = None
    # offset -> (epoch, ranges) of the claim index
    index: dict[int, tuple[int, Ranges]] = dataclasses.field(default_factory=dict)
    # child log -> fence offset
    registrations: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def first_offset(self) -> int:
        return self.infos[0].begin if self.infos else 0

    @property
    def head(self) -> int:
        return self.infos[-1].end if self.infos else 0

    def claims(self) -> list[_Fence]:
        return [fence for fence in self.fences if fence.claim is not None]

    def fence_at(self, offset: int) -> _Fence | None:
        return next((fence for fence in self.fences if fence.offset == offset), None)

    def claim_before(self, offset: int) -> _Fence | None:
        found = None
        for fence in self.fences:
            if fence.offset >= offset:
                break
            if fence.claim is not None:
                found = fence
        return found

    @property
    def current_claim(self) -> Ranges | None:
        claims = self.claims()
        return claims[-1].claim if claims else None

    @property
    def newest_epoch(self) -> int:
        return max((fence.epoch for fence in self.fences), default=0)


class _Audit:
    def __init__(self, store: Objects, prefix: str, strict_epochs: bool, transfers: int) -> None:
        self.store = store
        self.prefix = prefix
        self.strict_epochs = strict_epochs
        self.transfers = transfers
        self.violations: list[Violation] = []
        self.warnings: list[Violation] = []

    def fail(self, check: str, log: str, offset: int | None, epoch: int | None, msg: str) -> None:
        self.violations.append(Violation(check, log, offset, epoch, msg))

    def warn(self, check: str, log: str, offset: int | None, epoch: int | None, msg: str) -> None:
        self.warnings.append(Violation(check, log, offset, epoch, msg))

    # -- discovery ------------------------------------------------------------------------

    def discover(self) -> dict[str, _Log]:
        logs: dict[str, _Log] = {}
        index_objects: list[tuple[str, str]] = []
        fork_objects: list[tuple[str, str]] = []
        for obj in self.store.list(self.prefix):
            for marker, found in ((JOURNAL, None), (CLAIMS, index_objects), (FORKS, fork_objects)):
                name, sep, _ = obj.key[len(self.prefix) :].rpartition(marker)
                if not sep or not name:
                    continue
                log_name = self.prefix + name
                if found is None:
                    info = fragment_info(log_name + JOURNAL.rstrip("/"), obj.key, obj.size)
                    # a tombstone (what pruning leaves of a fence) holds no offsets
                    if info is not None and not is_tombstone(info):
                        logs.setdefault(log_name, _Log(log_name, [])).infos.append(info)
                else:
                    found.append((log_name, obj.key))
                break
        for log in logs.values():
            log.infos.sort(key=lambda info: info.begin)
        for name, key in index_objects:
            if name in logs:
                self.read_index_entry(logs[name], key)
            else:
                self.fail("claim-index", name, None, None, f"{key} indexes a log with no journal")
        for name, key in fork_objects:
            if name in logs:
                self.read_registration(logs[name], key)
        return logs

    def read_index_entry(self, log: _Log, key: str) -> None:
        stem = key[len(log.name + CLAIMS) :].removesuffix(".json")
        data = self.store.get(key)
        if data is None:
            return
        try:
            if len(stem) != OFFSET_DIGITS:
                raise ValueError(f"{stem!r} is not a 16-digit offset")
            offset = int(stem, 16)
            body = json.loads(data)
            log.index[offset] = (int(body["epoch"]), Ranges.from_owns(body["owns"]))
        except (ValueError, KeyError, TypeError) as exc:
            self.fail("claim-index", log.name, None, None, f"{key} is unreadable: {exc}")

    def read_registration(self, log: _Log, key: str) -> None:
        data = self.store.get(key)
        if data is None:
            return
        try:
            body = json.loads(data)
            log.registrations[str(body["child"])] = int(body["fence_offset"])
        except (ValueError, KeyError, TypeError) as exc:
            self.fail("fork-registration", log.name, None, None, f"{key} is unreadable: {exc}")

    # -- the journal ----------------------------------------------------------------------

    def fetch(self, log: _Log) -> Iterator[tuple[FragmentInfo, Fragment | str]]:
        def one(info: FragmentInfo) -> Fragment | str:
            data = self.store.get(info.key)
            if data is None:
                return "listed, then gone"
            try:
                return decode_fragment(info.key, info.begin, data)
            except errors.StorageError as exc:
                return str(exc)

        with concurrent.futures.ThreadPoolExecutor(max(1, self.transfers)) as pool:
            # one log at a time and in offset order; fragments of a test are small
            yield from zip(log.infos, pool.map(one, log.infos), strict=True)

    def read_log(self, log: _Log) -> None:
        name = log.name
        expected = log.first_offset
        if expected != 0:
            self.warn("contiguous", name, expected, None, "the log starts here: pruned below")
        fence: _Fence | None = None
        unclaimed_reported: set[int] = set()
        for info, fragment in self.fetch(log):
            if info.begin > expected:
                self.fail("contiguous", name, expected, None, f"gap up to {info.begin:#x}")
            elif info.begin < expected:
                self.fail(
                    "contiguous",
                    name,
                    info.begin,
                    None,
                    f"fragment overlaps the previous one, which ends at {expected:#x}",
                )
            expected = max(expected, info.end)
            if isinstance(fragment, str):
                self.fail("fragment", name, info.begin, None, fragment)
                continue
            if fragment.kind is FragmentKind.FENCE:
                fence = self.read_fence(log, fragment, fence)
                continue
            where = f"{name}{JOURNAL}{fragment.begin:0{OFFSET_DIGITS}x}"
            try:
                record = decode_record(where, fragment.payload)
            except errors.StorageError as exc:
                self.fail("fragment", name, fragment.begin, fragment.epoch, str(exc))
                continue
            if isinstance(record, ForkRecord):
                if fragment.begin != 0:
                    self.fail(
                        "fork-record",
                        name,
                        fragment.begin,
                        fragment.epoch,
                        f"a fork record (of {record.parent!r}) inside the log",
                    )
                elif record.epoch != fragment.epoch:
                    self.fail(
                        "fork-record",
                        name,
                        0,
                        fragment.epoch,
                        f"the fork record says epoch {record.epoch}",
                    )
                else:
                    log.fork = record
                continue
            assert isinstance(record, CommitRecord)
            log.commits += 1
            self.read_commit(log, fragment, record, fence, unclaimed_reported)
        for offset, (epoch, owns) in sorted(log.index.items()):
            if offset < log.first_offset:
                continue
            found = log.fence_at(offset)
            if found is None:
                self.fail(
                    "claim-index",
                    name,
                    offset,
                    epoch,
                    f"the index claims {owns} for a fence that is not there",
                )

    def read_fence(self, log: _Log, fragment: Fragment, previous: _Fence | None) -> _Fence:
        name, offset, epoch = log.name, fragment.begin, fragment.epoch
        claim: Ranges | None = None
        try:
            body = parse_fence_body(fragment.payload)
        except ValueError as exc:
            self.fail("fence-body", name, offset, epoch, f"unreadable fence: {exc}")
        else:
            claim = body.owns
            if body.epoch != epoch:
                self.fail(
                    "fence-body", name, offset, epoch, f"the fence's body says epoch {body.epoch}"
                )
        indexed = log.index.get(offset)
        if indexed is not None:
            index_epoch, index_claim = indexed
            if index_epoch != epoch:
                self.fail("claim-index", name, offset, epoch, f"the index says epoch {index_epoch}")
            if claim is not None and index_claim != claim:
                self.fail(
                    "claim-index",
                    name,
                    offset,
                    epoch,
                    f"the fence claims {claim}, the index {index_claim}",
                )
            claim = claim or index_claim
        if previous is not None:
            if epoch < previous.epoch:
                self.fail(
                    "fence-epoch-order",
                    name,
                    offset,
                    epoch,
                    f"fence of epoch {epoch} after the fence at {previous.offset:#x} of "
                    f"epoch {previous.epoch}",
                )
            elif epoch == previous.epoch:
                report = self.fail if self.strict_epochs else self.warn
                report(
                    "fence-epoch-reuse",
                    name,
                    offset,
                    epoch,
                    f"a second fence of epoch {epoch} (the previous one is at "
                    f"{previous.offset:#x})",
                )
        fence = _Fence(offset, fragment.end, epoch, claim)
        log.fences.append(fence)
        first = next((f for f in log.fences if f.claim is not None), None)
        if claim is not None and first is not None and not first.claim_contains(claim):
            self.fail(
                "claim-within-start",
                name,
                offset,
                epoch,
                f"claims {claim}, outside the log's first claim {first.claim} (fence at "
                f"{first.offset:#x})",
            )
        return fence

    def read_commit(
        self,
        log: _Log,
        fragment: Fragment,
        record: CommitRecord,
        fence: _Fence | None,
        unclaimed_reported: set[int],
    ) -> None:
        name, offset, epoch = log.name, fragment.begin, fragment.epoch
        if fence is None:
            self.fail("commit-epoch", name, offset, epoch, "a commit before any fence")
            return
        if epoch < fence.epoch:
            self.fail(
                "commit-epoch",
                name,
                offset,
                epoch,
                f"a zombie committed: epoch {epoch} after the fence at {fence.offset:#x} of "
                f"epoch {fence.epoch} (claim {fence.claim})",
            )
        elif epoch > fence.epoch:
            self.fail(
                "commit-epoch",
                name,
                offset,
                epoch,
                f"a writer skipped fencing: epoch {epoch} after the fence at {fence.offset:#x} "
                f"of epoch {fence.epoch}",
            )
        fence.commits.append(_Commit(offset, epoch, record.seq))
        if fence.claim is None and fence.offset not in unclaimed_reported:
            unclaimed_reported.add(fence.offset)
            self.fail(
                "unclaimed-commits",
                name,
                offset,
                epoch,
                f"a commit under the fence at {fence.offset:#x}, which claims nothing (neither "
                "its body nor the index)",
            )

    # -- forks ----------------------------------------------------------------------------

    def check_forks(self, logs: Mapping[str, _Log]) -> None:
        for child in logs.values():
            if child.fork is not None:
                self.check_fork(logs, child, child.fork)
        for parent in logs.values():
            for name, offset in sorted(parent.registrations.items()):
                child_log = logs.get(name)
                if child_log is None or child_log.fork is None:
                    self.warn(
                        "fork-registration",
                        parent.name,
                        offset,
                        None,
                        f"registers a fork into {name!r}, which records no fork (the fork "
                        "never finished)",
                    )
                elif (child_log.fork.parent, child_log.fork.fence_offset) != (
                    parent.name,
                    offset,
                ):
                    fork = child_log.fork
                    self.fail(
                        "fork-registration",
                        parent.name,
                        offset,
                        None,
                        f"registers a fork into {name!r}, which forked from {fork.parent!r} at "
                        f"{fork.fence_offset:#x}",
                    )

    def check_fork(self, logs: Mapping[str, _Log], child: _Log, fork: ForkRecord) -> None:
        name, at = child.name, fork.fence_offset
        parent = logs.get(fork.parent)
        if parent is None:
            self.fail(
                "fork-parent",
                name,
                0,
                fork.epoch,
                f"forked from {fork.parent!r} at {at:#x}, which is not under {self.prefix!r}",
            )
            return
        registered = parent.registrations.get(name)
        if registered is None:
            self.fail(
                "fork-registration",
                parent.name,
                at,
                None,
                f"no registration of the fork into {name!r} (pruning would drop its history)",
            )
        elif registered != at:
            self.fail(
                "fork-registration",
                parent.name,
                registered,
                None,
                f"registers the fork into {name!r} at {registered:#x}, the child says {at:#x}",
            )
        child_claims = child.claims()
        if not child_claims:
            self.fail("fork-halves", name, None, None, "the forked log claims nothing")
        hand_off = parent.fence_at(at)
        if hand_off is None:
            self.fail(
                "fork-fence",
                parent.name,
                at,
                None,
                f"{name!r} forked here, but no fence begins at this offset",
            )
            return
        if hand_off.claim is None:
            self.fail(
                "fork-fence",
                parent.name,
                at,
                hand_off.epoch,
                f"{name!r} forked at this fence, which claims nothing",
            )
            return
        kept = hand_off.claim
        for claim in child_claims:
            assert claim.claim is not None
            both = kept.intersection(claim.claim)
            if both is not None:
                self.fail(
                    "fork-disjoint",
                    parent.name,
                    at,
                    hand_off.epoch,
                    f"the hand-off fence claims {kept}, overlapping {both} of the claim "
                    f"{claim.claim} of {name!r} at {claim.offset:#x}",
                )
        for fence in parent.fences:
            if fence.offset < at or fence.claim is None or not fence.commits:
                continue
            for claim in child_claims:
                assert claim.claim is not None
                both = fence.claim.intersection(claim.claim)
                if both is not None:
                    first = fence.commits[0]
                    self.fail(
                        "fork-parent-commits",
                        parent.name,
                        first.offset,
                        first.epoch,
                        f"{len(fence.commits)} commits after the fork of {name!r} at {at:#x} "
                        f"under the claim {fence.claim} (fence at {fence.offset:#x}), which "
                        f"overlaps the child's {claim.claim} in {both}",
                    )
                    break
        if child_claims:
            self.check_halves(parent, child, hand_off, child_claims[0])

    def check_halves(self, parent: _Log, child: _Log, hand_off: _Fence, first: _Fence) -> None:
        kept, given = hand_off.claim, first.claim
        assert kept is not None
        assert given is not None
        before = parent.claim_before(hand_off.offset)
        where = (parent.name, hand_off.offset, hand_off.epoch)
        if before is None or before.claim is None:
            self.fail("fork-halves", *where, "the parent claims nothing before the hand-off")
            return
        whole = before.claim
        halves = f"{kept} (kept) and {given} (the first claim of {child.name!r})"
        if not (whole.contains(kept) and whole.contains(given)):
            self.fail(
                "fork-halves",
                *where,
                f"{halves} do not both lie within {whole}, the parent's claim before (fence at "
                f"{before.offset:#x})",
            )
        elif kept.overlaps(given):
            self.fail("fork-halves", *where, f"{halves} overlap in {kept.intersection(given)}")
        elif kept.size + given.size != whole.size:
            self.fail(
                "fork-halves",
                *where,
                f"{halves} leave {whole.size - kept.size - given.size} points of {whole} (the "
                f"parent's claim before, fence at {before.offset:#x}) to nobody",
            )

    # -- leaves ---------------------------------------------------------------------------

    def check_leaves(self, logs: Mapping[str, _Log], retired: Collection[str]) -> None:
        leaves: list[tuple[str, Ranges]] = []
        for log in logs.values():
            if log.name in retired:
                continue
            claim = log.current_claim
            if claim is None:
                self.fail("leaves-cover", log.name, None, None, "a live log that claims nothing")
            else:
                leaves.append((log.name, claim))
        for index, (name, claim) in enumerate(leaves):
            for other, theirs in leaves[index + 1 :]:
                both = claim.intersection(theirs)
                if both is not None:
                    self.fail(
                        "leaves-disjoint",
                        name,
                        None,
                        None,
                        f"its current claim {claim} overlaps {theirs} of {other!r} in {both}",
                    )
        gaps = uncovered(claim for _, claim in leaves)
        if gaps:
            named = "; ".join(str(gap) for gap in gaps[:MAX_CELLS])
            more = f" and {len(gaps) - MAX_CELLS} more" if len(gaps) > MAX_CELLS else ""
            self.fail(
                "leaves-cover",
                self.prefix,
                None,
                None,
                f"no live log claims {named}{more}",
            )

    # -- checkpoint rows ------------------------------------------------------------------

    def check_rows(
        self, logs: Mapping[str, _Log], rows: Iterable[CheckpointRow], retired: Collection[str]
    ) -> None:
        seen: dict[str, CheckpointRow] = {}
        for raw in rows:
            row = CheckpointRow(*raw)
            name = resolve_log(row.shard, logs)
            if name is None:
                self.fail(
                    "row-epoch", row.shard, None, row.epoch, "a checkpoint row with no recovery log"
                )
                continue
            if name in seen:
                self.fail(
                    "row-epoch",
                    name,
                    None,
                    row.epoch,
                    f"a second checkpoint row ({row.shard!r}; the first is {seen[name].shard!r})",
                )
                continue
            seen[name] = row
            newest = logs[name].newest_epoch
            if row.epoch > newest:
                self.fail(
                    "row-epoch",
                    name,
                    None,
                    row.epoch,
                    f"the row of {row.shard!r} was written by epoch {row.epoch}, newer than the "
                    f"log's newest fence (epoch {newest})",
                )
            elif row.epoch < newest and name not in retired:
                self.fail(
                    "row-epoch",
                    name,
                    None,
                    row.epoch,
                    f"the row of {row.shard!r} has epoch {row.epoch}, but the log's newest fence "
                    f"is of epoch {newest}",
                )


def uncovered(claims: Iterable[Ranges]) -> list[Ranges]:
    """The cells of the whole space that none of ``claims`` covers, on the grid their bounds
    draw (so each is a maximal-by-grid rectangle; exact, whatever the claims)."""
    claims = list(claims)
    keys = sorted({0, FULL + 1} | {c.key_begin for c in claims} | {c.key_end + 1 for c in claims})
    clocks = sorted(
        {0, FULL + 1} | {c.r_clock_begin for c in claims} | {c.r_clock_end + 1 for c in claims}
    )
    gaps = []
    for k0, k1 in itertools.pairwise(keys):
        for r0, r1 in itertools.pairwise(clocks):
            cell = Ranges(k0, k1 - 1, r0, r1 - 1)
            if not any(c.contains(cell) for c in claims):
                gaps.append(cell)
    return gaps


def resolve_log(shard: str, logs: Mapping[str, Any]) -> str | None:
    """The log of ``shard``: a log's name, or a Shard's name ``<task>-<8 hex>-<8 hex>``
    whose begins name the log (``layout.recovery_log_name``)."""
    if shard in logs:
        return shard
    match = re.search(r"-([0-9a-f]{8}-[0-9a-f]{8})$", shard)
    if match is None:
        return None
    found = [name for name in logs if name.rsplit("/", 1)[-1] == match.group(1)]
    return found[0] if len(found) == 1 else None


# -- entry points ---------------------------------------------------------------------------


def audit_ownership(
    store: Objects,
    prefix: str,
    *,
    retired: Collection[str] = (),
    checkpoints: Iterable[CheckpointRow | tuple[str, int, Any]] | None = None,
    strict_epochs: bool = False,
    transfers: int = 8,
) -> OwnershipReport:
    """Read every recovery log under ``prefix`` (``/``-terminated, e.g.
    ``layout.task_recovery_dir(namespace, task)``) and check them; never raises for a
    violation (see :func:`check_ownership`).

    ``retired`` names logs (or Shards) that no longer own anything: they are left out of
    the leaves, and their checkpoint row may be older than their log. ``checkpoints`` are
    the materialization's rows, if there is one. ``strict_epochs`` makes two fences of one
    epoch a violation rather than a warning.
    """
    audit = _Audit(store, prefix, strict_epochs, transfers)
    logs = audit.discover()
    for log in logs.values():
        audit.read_log(log)
    retired_logs = frozenset(
        name for name in (resolve_log(r, logs) or r for r in retired) if name is not None
    )
    audit.check_forks(logs)
    audit.check_leaves(logs, retired_logs)
    if checkpoints is not None:
        audit.check_rows(logs, (CheckpointRow(*row) for row in checkpoints), retired_logs)
    summaries = {
        log.name: LogSummary(
            name=log.name,
            first_offset=log.first_offset,
            head=log.head,
            commits=log.commits,
            fences=len(log.fences),
            fork=None if log.fork is None else (log.fork.parent, log.fork.fence_offset),
            claims=tuple(
                (fence.offset, fence.epoch, fence.claim)
                for fence in log.fences
                if fence.claim is not None
            ),
            newest_epoch=log.newest_epoch,
            current_claim=log.current_claim,
        )
        for log in sorted(logs.values(), key=lambda log: log.name)
    }
    return OwnershipReport(prefix, summaries, audit.violations, audit.warnings, retired_logs)


def check_ownership(
    store: Objects,
    prefix: str,
    *,
    retired: Collection[str] = (),
    checkpoints: Iterable[CheckpointRow | tuple[str, int, Any]] | None = None,
    strict_epochs: bool = False,
    transfers: int = 8,
) -> OwnershipReport:
    """:func:`audit_ownership`, raising :class:`OwnershipViolation` if anything is broken."""
    report = audit_ownership(
        store,
        prefix,
        retired=retired,
        checkpoints=checkpoints,
        strict_epochs=strict_epochs,
        transfers=transfers,
    )
    if report.violations:
        raise OwnershipViolation(report)
    return report


def check_task_ownership(
    store: Objects, namespace: str, task: str, **options: Any
) -> OwnershipReport:
    """:func:`check_ownership` of every recovery log of ``task``."""
    return check_ownership(store, task_recovery_dir(namespace, task), **options)


__all__ = [
    "EVERYTHING",
    "CheckpointRow",
    "FenceBody",
    "LogSummary",
    "Objects",
    "OwnershipReport",
    "OwnershipViolation",
    "Ranges",
    "Violation",
    "audit_ownership",
    "check_ownership",
    "check_task_ownership",
    "claim_index_body",
    "claim_index_key",
    "parse_fence_body",
    "resolve_log",
    "uncovered",
]
