"""Collection retention's plan: only a journal's beginning goes, only what is beyond the
retention, only what every reader has passed, never the last fragment."""

from __future__ import annotations

import datetime

from shardkeeper.storage.retention import Limits, RetentionRun, StoredFragment, plan_journal

NOW = datetime.datetime(2026, 12, 7, 12, 0, tzinfo=datetime.UTC)
JOURNAL = "collections/ns/orders/feed-00000000-00000000"
HOUR = datetime.timedelta(hours=1)


def fragments(*sizes_and_ages: tuple[int, float]) -> list[StoredFragment]:
    """Contiguous fragments from offset 0: (size, hours since written) each."""
    out, begin = [], 0
    for size, hours in sizes_and_ages:
        out.append(
            StoredFragment(f"{JOURNAL}/{begin:016x}", begin, begin + size, NOW - hours * HOUR)
        )
        begin += size
    return out


# four fragments of 100 bytes written 4, 3, 2 and 1 hours ago: offsets 0, 100, 200, 300
FOUR = fragments((100, 4), (100, 3), (100, 2), (100, 1))


def begins(plan_fragments: tuple[StoredFragment, ...]) -> list[int]:
    return [f.begin for f in plan_fragments]


def test_age_deletes_what_is_older_than_max_age_and_every_reader_passed() -> None:
    plan = plan_journal(JOURNAL, FOUR, {"a": 400, "b": 400}, Limits(max_age=2.5 * HOUR), NOW)
    assert begins(plan.delete) == [0, 100]
    assert begins(plan.keep) == [200, 300]
    assert (plan.removed_bytes, plan.kept_bytes, plan.held_back) == (200, 200, "")


def test_bytes_deletes_what_lies_beyond_max_bytes_of_newer_data() -> None:
    # the head is 400: fragment 0 has 300 bytes after it, fragment 100 has 200
    plan = plan_journal(JOURNAL, FOUR, {"a": 400}, Limits(max_bytes=200), NOW)
    assert begins(plan.delete) == [0, 100]
    plan = plan_journal(JOURNAL, FOUR, {"a": 400}, Limits(max_bytes=201), NOW)
    assert begins(plan.delete) == [0]


def test_either_limit_suffices_when_both_are_set() -> None:
    plan = plan_journal(JOURNAL, FOUR, {"a": 400}, Limits(max_age=3.5 * HOUR, max_bytes=100), NOW)
    assert begins(plan.delete) == [0, 100, 200], "bytes reach further than age here"


def test_never_past_the_lowest_reader() -> None:
    # "slow" is inside fragment 100: that fragment, and all after it, stay
    plan = plan_journal(JOURNAL, FOUR, {"fast": 400, "slow": 150}, Limits(max_age=HOUR), NOW)
    assert begins(plan.delete) == [0]
    assert plan.held_back == f"slow has read {JOURNAL} only up to 0x96"
    # a reader exactly at a fragment's end has passed it
    plan = plan_journal(JOURNAL, FOUR, {"fast": 400, "slow": 200}, Limits(max_age=HOUR), NOW)
    assert begins(plan.delete) == [0, 100]
    # a reader at 0 holds everything
    plan = plan_journal(JOURNAL, FOUR, {"new": 0}, Limits(max_age=HOUR), NOW)
    assert plan.delete == ()


def test_a_reader_whose_position_is_unknown_holds_the_journal_back() -> None:
    plan = plan_journal(JOURNAL, FOUR, {"a": 400, "b": None}, Limits(max_age=HOUR), NOW)
    assert plan.delete == ()
    assert begins(plan.keep) == [0, 100, 200, 300]
    assert "b" in plan.held_back


def test_the_last_fragment_stays_even_when_every_reader_is_at_the_head() -> None:
    plan = plan_journal(JOURNAL, FOUR, {"a": 400}, Limits(max_age=datetime.timedelta(0)), NOW)
    assert begins(plan.delete) == [0, 100, 200]
    assert begins(plan.keep) == [300], "the fragment ending at the head keeps it findable"
    single = fragments((100, 10))
    assert plan_journal(JOURNAL, single, {}, Limits(max_age=HOUR), NOW).delete == ()


def test_only_the_beginning_goes_a_younger_fragment_stops_it() -> None:
    # fragment 100 was written later than fragment 200 (its clock, say): it stops the run,
    # so no gap opens in the middle
    odd = fragments((100, 5), (100, 1), (100, 5), (100, 0))
    plan = plan_journal(JOURNAL, odd, {"a": 400}, Limits(max_age=2 * HOUR), NOW)
    assert begins(plan.delete) == [0]


def test_no_reader_at_all_leaves_only_the_retention() -> None:
    plan = plan_journal(JOURNAL, FOUR, {}, Limits(max_age=2.5 * HOUR), NOW)
    assert begins(plan.delete) == [0, 100]


def test_nothing_within_the_retention_goes_and_unsorted_input_is_ordered() -> None:
    plan = plan_journal(JOURNAL, list(reversed(FOUR)), {"a": 400}, Limits(max_age=5 * HOUR), NOW)
    assert plan.delete == ()
    assert begins(plan.keep) == [0, 100, 200, 300]
    assert plan_journal(JOURNAL, [], {"a": None}, Limits(max_bytes=1), NOW).delete == ()


def test_a_run_sums_its_journals_and_names_a_reader_holding_them_all_back_once() -> None:
    other = [
        StoredFragment(f"other/{f.begin:016x}", f.begin, f.end, f.written - HOUR) for f in FOUR
    ]
    readers: dict[str, int | None] = {"Shard s": None}
    run = RetentionRun(
        (
            plan_journal(JOURNAL, FOUR, readers, Limits(max_bytes=1), NOW),
            plan_journal("other", other, readers, Limits(max_bytes=1), NOW),
        )
    )
    assert run.held_back == "the positions of Shard s are not known"
    assert (run.removed_fragments, run.removed_bytes, run.retained_bytes) == (0, 0, 800)
    assert run.oldest_retained == NOW - 5 * HOUR
