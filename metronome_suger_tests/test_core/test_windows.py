"""Partition keys, windows and the Suger ``timestamp`` of a window (CONTRACT §2, §5)."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metronome_suger.core.windows import (
    Window,
    floor,
    iso,
    last_closed_windows,
    utc,
    window_at,
    window_for_key,
    windows_in,
)

UTC = timezone.utc
H = timedelta(hours=1)
D = timedelta(days=1)


def dt(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------------------
# Partition key <-> window


def test_hourly_key_to_window() -> None:
    w = window_for_key("2026-11-25-13:00", hourly=True)
    assert w == Window(dt(2026, 11, 25, 13), dt(2026, 11, 25, 14))
    assert w.start.tzinfo is not None and w.start.utcoffset() == timedelta(0)
    assert w.hourly is True
    assert w.partition_key == "2026-11-25-13:00"


def test_daily_key_to_window() -> None:
    w = window_for_key("2026-11-25", hourly=False)
    assert w == Window(dt(2026, 11, 25), dt(2026, 11, 26))
    assert w.hourly is False
    assert w.partition_key == "2026-11-25"


@pytest.mark.parametrize(
    ("key", "start"),
    [
        ("2026-11-25-00:00", dt(2026, 11, 25, 0)),
        ("2026-11-25-23:00", dt(2026, 11, 25, 23)),
        ("2028-02-29-12:00", dt(2028, 2, 29, 12)),
        ("2026-12-31-23:00", dt(2026, 12, 31, 23)),
    ],
)
def test_hourly_keys_round_trip(key: str, start: datetime) -> None:
    w = window_for_key(key, hourly=True)
    assert w.start == start
    assert w.end == start + H
    assert w.partition_key == key


def test_last_hour_of_year_ends_next_year() -> None:
    w = window_for_key("2026-12-31-23:00", hourly=True)
    assert w.end == dt(2027, 1, 1)


def test_daily_window_over_month_and_year_end() -> None:
    assert window_for_key("2026-11-30", hourly=False).end == dt(2026, 12, 1)
    assert window_for_key("2026-12-31", hourly=False).end == dt(2027, 1, 1)
    assert window_for_key("2028-02-29", hourly=False).end == dt(2028, 3, 1)


@pytest.mark.parametrize(
    ("key", "hourly"),
    [
        ("2026-11-25", True),  # a daily key where an hourly one is expected
        ("2026-11-25-13:00", False),  # an hourly key where a daily one is expected
        ("", True),
        ("", False),
        ("garbage", True),
        ("2026-13-01", False),
        ("2026-02-30", False),
        ("2027-02-29", False),
        ("2026-11-25-24:00", True),
        ("2026-11-25T13:00", True),
        ("2026-11-25 13:00", True),
        ("2026-11-25-13:00:00", True),
        ("2026-11-25-13:00Z", True),
    ],
)
def test_bad_keys_raise_value_error_naming_the_key(key: str, hourly: bool) -> None:
    with pytest.raises(ValueError) as info:
        window_for_key(key, hourly)
    assert repr(key) in str(info.value)
    assert ("hourly" if hourly else "daily") in str(info.value)


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)))
def test_hourly_round_trip_property(value: datetime) -> None:
    w = window_at(value, hourly=True)
    assert window_for_key(w.partition_key, hourly=True) == w
    assert w.start <= value.replace(tzinfo=UTC) < w.end
    assert w.end - w.start == H


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)))
def test_daily_round_trip_property(value: datetime) -> None:
    w = window_at(value, hourly=False)
    assert window_for_key(w.partition_key, hourly=False) == w
    assert w.start <= value.replace(tzinfo=UTC) < w.end
    assert w.end - w.start == D
    assert (w.start.hour, w.start.minute) == (0, 0)


# ---------------------------------------------------------------------------------------------------------
# report_timestamp


def test_hourly_report_timestamp_is_the_window_start() -> None:
    w = window_for_key("2026-11-25-13:00", hourly=True)
    assert w.report_timestamp == dt(2026, 11, 25, 13)
    assert iso(w.report_timestamp) == "2026-11-25T13:00:00Z"


def test_daily_report_timestamp_is_23_00_of_that_day() -> None:
    w = window_for_key("2026-11-25", hourly=False)
    assert w.report_timestamp == dt(2026, 11, 25, 23)
    assert iso(w.report_timestamp) == "2026-11-25T23:00:00Z"


def test_daily_report_timestamp_on_last_day_of_month() -> None:
    assert window_for_key("2026-11-30", hourly=False).report_timestamp == dt(2026, 11, 30, 23)


# ---------------------------------------------------------------------------------------------------------
# windows_in


def test_windows_in_hourly_across_month_boundary() -> None:
    windows = list(windows_in(dt(2026, 10, 31, 22), dt(2026, 11, 1, 2), hourly=True))
    assert [w.start for w in windows] == [
        dt(2026, 10, 31, 22),
        dt(2026, 10, 31, 23),
        dt(2026, 11, 1, 0),
        dt(2026, 11, 1, 1),
    ]
    assert all(w.end - w.start == H for w in windows)
    assert [w.partition_key for w in windows] == [
        "2026-10-31-22:00",
        "2026-10-31-23:00",
        "2026-11-01-00:00",
        "2026-11-01-01:00",
    ]


def test_windows_in_daily_across_month_and_year_boundary() -> None:
    windows = list(windows_in(dt(2026, 12, 30), dt(2027, 1, 2), hourly=False))
    assert [w.partition_key for w in windows] == ["2026-12-30", "2026-12-31", "2027-01-01"]
    assert windows[-1].end == dt(2027, 1, 2)


def test_windows_in_daily_over_a_whole_month() -> None:
    windows = list(windows_in(dt(2026, 11, 1), dt(2026, 12, 1), hourly=False))
    assert len(windows) == 30
    assert windows[0].start == dt(2026, 11, 1)
    assert windows[-1].end == dt(2026, 12, 1)


def test_windows_in_is_contiguous_and_sorted() -> None:
    windows = list(windows_in(dt(2026, 11, 1), dt(2026, 11, 3), hourly=True))
    assert len(windows) == 48
    assert windows == sorted(windows)
    for a, b in itertools.pairwise(windows):
        assert a.end == b.start


def test_windows_in_single_and_empty() -> None:
    assert list(windows_in(dt(2026, 11, 25, 13), dt(2026, 11, 25, 14), True)) == [
        Window(dt(2026, 11, 25, 13), dt(2026, 11, 25, 14))
    ]
    assert list(windows_in(dt(2026, 11, 25, 13), dt(2026, 11, 25, 13), True)) == []
    assert list(windows_in(dt(2026, 11, 25, 14), dt(2026, 11, 25, 13), True)) == []


def test_windows_in_excludes_a_partial_last_window() -> None:
    windows = list(windows_in(dt(2026, 11, 25, 13), dt(2026, 11, 25, 15, 30), True))
    assert [w.start for w in windows] == [dt(2026, 11, 25, 13), dt(2026, 11, 25, 14)]
    daily = list(windows_in(dt(2026, 11, 25), dt(2026, 11, 26, 23), False))
    assert [w.partition_key for w in daily] == ["2026-11-25"]


def test_windows_in_accepts_naive_and_other_offsets() -> None:
    plus_two = timezone(timedelta(hours=2))
    naive = list(windows_in(datetime(2026, 11, 25, 13), datetime(2026, 11, 25, 15), True))
    offset = list(
        windows_in(
            datetime(2026, 11, 25, 15, tzinfo=plus_two), datetime(2026, 11, 25, 17, tzinfo=plus_two), True
        )
    )
    expected = [
        Window(dt(2026, 11, 25, 13), dt(2026, 11, 25, 14)),
        Window(dt(2026, 11, 25, 14), dt(2026, 11, 25, 15)),
    ]
    assert naive == expected
    assert offset == expected


# ---------------------------------------------------------------------------------------------------------
# last_closed_windows


def test_last_closed_hourly_before_settle_elapsed() -> None:
    # 13:00-14:00 closed at 14:00 but needs 15 minutes to settle: at 14:10 the newest is 12:00-13:00.
    windows = last_closed_windows(dt(2026, 11, 25, 14, 10), True, 3, timedelta(minutes=15))
    assert [w.start for w in windows] == [dt(2026, 11, 25, 10), dt(2026, 11, 25, 11), dt(2026, 11, 25, 12)]
    assert windows[-1].end == dt(2026, 11, 25, 13)


def test_last_closed_hourly_exactly_when_settled() -> None:
    windows = last_closed_windows(dt(2026, 11, 25, 14, 15), True, 1, timedelta(minutes=15))
    assert windows == [Window(dt(2026, 11, 25, 13), dt(2026, 11, 25, 14))]
    just_before = last_closed_windows(dt(2026, 11, 25, 14, 14, 59), True, 1, timedelta(minutes=15))
    assert just_before == [Window(dt(2026, 11, 25, 12), dt(2026, 11, 25, 13))]


def test_last_closed_hourly_without_settle() -> None:
    windows = last_closed_windows(dt(2026, 11, 25, 14), True, 2, timedelta(0))
    assert windows == [
        Window(dt(2026, 11, 25, 12), dt(2026, 11, 25, 13)),
        Window(dt(2026, 11, 25, 13), dt(2026, 11, 25, 14)),
    ]


def test_last_closed_windows_never_includes_an_open_window() -> None:
    now = dt(2026, 11, 25, 14, 59, 59)
    for settle in (timedelta(0), timedelta(minutes=15), timedelta(minutes=90)):
        windows = last_closed_windows(now, True, 6, settle)
        assert len(windows) == 6
        assert all(w.end + settle <= now for w in windows)
        assert windows == sorted(windows)
        for a, b in itertools.pairwise(windows):
            assert a.end == b.start


def test_last_closed_daily_across_month_boundary() -> None:
    windows = last_closed_windows(dt(2026, 12, 1, 0, 20), False, 2, timedelta(minutes=15))
    assert [w.partition_key for w in windows] == ["2026-11-29", "2026-11-30"]
    early = last_closed_windows(dt(2026, 12, 1, 0, 10), False, 2, timedelta(minutes=15))
    assert [w.partition_key for w in early] == ["2026-11-28", "2026-11-29"]


def test_last_closed_windows_with_naive_now() -> None:
    assert last_closed_windows(datetime(2026, 11, 25, 14, 30), True, 1, timedelta(minutes=15)) == [
        Window(dt(2026, 11, 25, 13), dt(2026, 11, 25, 14))
    ]


def test_last_closed_windows_zero_count() -> None:
    assert last_closed_windows(dt(2026, 11, 25, 14), True, 0, timedelta(0)) == []


# ---------------------------------------------------------------------------------------------------------
# iso / utc / floor


def test_iso_ends_with_z() -> None:
    assert iso(dt(2026, 11, 25, 13)) == "2026-11-25T13:00:00Z"


def test_iso_converts_offsets_to_utc() -> None:
    value = datetime(2026, 11, 25, 15, 30, tzinfo=timezone(timedelta(hours=2)))
    assert iso(value) == "2026-11-25T13:30:00Z"
    west = datetime(2026, 11, 24, 20, tzinfo=timezone(timedelta(hours=-5)))
    assert iso(west) == "2026-11-25T01:00:00Z"


def test_iso_treats_naive_as_utc() -> None:
    assert iso(datetime(2026, 11, 25, 13, 5, 7)) == "2026-11-25T13:05:07Z"


def test_utc_of_naive_and_aware() -> None:
    naive = utc(datetime(2026, 11, 25, 13))
    assert naive == dt(2026, 11, 25, 13)
    assert naive.utcoffset() == timedelta(0)
    aware = utc(datetime(2026, 11, 25, 15, tzinfo=timezone(timedelta(hours=2))))
    assert aware == dt(2026, 11, 25, 13)
    assert aware.utcoffset() == timedelta(0)
    assert aware.hour == 13


def test_naive_window_at_is_utc() -> None:
    assert window_at(datetime(2026, 11, 25, 13, 45), True) == Window(dt(2026, 11, 25, 13), dt(2026, 11, 25, 14))
    assert window_at(datetime(2026, 11, 25, 13, 45), False) == Window(dt(2026, 11, 25), dt(2026, 11, 26))


def test_window_at_converts_offset_before_flooring() -> None:
    # 00:30 at +02:00 is 22:30 UTC the previous day: the daily window is the previous UTC day.
    value = datetime(2026, 11, 26, 0, 30, tzinfo=timezone(timedelta(hours=2)))
    assert window_at(value, False).partition_key == "2026-11-25"
    assert window_at(value, True).partition_key == "2026-11-25-22:00"


def test_floor() -> None:
    value = dt(2026, 11, 25, 13, 59, 59, 999999)
    assert floor(value, True) == dt(2026, 11, 25, 13)
    assert floor(value, False) == dt(2026, 11, 25)


def test_window_str_uses_z() -> None:
    assert str(Window(dt(2026, 11, 25, 13), dt(2026, 11, 25, 14))) == "2026-11-25T13:00:00Z..2026-11-25T14:00:00Z"
