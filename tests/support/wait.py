"""Waiting on conditions instead of sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# What a probe raises while the thing it looks at is not there yet: a connection refused
# (URLError, ConnectionError), a file not yet written, a socket timeout. Anything else (an
# assertion in the probe, a KeyError, a bad query) is a real error and fails at once.
NOT_YET: tuple[type[Exception], ...] = (OSError,)


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
    retry: tuple[type[Exception], ...] = NOT_YET,
) -> T:
    """Call ``probe`` until it returns something truthy; fail naming ``what`` after ``timeout``.

    An exception of a type in ``retry`` counts as "not yet"; any other propagates at once.
    On timeout the error names the last value or exception, and chains that exception.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    last_error: Exception | None = None
    while True:
        try:
            value = probe()
        except retry as err:
            last, last_error = err, err
        else:
            if value:
                return value
            last, last_error = value, None
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what} (last: {last!r})"
            ) from last_error
        time.sleep(interval)
