"""Choosing a restore point (storage/pointintime.py) and the commit time in records."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from shardkeeper.storage.pointintime import LoggedCommit, choose_commit, restorable_from
from shardkeeper.storage.records import (
    CommitRecord,
    ForkRecord,
    decode_commit_header,
    decode_record,
    encode_commit,
    encode_fork,
)


def commits(*times: float | None) -> list[LoggedCommit]:
    return [LoggedCommit(i * 10, i * 10 + 10, i + 1, t, 1) for i, t in enumerate(times)]


def test_the_last_commit_without_a_time_limit() -> None:
    assert choose_commit(commits(1.0, 2.0, 3.0), None) == commits(1.0, 2.0, 3.0)[-1]
    assert choose_commit([], None) is None


def test_the_last_commit_no_later_than_the_time() -> None:
    log = commits(1.0, 2.0, 3.0, 4.0)
    assert choose_commit(log, 2.5) == log[1]
    assert choose_commit(log, 3.0) == log[2]  # at the time counts
    assert choose_commit(log, 0.5) is None
    assert choose_commit(log, 9.0) == log[3]


def test_a_commit_after_a_later_timed_one_is_not_taken() -> None:
    # a new primary's clock behind the old one's: the state at 2.5 cannot hold commit 3
    log = commits(1.0, 3.0, 2.0, 4.0)
    assert choose_commit(log, 2.5) == log[0]


def test_commits_of_older_writers_count_as_older_than_any_time() -> None:
    log = commits(None, None, 5.0, 6.0)
    assert choose_commit(log, 1.0) == log[1]
    assert choose_commit(log, 5.5) == log[2]


@given(st.lists(st.floats(min_value=0, max_value=1e6), max_size=20), st.floats(0, 1e6))
def test_the_chosen_state_holds_only_commits_up_to_the_time(
    times: list[float], before: float
) -> None:
    log = commits(*times)
    chosen = choose_commit(log, before)
    held = [] if chosen is None else log[: log.index(chosen) + 1]
    assert all(c.committed_at is not None and c.committed_at <= before for c in held)
    rest = log[len(held) :]
    assert not rest or (rest[0].committed_at or 0) > before


def test_how_far_back_a_log_restores() -> None:
    assert restorable_from(None, []) == 0  # nothing written yet
    assert restorable_from(0, [500]) == 0  # never pruned
    # pruned: from the oldest snapshot whose log after it is kept
    assert restorable_from(400, [100, 450, 900]) == 450
    assert restorable_from(400, [100]) is None


def test_commit_records_carry_their_time_and_old_ones_still_read() -> None:
    record = CommitRecord(3, b"\x01" * 16, 4, 1, [(1, b"abcd")], committed_at=1700000000.25)
    payload = encode_commit(record)
    assert payload[:4] == b"SKC2"
    decoded = decode_record("k", payload)
    assert isinstance(decoded, CommitRecord)
    assert decoded.committed_at == 1700000000.25
    assert decode_commit_header("k", payload) == (3, 1700000000.25)
    # a record of an older writer: SKC1, no time field
    v1 = struct.pack(">4sQ16sIII", b"SKC1", 3, b"\x01" * 16, 4, 1, 1) + struct.pack(">I", 1)
    old = decode_record("k", v1 + b"abcd")
    assert isinstance(old, CommitRecord)
    assert (old.seq, old.committed_at, bytes(old.pages[0][1])) == (3, None, b"abcd")
    assert decode_commit_header("k", v1 + b"abcd") == (3, None)
    assert decode_commit_header("k", encode_fork(ForkRecord("p", 1, 1))) is None


def test_fork_records_say_whether_they_fork_at_a_commit() -> None:
    at_commit = ForkRecord("recovery/source", 4096, 3, at_fence=False)
    assert decode_record("k", encode_fork(at_commit)) == at_commit
    # a record written before restores existed forks at a fence
    assert decode_record("k", b'SKF1{"epoch": 1, "fence_offset": 9, "parent": "p"}') == (
        ForkRecord("p", 9, 1)
    )
