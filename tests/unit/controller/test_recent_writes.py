"""RecentWrites: what the operator wrote stands in for its cache until the cache moves on."""

from __future__ import annotations

from tests.support.clock import Clock

from shardkeeper.controller.reconcilers.base import RecentWrites


def test_a_write_stands_in_while_the_cache_shows_what_it_wrote_over() -> None:
    recent = RecentWrites(Clock())
    recent.wrote_at("uid-1", "workload", None, "hash-b")
    assert recent.current_at("uid-1", "workload", None, "observed") == "hash-b"
    assert recent.current_at("uid-1", "workload", None, "observed") == "hash-b", "read twice"


def test_a_newer_version_in_the_cache_drops_the_record() -> None:
    recent = RecentWrites(Clock())
    recent.wrote_at("uid-1", "workload", "41", "hash-b")
    assert recent.current_at("uid-1", "workload", "42", "hash-c") == "hash-c"
    # and it stays dropped, even if the cache showed the old version again
    assert recent.current_at("uid-1", "workload", "41", "hash-a") == "hash-a"
    assert recent.held_for("uid-1", "workload") is None


def test_a_record_lapses_after_the_hold() -> None:
    clock = Clock()
    recent = RecentWrites(clock)
    recent.wrote_at("uid-1", "workload", None, "hash-b")
    clock.now += RecentWrites.HOLD_SECONDS - 1
    assert recent.held_for("uid-1", "workload") == 1.0
    assert recent.current_at("uid-1", "workload", None, None) == "hash-b"
    clock.now += 1
    assert recent.current_at("uid-1", "workload", None, None) is None
    assert recent.held_for("uid-1", "workload") is None


def test_records_are_kept_per_object_and_per_field() -> None:
    recent = RecentWrites(Clock())
    recent.wrote_at("uid-1", "workload", None, "hash-b")
    recent.wrote_at("uid-1", "status", "7", {"phase": "Running"})
    recent.wrote_at("uid-2", "workload", None, "hash-x")
    assert recent.current_at("uid-2", "workload", None, None) == "hash-x"
    recent.forget("uid-1")
    assert recent.current_at("uid-1", "workload", None, None) is None
    assert recent.current_at("uid-1", "status", "7", {}) == {}
    assert recent.current_at("uid-2", "workload", None, None) == "hash-x"
