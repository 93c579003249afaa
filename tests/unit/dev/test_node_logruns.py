"""Splitting a container's log file into its runs, for `kubectl logs [--previous]`."""

from __future__ import annotations

from shardkeeper_dev.node.logruns import Run, marker_line, select, split_runs


def started(n: int) -> str:
    return marker_line("2024-01-01T00:00:00Z", "app", f"starting container (restart count {n})")


def exited(code: int) -> str:
    return marker_line("2024-01-01T00:00:01Z", "app", f"container exited with code {code}")


LOG = (
    started(0)
    + "one\n"
    + "two\n"
    + exited(1)
    + started(1)
    + "three\n"
    + marker_line("2024-01-01T00:00:02Z", "app", "Liveness probe failed: x; killing the container")
    + "four\n"
)


def test_runs_without_markers() -> None:
    assert split_runs(LOG) == [Run("one\ntwo\n", ended=True), Run("three\nfour\n", ended=False)]
    assert split_runs("") == []
    assert split_runs(started(0)) == [Run("", ended=False)]


def test_select_current_previous_tail_and_limit() -> None:
    assert select(LOG) == Run("three\nfour\n", ended=False)
    assert select(LOG, previous=True) == Run("one\ntwo\n", ended=True)
    assert select(LOG, tail_lines=1) == Run("four\n", ended=False)
    assert select(LOG, tail_lines=0) == Run("", ended=False)
    assert select(LOG, limit_bytes=3) == Run("thr", ended=False)
    assert select(started(0) + "x\n", previous=True) is None
    assert select("") is None
