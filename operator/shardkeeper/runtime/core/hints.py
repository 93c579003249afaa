"""Write hints: a journal's writer tells its idle readers that new data is there.

Readers of an idle journal poll the bucket seldom (``storage/retry.py`` PollPolicy: up to
tens of seconds), which keeps an idle shard cheap in S3 requests. So that a document
written after a quiet spell is still read at once, the writer wakes them:

- A writer that takes a journal over writes the address where it serves hints into the
  journal's writer object (``storage/fragment.py`` :func:`writer_key`, next to the
  fragments; no listing of fragments sees it) and serves the journal on its
  :class:`HintBoard`, which learns each head from the appends themselves (the object
  store's ``on_created``).
- Its admin endpoint answers ``GET /hint?journal=J&after=N&wait=S`` when its head of ``J``
  passes ``N``, or after ``S`` seconds, with ``{"head": H}``; 410 when it does not write
  ``J`` (any more).
- A reader about to wait long reads the writer object once, and a :class:`HintWatcher`
  thread long-polls the writer for the offset the reader waits at; an answer past it ends
  the wait early.

A hint is only a wake-up: the data is still read from the bucket, and is there before
the writer's head moves (the head moves when the append has landed). A hint lost, a
writer unreachable (another node behind a NetworkPolicy, a stale address after a
failover) or lying costs only the poll delay, never data.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping

from shardkeeper.storage.fragment import fragment_info, writer_key
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper.storage.retry import PollBackoff, PollPolicy

log = logging.getLogger(__name__)

#: a reader asks for hints only for waits at least this long (shorter ones end soon anyway)
HINT_FROM = 0.2
#: how long one long-poll is held by the writer (the reader asks again after it)
LONG_POLL = 25.0
#: the longest wait a writer holds a long-poll for, whatever a reader asks
LONG_POLL_MAX = 60.0
#: long-polls a writer holds at once (each holds a thread of its admin server); more are
#: answered 503 at once, and their readers fall back to polling the bucket
MAX_WAITERS = 256
#: how soon a reader looks for the writer's address again after it was missing or did
#: not answer: 5 s, doubling while that goes on, up to 10 minutes
ADDRESS_RETRY = PollPolicy(min_delay=5.0, max_delay=600.0, factor=2.0)


class HintBoard:
    """The heads of the journals this process writes, for readers waiting on them."""

    def __init__(
        self, on_hint: Callable[[], None] = lambda: None, *, max_waiters: int = MAX_WAITERS
    ) -> None:
        self._changed = threading.Condition()
        self._heads: dict[str, int] = {}
        self._max_waiters = max_waiters
        self._waiting = 0
        # told of each wait answered with a head past it (the replica's metric)
        self._on_hint = on_hint

    def serve(self, journals: Mapping[str, int]) -> None:
        """Serve hints for ``journals`` (object key prefixes), whose heads are known to be
        at least the given ones."""
        with self._changed:
            for journal, head in journals.items():
                self._heads[journal] = max(head, self._heads.get(journal, 0))
            self._changed.notify_all()

    def retire(self, journals: Iterable[str]) -> None:
        """Stop serving ``journals``: their waiting readers are answered 410 now."""
        with self._changed:
            for journal in journals:
                self._heads.pop(journal, None)
            self._changed.notify_all()

    def created(self, key: str, size: int) -> None:
        """The object store created ``key`` of ``size`` bytes: if it is a fragment of a
        served journal, its head moves to the fragment's end."""
        journal = key.rpartition("/")[0]
        with self._changed:
            if journal not in self._heads:
                return
            info = fragment_info(journal, key, size)
            if info is None or info.end <= self._heads[journal]:
                return
            self._heads[journal] = info.end
            self._changed.notify_all()

    @property
    def waiting(self) -> int:
        """Long-polls held now."""
        with self._changed:
            return self._waiting

    def head(self, journal: str) -> int | None:
        with self._changed:
            return self._heads.get(journal)

    def wait(self, journal: str, after: int, timeout: float) -> int | None:
        """The head of ``journal`` once it is past ``after``, or after ``timeout`` seconds
        (then at most ``after``); ``None`` if this process does not serve ``journal``.
        Raises :class:`HintsBusy` when ``max_waiters`` wait already."""
        deadline = time.monotonic() + timeout
        with self._changed:
            if self._waiting >= self._max_waiters:
                raise HintsBusy(f"{self._waiting} readers wait already")
            self._waiting += 1
            try:
                while True:
                    head = self._heads.get(journal)
                    if head is not None and head > after:
                        self._on_hint()
                    if head is None or head > after:
                        return head
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return head
                    self._changed.wait(left)
            finally:
                self._waiting -= 1


class HintsBusy(Exception):
    """A writer holds as many long-polls as it may."""


def answer_hint(board: HintBoard, query: Mapping[str, str]) -> tuple[int, str, bytes]:
    """The admin endpoint's ``/hint``: (status, content type, body)."""
    try:
        journal = query["journal"]
        after = int(query["after"])
        wait = min(LONG_POLL_MAX, max(0.0, float(query.get("wait", LONG_POLL))))
    except (KeyError, ValueError):
        return 400, "text/plain", b"needs journal=, after= (an offset) and wait= (seconds)\n"
    try:
        head = board.wait(journal, after, wait)
    except HintsBusy as exc:
        return 503, "text/plain", f"{exc}: poll the bucket\n".encode()
    if head is None:
        return 410, "text/plain", b"not writing this journal\n"
    return 200, "application/json", json.dumps({"head": head}).encode()


@dataclasses.dataclass(frozen=True)
class WriterAddress:
    """What a writer object holds: where the journal's writer serves hints."""

    host: str
    port: int
    pod: str = ""

    def encode(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> WriterAddress | None:
        try:
            body = json.loads(data)
            return cls(str(body["host"]), int(body["port"]), str(body.get("pod", "")))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None  # a hint is never worth failing for


@dataclasses.dataclass(frozen=True)
class HintService:
    """The writer's side: this process's board and the address its readers reach it at."""

    board: HintBoard
    address: WriterAddress

    def announce(self, objects: ObjectStore, journals: Mapping[str, int]) -> None:
        """Serve ``journals`` (object key prefix: known head) and write the address into
        each one's writer object, in the background: the writer's next steps (its first
        commit after a fence) never wait on a hint."""
        self.board.serve(journals)
        body = self.address.encode()

        def write() -> None:
            for journal in journals:
                try:
                    objects.put(writer_key(journal), body)
                except Exception as exc:
                    log.warning("could not write the hint address of %s: %s", journal, exc)

        threading.Thread(target=write, name="hint addresses", daemon=True).start()

    def withdraw(self, journals: Iterable[str]) -> None:
        self.board.retire(journals)


class HintUnavailable(Exception):
    """The writer did not answer, or does not write the journal."""


LongPoll = Callable[[WriterAddress, str, int, float], int]


def long_poll(address: WriterAddress, journal: str, after: int, wait: float) -> int:
    """Ask the writer at ``address`` for its head of ``journal`` once past ``after``."""
    query = urllib.parse.urlencode({"journal": journal, "after": after, "wait": wait})
    connection = http.client.HTTPConnection(address.host, address.port, timeout=wait + 10)
    try:
        connection.request("GET", f"/hint?{query}")
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise HintUnavailable(f"{response.status} {body[:200]!r}")
        return int(json.loads(body)["head"])
    except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError) as exc:
        raise HintUnavailable(str(exc)) from exc
    finally:
        connection.close()


class HintWatcher:
    """The reader's side for one journal: a thread that, while the reader waits at an
    offset, long-polls the journal's writer and calls ``wake`` once its head is past it.

    The reader calls :meth:`watch` with its offset before each long wait. A hint that
    woke it for an offset where it then found nothing is not trusted again for that
    offset (a writer that keeps answering at once would otherwise turn the reader's slow
    polls into a busy loop)."""

    def __init__(
        self,
        objects: ObjectStore,
        journal: str,
        wake: Callable[[], None],
        stop: threading.Event,
        *,
        poll: LongPoll = long_poll,
        wait: float = LONG_POLL,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.objects = objects
        self.journal = journal  # object key prefix
        self._wake = wake
        self._stop = stop
        self._poll = poll
        self._wait = wait
        self._monotonic = monotonic
        self._changed = threading.Condition()
        self._want: int | None = None
        self._answered: int | None = None
        self._address: WriterAddress | None = None
        self._look_again = 0.0  # when to read the writer object next (monotonic)
        self._retry = PollBackoff(ADDRESS_RETRY)
        self._thread: threading.Thread | None = None
        self.hints = 0  # wake-ups given, for tests and metrics

    def watch(self, offset: int) -> None:
        """The reader waits for data past ``offset``: wake it when there is some."""
        with self._changed:
            if offset == self._answered:
                return
            self._want = offset
            self._changed.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"hints {self.journal}", daemon=True
                )
                self._thread.start()

    def close(self) -> None:
        """Let the thread end (``stop`` does too); a long-poll under way is not waited for."""
        with self._changed:
            self._want = None
            self._changed.notify_all()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._changed:
                if self._want is None:
                    self._changed.wait(1.0)
                    continue
                offset = self._want
            address = self._writer()
            if address is None:
                self._stop.wait(max(0.0, min(self._look_again - self._monotonic(), 1.0)))
                continue
            try:
                head = self._poll(address, self.journal, offset, self._wait)
            except HintUnavailable as exc:
                log.debug("no hint from %s for %s: %s", address, self.journal, exc)
                self._lost_writer()
                continue
            self._retry = PollBackoff(ADDRESS_RETRY)
            if head > offset:
                with self._changed:
                    if self._want == offset:
                        self._want = None
                        self._answered = offset
                self.hints += 1
                self._wake()

    def _writer(self) -> WriterAddress | None:
        """The writer's address: read once, and again after it failed (not too often)."""
        if self._address is not None:
            return self._address
        if self._monotonic() < self._look_again:
            return None
        try:
            data = self.objects.get(writer_key(self.journal))
        except Exception as exc:
            log.debug("could not read the writer object of %s: %s", self.journal, exc)
            data = None
        self._address = None if data is None else WriterAddress.decode(data)
        if self._address is None:
            self._schedule_lookup()
        return self._address

    def _lost_writer(self) -> None:
        self._address = None
        self._schedule_lookup()

    def _schedule_lookup(self) -> None:
        self._retry = self._retry.after(found=False)
        self._look_again = self._monotonic() + self._retry.current
