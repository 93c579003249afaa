"""Primary election with a ``coordination.k8s.io/v1`` Lease named after the shard: the
thread that drives :class:`shardkeeper.kube.election.Elector`, one step at a time.

Every write is a create or a replace carrying the ``resourceVersion`` that was read, so two
replicas racing for the Lease cannot both win: the loser gets 409 and reads again.

Expiry is judged on this replica's own clock, never by comparing ``renewTime`` with it
(clocks of two machines differ): a Lease held by another replica counts as expired only
once its ``leaseDurationSeconds`` have passed since *this replica saw* the record last
change. A holder renews every third of the duration. It counts itself the holder only
until its **renew deadline**, two thirds of the duration after it *sent* its last
successful renewal (no later than anyone saw it): from then on it must not commit, and
it has lost the Lease. The remaining third (``LeaseKeeper.margin``, 5 s of the default
15 s) is the margin between the holder's deadline and the earliest moment another
replica can take over by its own clock: it absorbs clocks that run at slightly different
rates and a commit that was already under way at the deadline. So a primary stops
before its Lease can run out elsewhere.

The Lease only keeps the roles honest; the recovery log's fence is what protects data,
so a replica that wrongly believes it holds the Lease still cannot commit after a newer
primary fenced the log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from shardkeeper.kube.election import Elector, StepResult

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Runs election steps in a thread: fast polls while waiting, renewals at duration/3.

    :meth:`stand` says this replica may take the Lease (it is restored and tailing).
    Losing the Lease is final for a keeper: ``lost`` is set and it never takes the Lease
    again, because a replica that lost it must stop and start over as a standby.
    ``notify`` is called whenever the Lease is acquired or lost.
    """

    def __init__(
        self,
        elector: Elector,
        *,
        poll: float,
        notify: Callable[[], None] = lambda: None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.elector = elector
        self.duration = float(elector.duration)
        self.poll = poll
        self.renew_every = self.duration / 3
        # renewals at a third of the duration leave one more third of retries (at the pace
        # of polls) before the deadline, and a third of margin after it
        self.margin = self.duration / 3
        self.renew_deadline = self.duration - self.margin
        self.want = threading.Event()
        self.acquired = threading.Event()
        self.lost = threading.Event()
        self._notify = notify
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._monotonic = monotonic
        self._renewed_at: float | None = None  # send time of the last successful write
        self._holder: str | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._failures = 0

    @property
    def holder(self) -> str | None:
        with self._lock:
            return self._holder

    def held(self) -> bool:
        """We hold the Lease, and may commit: a write of ours was sent less than the renew
        deadline ago. Pure clock arithmetic, so the commit path can ask it at any time."""
        with self._lock:
            renewed = self._renewed_at
        return (
            renewed is not None
            and not self.lost.is_set()
            and self._monotonic() - renewed < self.renew_deadline
        )

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lease", daemon=True)
        self._thread.start()

    def stand(self) -> None:
        """Stand for the Lease from now on, starting with a step right away."""
        self.want.set()
        self._kick.set()

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join()

    def release(self) -> bool:
        """Stop stepping, then hand the Lease over if we hold it."""
        self.stop()
        if self._renewed_at is None or self.lost.is_set():
            return False
        try:
            released = self.elector.release()
        except Exception as exc:
            log.warning("could not release the Lease: %s", exc)
            return False
        if released:
            log.info("released the Lease")
        return released

    def _run(self) -> None:
        while not self._stop.is_set():
            self._check_expiry()
            want = self.want.is_set() and not self.lost.is_set()
            try:
                result = self.elector.step(want)
            except Exception as exc:
                self._failures += 1
                # every failure while holding matters; while waiting, say it once in a while
                if self._renewed_at is not None or self._failures % 20 == 1:
                    log.warning("Lease step failed (%d in a row): %s", self._failures, exc)
            else:
                self._failures = 0
                self._record(result)
            self._check_expiry()
            self._kick.wait(self._next_step_in(want))
            self._kick.clear()

    def _next_step_in(self, want: bool) -> float:
        if self.held():
            # a failed renewal is retried at the pace of polls: at a third of the duration
            # a holder would get only one more try before its deadline; and the thread
            # wakes at the deadline, to say the Lease is lost right then
            with self._lock:
                renewed = self._renewed_at
            assert renewed is not None
            left = renewed + self.renew_deadline - self._monotonic()
            return min(self.poll if self._failures else self.renew_every, max(left, 0.0))
        expires_in = self.elector.expires_in()
        if want and expires_in is not None:
            # look again right when the holder's Lease runs out, not up to a poll later
            return min(self.poll, max(expires_in, 0.0) + 0.01)
        return self.poll

    def _record(self, result: StepResult) -> None:
        if result.taken is not None:
            log.info(
                "took the Lease",
                extra={"previous_holder": result.previous, "why": result.taken.value},
            )
        with self._lock:
            self._holder = result.holder
            had = self._renewed_at is not None
            if result.mine:
                self._renewed_at = result.sent_at
        if result.mine and not had:
            self.acquired.set()
            self._notify()
        elif had and not result.mine and result.holder != self.elector.me:
            self._lose(f"the Lease is now held by {result.holder or 'nobody'}")

    def _check_expiry(self) -> None:
        with self._lock:
            renewed = self._renewed_at
        if renewed is None or self.lost.is_set():
            return
        elapsed = self._monotonic() - renewed
        if elapsed >= self.renew_deadline:
            self._lose(
                f"the Lease was not renewed for {elapsed:.1f}s, past the renew deadline "
                f"({self.renew_deadline:.1f}s of its {self.duration:.0f}s)"
            )

    def _lose(self, why: str) -> None:
        if not self.lost.is_set():
            log.error("lost the Lease: %s", why)
            self.lost.set()
            self._notify()
