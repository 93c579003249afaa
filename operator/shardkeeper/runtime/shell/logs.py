"""Structured logs of a shard replica: one JSON object per line, carrying shard, pod and epoch.

The epoch changes while the process runs (each time this replica becomes primary), so the
fields come from a shared :class:`LogContext` that a filter reads on every record, rather
than being fixed when logging is configured. No Secret value the process read is printed
(shardkeeper.redact).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import threading
from datetime import UTC, datetime
from typing import IO, Any

from shardkeeper.api.meta import format_time
from shardkeeper.api.task import LogLevel
from shardkeeper.redact import redact

# The task's logLevel names; "trace" has no stdlib level, so it gets one below DEBUG.
TRACE = 5
LEVELS: dict[str, int] = {
    LogLevel.ERROR: logging.ERROR,
    LogLevel.WARN: logging.WARNING,
    LogLevel.INFO: logging.INFO,
    LogLevel.DEBUG: logging.DEBUG,
    LogLevel.TRACE: TRACE,
}

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is printed.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


@dataclasses.dataclass
class LogContext:
    """Fields added to every line; ``epoch`` is updated when this replica fences the log."""

    shard: str
    pod: str
    namespace: str
    epoch: int = 0
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)

    def set_epoch(self, epoch: int) -> None:
        with self._lock:
            self.epoch = epoch

    def fields(self) -> dict[str, Any]:
        with self._lock:
            return {
                "shard": self.shard,
                "pod": self.pod,
                "namespace": self.namespace,
                "epoch": self.epoch,
            }


class JsonFormatter(logging.Formatter):
    def __init__(self, context: LogContext) -> None:
        super().__init__()
        self.context = context

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": format_time(datetime.fromtimestamp(record.created, UTC)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
            **self.context.fields(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, default=str, separators=(",", ":"))


def level_of(name: str | None) -> int:
    """The logging level for SHARDKEEPER_LOG_LEVEL (a task's logLevel); info if unset."""
    if not name:
        return logging.INFO
    try:
        return LEVELS[name.lower()]
    except KeyError:
        raise ValueError(
            f"SHARDKEEPER_LOG_LEVEL={name!r} is not one of {', '.join(LEVELS)}"
        ) from None


def configure(context: LogContext, level: int, stream: IO[str] = sys.stderr) -> None:
    """Send every log record of the process, as JSON lines, to ``stream``."""
    logging.addLevelName(TRACE, "TRACE")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(context))
    root = logging.getLogger()
    for previous in list(root.handlers):
        root.removeHandler(previous)
    root.addHandler(handler)
    root.setLevel(level)
    # third-party clients are chatty at debug: keep them at warning unless tracing
    for noisy in ("botocore", "boto3", "urllib3", "kubernetes", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING if level > TRACE else level)
