"""Collection retention: delete the old beginning of a collection's journals once every
reader has read it.

A journal's fragment may go when all of these hold:

* it is beyond the retention: written at least ``max_age`` ago, or followed in its
  journal by at least ``max_bytes`` of newer fragments (either limit suffices; an unset
  one never does);
* every reader of the journal has checkpointed to its end or past it. A reader whose
  position is unknown (``None``) holds the whole journal back;
* it is not the journal's last fragment: that one ends at the head, so a writer that
  resumes from the head it finds by listing, and a reader that discovers the journal by
  listing, still find it;
* every fragment before it goes too: only a journal's beginning is ever deleted, so
  retention never opens a gap in the middle of a journal (which readers treat as lost
  data).

:func:`plan_journal` decides, purely; :func:`list_collection` and :func:`apply` are the
I/O around it. Fragments are deleted oldest first, one request each, so a run that stops
half way still leaves every journal contiguous.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence

from shardkeeper.storage.fragment import fragment_info, is_tombstone
from shardkeeper.storage.layout import collection_dir, object_key
from shardkeeper.storage.objectstore import ObjectStore


@dataclasses.dataclass(frozen=True)
class Limits:
    """A collection's retention; an unset limit never makes a fragment go."""

    max_age: datetime.timedelta | None = None
    max_bytes: int | None = None


@dataclasses.dataclass(frozen=True)
class StoredFragment:
    """A fragment as a listing shows it: its object key, its offsets, when it was written."""

    key: str
    begin: int
    end: int
    written: datetime.datetime

    @property
    def size(self) -> int:
        return self.end - self.begin


@dataclasses.dataclass(frozen=True)
class JournalPlan:
    journal: str
    delete: tuple[StoredFragment, ...]
    keep: tuple[StoredFragment, ...]
    # why nothing more goes: "" when the retention itself keeps the rest
    held_back: str = ""

    @property
    def removed_bytes(self) -> int:
        return sum(f.size for f in self.delete)

    @property
    def kept_bytes(self) -> int:
        return sum(f.size for f in self.keep)


def beyond_retention(
    fragment: StoredFragment, head: int, limits: Limits, now: datetime.datetime
) -> bool:
    """Whether ``fragment`` is older than ``limits`` allow, in a journal whose head is
    ``head``."""
    if limits.max_age is not None and now - fragment.written >= limits.max_age:
        return True
    return limits.max_bytes is not None and head - fragment.end >= limits.max_bytes


def plan_journal(
    journal: str,
    fragments: Sequence[StoredFragment],
    readers: Mapping[str, int | None],
    limits: Limits,
    now: datetime.datetime,
) -> JournalPlan:
    """What retention deletes of ``journal``: ``fragments`` in offset order, ``readers``
    the committed position in this journal of each reader (``None``: not known)."""
    ordered = sorted(fragments, key=lambda f: f.begin)
    unknown = sorted(name for name, position in readers.items() if position is None)
    if unknown:
        why = f"the positions of {', '.join(unknown)} are not known"
        return JournalPlan(journal, (), tuple(ordered), why)
    if not ordered:
        return JournalPlan(journal, (), ())
    floor = min((p for p in readers.values() if p is not None), default=None)
    head = ordered[-1].end
    count = 0
    held_back = ""
    for fragment in ordered[:-1]:
        if not beyond_retention(fragment, head, limits, now):
            break
        if floor is not None and fragment.end > floor:
            slowest = min(name for name, p in readers.items() if p == floor)
            held_back = f"{slowest} has read {journal} only up to {floor:#x}"
            break
        count += 1
    return JournalPlan(journal, tuple(ordered[:count]), tuple(ordered[count:]), held_back)


def list_collection(
    objects: ObjectStore, prefix: str, namespace: str, collection: str
) -> dict[str, list[StoredFragment]]:
    """Every journal of ``collection`` (relative names) and its fragments, in order, from
    one listing of its directory."""
    base = object_key(prefix, collection_dir(namespace, collection))
    journals: dict[str, list[StoredFragment]] = {}
    for obj in objects.list(base):
        writer, slash, _ = obj.key[len(base) :].partition("/")
        if not slash:
            continue  # an object right in the directory is no journal
        info = fragment_info(base + writer, obj.key, obj.size)
        if info is None or is_tombstone(info):
            continue
        name = collection_dir(namespace, collection) + writer
        stored = StoredFragment(obj.key, info.begin, info.end, obj.last_modified)
        journals.setdefault(name, []).append(stored)
    return journals


@dataclasses.dataclass(frozen=True)
class RetentionRun:
    """What one run over a collection did."""

    plans: tuple[JournalPlan, ...]

    @property
    def removed_bytes(self) -> int:
        return sum(p.removed_bytes for p in self.plans)

    @property
    def removed_fragments(self) -> int:
        return sum(len(p.delete) for p in self.plans)

    @property
    def retained_bytes(self) -> int:
        return sum(p.kept_bytes for p in self.plans)

    @property
    def oldest_retained(self) -> datetime.datetime | None:
        return min((f.written for p in self.plans for f in p.keep), default=None)

    @property
    def held_back(self) -> str:
        # one reader without a position holds back every journal: say so once
        return "; ".join(dict.fromkeys(p.held_back for p in self.plans if p.held_back))


def apply(
    objects: ObjectStore,
    prefix: str,
    namespace: str,
    collection: str,
    *,
    readers: Mapping[str, Mapping[str, int] | None],
    limits: Limits,
    now: datetime.datetime,
    dry_run: bool = False,
) -> RetentionRun:
    """Plan and delete for every journal of ``collection``. ``readers``: each reading
    shard's committed positions by journal (a journal it has no position in counts as 0,
    where it would start), or ``None`` when its positions are not known."""
    plans = []
    for journal, fragments in sorted(
        list_collection(objects, prefix, namespace, collection).items()
    ):
        positions = {
            name: None if known is None else known.get(journal, 0)
            for name, known in readers.items()
        }
        plan = plan_journal(journal, fragments, positions, limits, now)
        if not dry_run:
            for fragment in plan.delete:
                # one at a time, oldest first: a run cut short never leaves a gap behind
                objects.delete([fragment.key])
        plans.append(plan)
    return RetentionRun(tuple(plans))
