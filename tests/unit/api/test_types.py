"""Durations, range bounds and timestamps: parsed strictly, printed in one canonical form."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from shardkeeper.api.meta import (
    DURATION_PATTERN,
    Duration,
    RangeBound,
    Time,
    format_range_bound,
    parse_range_bound,
)


@pytest.mark.parametrize(
    ("text", "nanoseconds", "canonical"),
    [
        ("0s", 0, "0s"),
        ("0ms", 0, "0s"),
        ("500ms", 500_000_000, "500ms"),
        ("1s", 1_000_000_000, "1s"),
        ("1000ms", 1_000_000_000, "1s"),
        ("90s", 90_000_000_000, "1m30s"),
        ("5m", 300_000_000_000, "5m"),
        ("1h30m", 5_400_000_000_000, "1h30m"),
        ("1h0m5s", 3_605_000_000_000, "1h5s"),
        ("1.5s", 1_500_000_000, "1s500ms"),
        ("2.25h", 8_100_000_000_000, "2h15m"),
        ("250us", 250_000, "250us"),
        ("100ns", 100, "100ns"),
        ("1.5ns", 1, "1ns"),  # Go truncates below a nanosecond
        ("1m1s1ms1us1ns", 61_001_001_001, "1m1s1ms1us1ns"),
        ("30s30s", 60_000_000_000, "1m"),
    ],
)
def test_durations_parse_like_go_and_print_canonically(
    text: str, nanoseconds: int, canonical: str
) -> None:
    duration = Duration.parse(text)
    assert duration.nanoseconds == nanoseconds
    assert str(duration) == canonical
    assert Duration.parse(canonical) == duration


@pytest.mark.parametrize(
    "text",
    ["", "1", "0", "1sec", "-1s", "+1s", "1 s", "s", "1.s", ".5s", "1d", "1µs", "1S", "1h-5m"],
)
def test_durations_outside_the_syntax_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        Duration.parse(text)


def test_a_duration_beyond_go_range_is_refused() -> None:
    with pytest.raises(ValueError, match="out of range"):
        Duration.parse("3000000h")


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_the_canonical_form_round_trips_and_matches_the_crd_pattern(nanoseconds: int) -> None:
    import re

    text = str(Duration(nanoseconds))
    assert re.match(DURATION_PATTERN, text)
    assert Duration.parse(text).nanoseconds == nanoseconds


def test_durations_order_and_convert() -> None:
    assert Duration.parse("999ms") < Duration.parse("1s") <= Duration.of(seconds=1)
    assert Duration.parse("1m") > Duration.parse("59s")
    assert Duration.parse("1m30s").total_seconds() == 90.0
    assert Duration.parse("1500us").to_timedelta() == timedelta(microseconds=1500)
    assert Duration.of(hours=1, minutes=30) == Duration.parse("90m")
    assert len({Duration.parse("60s"), Duration.parse("1m")}) == 1


class _Holder(BaseModel):
    duration: Duration
    bound: RangeBound
    at: Time


def test_models_read_wire_forms_and_write_canonical_ones() -> None:
    held = _Holder.model_validate(
        {"duration": "60s", "bound": "7fffffff", "at": "2024-01-31T13:00:00+01:00"}
    )
    assert held.duration == Duration.parse("1m")
    assert held.bound == 0x7FFFFFFF
    assert held.at == datetime(2024, 1, 31, 12, tzinfo=UTC)
    assert held.model_dump(mode="json") == {
        "duration": "1m",
        "bound": "7fffffff",
        "at": "2024-01-31T12:00:00Z",
    }
    # Python callers may pass Python values.
    assert _Holder(duration=timedelta(seconds=2), bound=1, at=held.at).duration == Duration.of(
        seconds=2
    )


def test_times_keep_microseconds_and_need_a_zone() -> None:
    at = datetime(2024, 1, 31, 12, 0, 0, 250000, tzinfo=timezone(timedelta(hours=-2)))
    held = _Holder(duration="1s", bound=0, at=at)
    assert held.model_dump(mode="json")["at"] == "2024-01-31T14:00:00.25Z"
    with pytest.raises(ValidationError, match="time zone"):
        _Holder(duration="1s", bound=0, at=datetime(2024, 1, 31))


@pytest.mark.parametrize("text", ["7FFFFFFF", "fffffff", "100000000", "0x000000", "", "ffffffff "])
def test_range_bounds_are_eight_lowercase_hex_digits(text: str) -> None:
    with pytest.raises(ValueError, match="8 lowercase hex digits"):
        parse_range_bound(text)


def test_range_bounds_cover_32_bits() -> None:
    assert parse_range_bound("00000000") == 0
    assert parse_range_bound("ffffffff") == 2**32 - 1
    assert format_range_bound(0xABC) == "00000abc"
    for bad in (-1, 2**32, True):
        with pytest.raises(ValueError, match="range bound"):
            parse_range_bound(bad)
