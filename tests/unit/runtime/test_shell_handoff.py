"""Where a split hands a child its range: the first fence whose claim leaves the child's
range out, and only such a fence."""

from __future__ import annotations

from shardkeeper.runtime.core.routing import Ranges
from shardkeeper.runtime.shell.handoff import gave_up, hand_off_fence, hand_off_point
from shardkeeper.storage.fragment import Fragment, FragmentKind
from shardkeeper.storage.journal import fence_payload
from shardkeeper.storage.recoverylog import FenceClaim

FULL = Ranges()
LOWER = Ranges(key_end=0x7FFFFFFF)
QUARTER = Ranges(key_end=0x3FFFFFFF)
UPPER = Ranges(key_begin=0x80000000)
SECOND_QUARTER = Ranges(key_begin=0x40000000, key_end=0x7FFFFFFF)


def claim(offset: int, ranges: Ranges) -> FenceClaim:
    return FenceClaim(offset, offset + 1, ranges.claim())


def test_claims_round_trip_and_overlap() -> None:
    assert Ranges.from_claim(UPPER.claim()) == UPPER
    assert UPPER.claim() == {
        "keyBegin": "80000000",
        "keyEnd": "ffffffff",
        "rClockBegin": "00000000",
        "rClockEnd": "ffffffff",
    }
    assert LOWER.overlaps(FULL)
    assert not LOWER.overlaps(UPPER)
    assert not Ranges(r_clock_end=0x7FFFFFFF).overlaps(Ranges(r_clock_begin=0x80000000))
    # the same key range, other r-clocks: no point in common
    assert not Ranges(key_end=5, r_clock_end=5).overlaps(Ranges(key_end=5, r_clock_begin=6))


def test_the_hand_off_is_the_first_claim_that_leaves_the_child_out() -> None:
    history = [claim(0, FULL), claim(100, FULL), claim(200, LOWER), claim(300, LOWER)]
    assert hand_off_point(history, UPPER) == 200
    # a second split of the lower half: the first split's fence still claims its range
    history += [claim(400, QUARTER)]
    assert hand_off_point(history, SECOND_QUARTER) == 400
    assert hand_off_point(history[:2], UPPER) is None


def test_a_stale_wide_fence_after_the_hand_off_does_not_move_it() -> None:
    history = [claim(0, FULL), claim(200, LOWER), claim(300, FULL), claim(310, LOWER)]
    assert hand_off_point(history, UPPER) == 200


def test_fences_without_a_claim_or_with_a_broken_one_hand_nothing_off() -> None:
    assert not gave_up(None, UPPER)
    assert not gave_up({"keyBegin": "zz"}, UPPER)
    assert not gave_up({"keyEnd": "7fffffff"}, UPPER)
    stop = hand_off_fence(UPPER)
    unclaimed = Fragment(0, 1, FragmentKind.FENCE, fence_payload(1, "by hand"))
    claimed = Fragment(0, 2, FragmentKind.FENCE, fence_payload(2, "", LOWER.claim()))
    wide = Fragment(0, 2, FragmentKind.FENCE, fence_payload(2, "", FULL.claim()))
    data = Fragment(0, 2, FragmentKind.DATA, b"SKC1...")
    assert [stop(f) for f in (unclaimed, claimed, wide, data)] == [False, True, False, False]
