"""Every interval and limit the process node works by, in one place (seconds)."""

from __future__ import annotations

# Container restart back-off: a kubelet starts at 10s; 1s keeps development fast. It
# doubles per crash, is capped at five minutes, and starts over once a container has
# run for ten minutes.
BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 300.0
BACKOFF_RESET_AFTER = 600.0

# how soon to try again when a pod cannot be set up yet (volume claim not bound,
# ConfigMap or Secret missing): first after SETUP_RETRY_FIRST, doubling up to SETUP_RETRY.
# A claim provisioned with its pod binds within a fraction of a second (a kubelet's volume
# manager looks every 100 ms); a whole second was most of a split child's wait to start
SETUP_RETRY_FIRST = 0.1
SETUP_RETRY = 1.0
# configMap, secret and projected volumes are rewritten this often (a kubelet: ~1 min)
VOLUME_REFRESH = 60.0
# the longest a pod worker sleeps without looking at its pod
WORKER_IDLE = 5.0

# Node heartbeat: the Lease is what the node-lifecycle controller watches (it marks the
# node unknown after 40-50s without renewal); the Ready condition is refreshed too.
LEASE_DURATION = 40
LEASE_RENEW = 10.0
NODE_STATUS_REFRESH = 60.0

# a projected service-account token is replaced once this share of its life has gone
# (the kubelet's rule), or after a day at the latest
TOKEN_REFRESH_FRACTION = 0.8
TOKEN_MAX_AGE = 24 * 3600.0

# grace for pod processes when the node itself is stopped
NODE_SHUTDOWN_GRACE = 5.0
# grace when a pod object vanished without a graceful deletion (force-deleted)
FORCED_DELETION_GRACE = 2.0
DEFAULT_TERMINATION_GRACE = 30

# watches: the server closes them after this long; the client gives up a bit later
WATCH_TIMEOUT = 300
WATCH_READ_TIMEOUT = WATCH_TIMEOUT + 30
# pause before retrying a failed list or watch
WATCH_RETRY = 1.0


def next_backoff(previous: float | None, ran_for: float) -> float:
    """How long to wait before restarting a container that exited after ``ran_for``s,
    given the wait before its previous restart (None if it had none)."""
    if previous is None or ran_for >= BACKOFF_RESET_AFTER:
        return BACKOFF_INITIAL
    return min(previous * 2, BACKOFF_MAX)


def setup_retry_delay(attempts: int) -> float:
    """How long to wait before setting a pod up again after ``attempts`` failed tries."""
    return min(SETUP_RETRY_FIRST * float(1 << min(attempts, 16)), SETUP_RETRY)
