"""Secret values out of what a process writes: log lines, status messages, Events.

A process registers every Secret value it reads (:data:`SECRETS`); whatever it writes for
people passes through :func:`redact` first, so an error message that happens to quote a
value (a library echoing its input, a URL with a password in it) shows ``[redacted]``
instead. Values shorter than :data:`MIN_LENGTH` are not registered: replacing every "1"
or "on" of a message would make it unreadable and protect nothing.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

REDACTED = "[redacted]"
MIN_LENGTH = 4
_QUOTED = re.compile(r'"([^"]*)"')
# what libpq quotes of its own syntax in a parse error; everything else it quotes is input
_LIBPQ_SYNTAX = {"=", "]"}


class Secrets:
    """The Secret values this process read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: frozenset[str] = frozenset()
        self._longest_first: tuple[str, ...] = ()

    def add(self, value: str | None) -> None:
        pieces = {p for p in (value, value.strip()) if len(p) >= MIN_LENGTH} if value else set()
        with self._lock:
            if pieces <= self._values:
                return
            self._values = self._values | pieces
            self._longest_first = tuple(sorted(self._values, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for value in self._longest_first:
            if value in text:
                text = text.replace(value, REDACTED)
        return text


SECRETS = Secrets()


def redact(text: str) -> str:
    """``text`` without any Secret value this process read."""
    return SECRETS.redact(text)


def redact_all(value: Any) -> Any:
    """A JSON-like value (a status, say) with :func:`redact` applied to every string in it."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_all(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_all(v) for v in value]
    return value


class LogFilter(logging.Filter):
    """For a handler: a record's message and traceback as :func:`redact` leaves them."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


def without_quoted_input(message: str) -> str:
    """A libpq parse error without the pieces of the connection string it quotes (which
    may be the password, or all of it)."""

    def replace(match: re.Match[str]) -> str:
        return match.group(0) if match.group(1) in _LIBPQ_SYNTAX else f'"{REDACTED}"'

    return _QUOTED.sub(replace, message).strip()
