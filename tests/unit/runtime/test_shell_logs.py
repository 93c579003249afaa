"""Log lines are JSON with the shard, pod and the epoch of the moment."""

from __future__ import annotations

import io
import json
import logging

import pytest

from shardkeeper.runtime.shell.logs import TRACE, LogContext, configure, level_of


def test_lines_carry_shard_pod_epoch_and_extra_fields() -> None:
    stream = io.StringIO()
    context = LogContext(shard="t-00000000-00000000", pod="t-0", namespace="ns")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure(context, logging.INFO, stream)
        logging.getLogger("shardkeeper.test").info("hello %s", "there", extra={"offset": 12})
        context.set_epoch(4)
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("shardkeeper.test").exception("failed")
        logging.getLogger("shardkeeper.test").debug("not shown")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["msg"] == "hello there"
    assert (first["shard"], first["pod"], first["namespace"]) == (
        "t-00000000-00000000",
        "t-0",
        "ns",
    )
    assert (first["epoch"], first["offset"], first["level"]) == (0, 12, "info")
    assert first["time"].endswith("Z")
    assert second["epoch"] == 4
    assert "ValueError: boom" in second["exception"]


def test_levels_are_the_tasks_log_levels() -> None:
    assert level_of(None) == logging.INFO
    assert level_of("warn") == logging.WARNING
    assert level_of("TRACE") == TRACE
    with pytest.raises(ValueError, match="SHARDKEEPER_LOG_LEVEL='loud' is not one of error"):
        level_of("loud")
