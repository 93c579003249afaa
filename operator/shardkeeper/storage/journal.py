"""Append-only journals on object storage: append, fence, read from any offset, tail.

See :mod:`.fragment` for how fragments are named and laid out. A journal has one writer at
a time, identified by an epoch. A writer appends at its head with a conditional create, so
if anyone else took that offset first the create fails and the writer learns it was fenced.
A new writer takes a journal over by appending a fence fragment at the head it finds; from
then on every older writer's next append hits a taken key. Nobody ever retries into a
journal past a fragment that is not theirs.

Epochs along a journal never decrease: a reader that sees them do so raises, because only
a writer that skipped fencing could have caused it. A fence's epoch is also unique: it must
be strictly newer than every epoch before it, so no two writers (two replicas that each
computed "newest + 1") ever share one, and whatever is fenced by epoch downstream (a
materialization's ``WHERE epoch = N``) tells them apart.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping

from shardkeeper.storage import errors
from shardkeeper.storage.faults import NO_FAULTS, FaultPoint, Faults
from shardkeeper.storage.fragment import (
    HEADER_SIZE,
    MAX_FENCE_BYTES,
    Fragment,
    FragmentInfo,
    FragmentKind,
    decode_fragment,
    decode_fragment_parts,
    encode_fragment,
    fragment_info,
    fragment_key,
    is_tombstone,
)
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper.storage.retry import PollBackoff, PollPolicy

#: fragments fetched ahead of the one being consumed while reading a range
DEFAULT_READ_AHEAD = 4
#: seconds of quiet between two checks of an idle tail for a gap (see Journal.tail)
GAP_CHECK_EVERY = 60.0

#: how a tail spends a wait: ``wait(offset, seconds)``, for data past ``offset``
Wait = Callable[[int, float], None]


def check_contiguous(journal: str, infos: list[FragmentInfo], start: int) -> None:
    """Raise unless ``infos`` cover ``[start, last end)`` with no gap and no overlap."""
    expected = start
    for info in infos:
        if info.begin > expected:
            raise errors.JournalGap(journal, expected, info.begin)
        if info.begin < expected:
            raise errors.JournalCorrupt(
                f"journal {journal!r}: fragment {info.key} begins at {info.begin:#x}, inside "
                f"the previous fragment that ends at {expected:#x}: two writers wrote without "
                "fencing"
            )
        expected = info.end


@dataclasses.dataclass(frozen=True)
class FenceInfo:
    """A fence fragment: where it sits and which epoch took the journal over."""

    offset: int
    end: int
    epoch: int


# what a fence says its writer will append for: opaque to storage (the runtime puts the
# ranges of the shard there, see docs/splits.md)
Claim = Mapping[str, str]


def fence_payload(epoch: int, note: str, owns: Claim | None = None) -> bytes:
    # the nonce makes every fence unique, so a writer never mistakes another's for its own
    body: dict[str, object] = {"epoch": epoch, "note": note[:1024], "nonce": uuid.uuid4().hex}
    if owns is not None:
        body["owns"] = dict(owns)
    payload = json.dumps(body, sort_keys=True).encode()
    if len(payload) > MAX_FENCE_BYTES:
        # pruning tells fences from data by size first (storage/prune.py)
        raise ValueError(f"a fence's payload is {len(payload)} bytes, over {MAX_FENCE_BYTES}")
    return payload


def fence_claim(fragment: Fragment) -> dict[str, str] | None:
    """The claim of a fence fragment; ``None`` for a fence without one (or no fence)."""
    if fragment.kind is not FragmentKind.FENCE:
        return None
    try:
        owns = json.loads(fragment.payload).get("owns")
    except (ValueError, AttributeError):
        return None
    if not isinstance(owns, dict):
        return None
    return {str(k): str(v) for k, v in owns.items()}


class Journal:
    """Reading side of a journal; also where writers come from (:meth:`fence`)."""

    def __init__(self, store: ObjectStore, prefix: str, *, faults: Faults = NO_FAULTS) -> None:
        self.store = store
        self.prefix = prefix.rstrip("/")
        self.faults = faults

    def __repr__(self) -> str:
        return f"Journal(s3://{self.store.bucket}/{self.prefix})"

    @property
    def name(self) -> str:
        return self.prefix

    def key(self, begin: int) -> str:
        return fragment_key(self.prefix, begin)

    # -- listing -------------------------------------------------------------------------

    def list_fragments(self, from_offset: int = 0) -> list[FragmentInfo]:
        """Fragments beginning at or after ``from_offset``, in order (not checked).
        Tombstones (what pruning leaves of fences) hold no offsets and are left out."""
        start_after = None if from_offset == 0 else self.key(from_offset - 1)
        infos = []
        for obj in self.store.list(self.prefix + "/", start_after=start_after):
            info = fragment_info(self.prefix, obj.key, obj.size)
            if info is not None and not is_tombstone(info):
                infos.append(info)
        return infos

    def bounds(self) -> tuple[int, int] | None:
        """``(first offset held, head)``, or ``None`` for a journal with no fragment."""
        infos = self.list_fragments()
        if not infos:
            return None
        check_contiguous(self.name, infos, infos[0].begin)
        return infos[0].begin, infos[-1].end

    def head(self, from_offset: int = 0) -> int:
        """The offset the next append goes to. ``from_offset`` must be a fragment boundary
        known to be at or below the head; it saves listing what lies before it."""
        infos = self.list_fragments(from_offset)
        if not infos:
            return from_offset
        check_contiguous(self.name, infos, _first_held(infos, from_offset))
        return infos[-1].end

    # -- reading -------------------------------------------------------------------------

    def read_fragment(self, begin: int) -> Fragment | None:
        """The fragment that begins at ``begin``, verified, or ``None`` if there is none
        (or only a tombstone: pruned)."""
        key = self.key(begin)
        data = self.store.get(key)
        if data is None:
            return None
        fragment = decode_fragment(key, begin, data)
        return None if not fragment.payload else fragment

    def _locate(self, offset: int) -> list[FragmentInfo]:
        """Fragments from the one holding ``offset`` to the head, from a full listing."""
        infos = self.list_fragments(0)
        head = infos[-1].end if infos else 0
        if offset == head:
            return []
        for index, info in enumerate(infos):
            if info.begin <= offset < info.end:
                return infos[index:]
        later = [i.begin for i in infos if i.begin > offset]
        raise errors.JournalGap(self.name, offset, later[0] if later else None)

    def read(
        self,
        offset: int,
        until: int | None = None,
        *,
        read_ahead: int = DEFAULT_READ_AHEAD,
        boundary: bool = False,
    ) -> Iterator[Fragment]:
        """Fragments holding ``[offset, until)`` (or up to the current head), verified.

        A fragment straddling ``offset`` or ``until`` is trimmed to the range. Fragments are
        fetched ``read_ahead`` at a time so a long read streams at the store's speed while
        memory stays bounded by ``read_ahead`` fragments. ``boundary`` says the caller
        knows ``offset`` is where a fragment begins or the head (it saves a full listing).
        """
        if until is not None and offset >= until:
            return
        infos = self.list_fragments(offset)
        if boundary:
            if infos and infos[0].begin != offset:
                raise errors.JournalGap(self.name, offset, infos[0].begin)
        elif not infos or infos[0].begin != offset:
            # ``offset`` is inside a fragment, at the head, or its data is gone
            infos = self._locate(offset)
        check_contiguous(self.name, infos, infos[0].begin if infos else offset)
        if until is not None:
            infos = [i for i in infos if i.begin < until]
        last_epoch = 0
        for fragment in self._fetch(infos, read_ahead):
            if fragment.epoch < last_epoch:
                raise errors.JournalCorrupt(
                    f"journal {self.name!r}: fragment at {fragment.begin:#x} has epoch "
                    f"{fragment.epoch} after epoch {last_epoch}: a writer skipped fencing"
                )
            last_epoch = fragment.epoch
            yield _trim(fragment, offset, until)

    def _fetch(self, infos: Iterable[FragmentInfo], read_ahead: int) -> Iterator[Fragment]:
        pending: collections.deque[concurrent.futures.Future[Fragment]] = collections.deque()
        todo = iter(infos)
        with concurrent.futures.ThreadPoolExecutor(max(1, read_ahead)) as pool:

            def submit() -> bool:
                info = next(todo, None)
                if info is None:
                    return False
                pending.append(pool.submit(self._fetch_one, info))
                return True

            try:
                for _ in range(max(1, read_ahead)):
                    if not submit():
                        break
                while pending:
                    fragment = pending.popleft().result()
                    submit()
                    yield fragment
            finally:
                for future in pending:
                    future.cancel()

    def _fetch_one(self, info: FragmentInfo) -> Fragment:
        # header and payload read apart, so that no payload is copied out of its object
        key = self.key(info.begin)
        parts = self.store.get_split(key, HEADER_SIZE)
        fragment = None if parts is None else decode_fragment_parts(key, info.begin, *parts)
        if fragment is None or not fragment.payload:
            raise errors.JournalGap(self.name, info.begin, None)
        return fragment

    def tail(
        self,
        offset: int,
        stop: threading.Event,
        *,
        poll: PollPolicy | None = None,
        wait: Wait | None = None,
    ) -> Iterator[Fragment]:
        """Fragments from ``offset`` on, waiting for new ones until ``stop`` is set.

        Waits grow from ``poll.min_delay`` to ``poll.max_delay`` while the journal is idle
        (and on to ``poll.idle_max_delay`` once it has been quiet a while, see
        :class:`PollPolicy`), and drop to zero as soon as a fragment arrives. ``wait(offset,
        seconds)`` is how a wait is spent (``stop.wait`` by default): a writer's hint may end
        it early (``runtime/core/hints.py``); it must return once ``stop`` is set.

        When the polls reach their longest delay, and then every :data:`GAP_CHECK_EVERY`
        seconds of quiet, a poll lists from ``offset`` instead of reading the next key: the
        listing also shows a fragment written past a missing one (a gap would otherwise
        look like an idle journal forever), for the same one request.
        """
        for fragment in self.read(offset):
            yield fragment
            offset = fragment.end
        backoff = PollBackoff(poll or PollPolicy())
        checked_at: float | None = None  # backoff.quiet at the last gap check
        while not stop.is_set():
            due = backoff.idle_at_max and (
                checked_at is None or backoff.quiet - checked_at >= GAP_CHECK_EVERY
            )
            if due:
                checked_at = backoff.quiet
                arrived = self._poll_listing(offset)
            else:
                arrived = self.read_fragment(offset)
            if arrived is not None:
                backoff = backoff.after(found=True)
                checked_at = None
                yield arrived
                offset = arrived.end
                continue
            backoff = backoff.after(found=False)
            if wait is None:
                stop.wait(backoff.current)
            else:
                wait(offset, backoff.current)

    def _poll_listing(self, offset: int) -> Fragment | None:
        """The fragment at ``offset``, found by listing from it: raises
        :class:`JournalGap` if the first fragment listed begins past it."""
        after = self.key(offset - 1) if offset else self.prefix + "/"
        beyond = self.store.first_after(self.prefix + "/", after)
        info = None if beyond is None else fragment_info(self.prefix, beyond.key, beyond.size)
        if info is None:
            return None
        if is_tombstone(info):  # the fence there was pruned before this tail read it
            raise errors.JournalGap(self.name, offset, None)
        if info.begin != offset:
            raise errors.JournalGap(self.name, offset, info.begin)
        return self.read_fragment(offset)

    # -- writing -------------------------------------------------------------------------

    def writer(self, epoch: int, head: int) -> JournalWriter:
        """A writer that trusts ``head`` (it appended there itself, or just fenced)."""
        return JournalWriter(self, epoch, head)

    def last_epoch(self, infos: list[FragmentInfo]) -> int:
        if not infos:
            return 0
        last = self.read_fragment(infos[-1].begin)
        return 0 if last is None else last.epoch

    def fence(
        self, epoch: int, *, note: str = "", from_offset: int = 0, owns: Claim | None = None
    ) -> tuple[JournalWriter, FenceInfo]:
        """Take the journal over with ``epoch``: append a fence at the head, wherever it is.

        ``from_offset`` is a fragment boundary at or below the head (saves listing).
        Raises :class:`StaleEpoch` if the journal already holds ``epoch`` or a newer one:
        a writer that finds its epoch taken lost a race to a writer that chose the same.
        """
        self.store.ensure_conditional_writes()
        infos = self.list_fragments(from_offset)
        check_contiguous(self.name, infos, _first_held(infos, from_offset))
        head = infos[-1].end if infos else from_offset
        newest = self.last_epoch(infos)
        if newest >= epoch:
            raise errors.StaleEpoch(self.name, epoch, newest)
        payload = fence_payload(epoch, note, owns)
        while True:
            writer = JournalWriter(self, epoch, head)
            taken = writer.try_append(payload, FragmentKind.FENCE)
            if taken.kind is FragmentKind.FENCE and taken.payload == payload:
                return writer, FenceInfo(taken.begin, taken.end, epoch)
            if taken.epoch < epoch:
                # an older writer got one more append in before us: fence after it
                head = taken.end
                continue
            raise errors.StaleEpoch(self.name, epoch, taken.epoch)

    def fence_after(
        self, writer: JournalWriter, *, note: str = "", owns: Claim | None = None
    ) -> tuple[JournalWriter, FenceInfo]:
        """Fence with ``writer``'s epoch right at its head, where its own last append ended
        (a fork record it just wrote, see :meth:`ShardStore.fork_into`): the one fence that
        may share the epoch of the fragment before it, because that fragment is its own.
        Anything already at the head, even a fence of the same epoch, raises
        :class:`StaleEpoch`."""
        self.store.ensure_conditional_writes()
        payload = fence_payload(writer.epoch, note, owns)
        head = writer.head
        taken = writer.try_append(payload, FragmentKind.FENCE)
        if taken.begin == head and taken.kind is FragmentKind.FENCE and taken.payload == payload:
            return writer, FenceInfo(taken.begin, taken.end, writer.epoch)
        raise errors.StaleEpoch(self.name, writer.epoch, taken.epoch)


class JournalWriter:
    """Appends for one epoch. After a failure whose outcome is unknown, or after being
    fenced, it refuses every further append: it must never write past someone else."""

    def __init__(self, journal: Journal, epoch: int, head: int) -> None:
        self.journal = journal
        self.epoch = epoch
        self.head = head
        self._broken: errors.StorageError | None = None

    def try_append(self, payload: bytes, kind: FragmentKind = FragmentKind.DATA) -> Fragment:
        """Append at the head; return our fragment, or the fragment someone else put there.

        The caller tells them apart by comparing with what it asked for; :meth:`append`
        does that and raises :class:`Fenced`.
        """
        if self._broken is not None:
            raise self._broken
        journal = self.journal
        fragment = Fragment(self.head, self.epoch, kind, payload)
        key = journal.key(self.head)
        data = encode_fragment(fragment)
        journal.faults.reached(FaultPoint.APPEND_BEFORE_PUT)
        try:
            created = journal.store.create(key, data)
            existing = None if created else journal.store.get(key)
        except errors.StorageUnavailable as exc:
            self._broken = errors.AppendOutcomeUnknown(journal.name, self.head, str(exc))
            raise self._broken from exc
        if not created:
            if existing is None:
                self._broken = errors.AppendOutcomeUnknown(
                    journal.name, self.head, "the key was taken, then vanished"
                )
                raise self._broken
            if existing != data:
                theirs = decode_fragment(key, self.head, existing)
                self._broken = errors.Fenced(journal.name, self.head, self.epoch, theirs.epoch)
                return theirs
            # a retried request whose first attempt had landed: it is ours
        journal.faults.reached(FaultPoint.APPEND_AFTER_PUT)
        self.head = fragment.end
        return fragment

    def append(self, payload: bytes, kind: FragmentKind = FragmentKind.DATA) -> Fragment:
        """Append ``payload`` as one fragment. Raises :class:`Fenced` if someone else holds
        the head, :class:`AppendOutcomeUnknown` if the store never answered."""
        if not payload:
            raise ValueError("an append needs at least one byte")
        begin = self.head
        written = self.try_append(payload, kind)
        if written.begin != begin or written.epoch != self.epoch or written.payload != payload:
            raise errors.Fenced(self.journal.name, begin, self.epoch, written.epoch)
        return written

    @property
    def broken(self) -> errors.StorageError | None:
        return self._broken


def _first_held(infos: list[FragmentInfo], from_offset: int) -> int:
    # offset 0 means "wherever the journal starts": pruning may have removed its beginning
    return infos[0].begin if infos and from_offset == 0 else from_offset


def _trim(fragment: Fragment, offset: int, until: int | None) -> Fragment:
    start = max(0, offset - fragment.begin)
    stop = (
        len(fragment.payload)
        if until is None
        else min(len(fragment.payload), until - fragment.begin)
    )
    if start == 0 and stop == len(fragment.payload):
        return fragment
    return Fragment(
        fragment.begin + start, fragment.epoch, fragment.kind, fragment.payload[start:stop]
    )
