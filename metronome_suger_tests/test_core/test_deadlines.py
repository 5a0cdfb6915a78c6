"""Marketplace deadlines (CONTRACT §5), counted from the end of the hour that starts at the timestamp."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metronome_suger.config import DEFAULT_DEADLINE_HOURS
from metronome_suger.core.deadlines import URGENT, deadline, is_expired, send_order
from metronome_suger.core.windows import window_for_key

UTC = timezone.utc
TS = datetime(2026, 11, 25, 13, tzinfo=UTC)
HOURS = {"AWS": Decimal(6), "AZURE": Decimal(24), "GCP": Decimal(1)}
EPS = timedelta(microseconds=1)


def test_defaults_match_the_contract() -> None:
    assert DEFAULT_DEADLINE_HOURS == HOURS


@pytest.mark.parametrize(
    ("partner", "expected"),
    [
        ("AWS", datetime(2026, 11, 25, 20, tzinfo=UTC)),  # 13:00 + 1 h + 6 h
        ("AZURE", datetime(2026, 11, 26, 14, tzinfo=UTC)),  # 13:00 + 1 h + 24 h
        ("GCP", datetime(2026, 11, 25, 15, tzinfo=UTC)),  # 13:00 + 1 h + 1 h
    ],
)
def test_deadline_per_partner(partner: str, expected: datetime) -> None:
    assert deadline(TS, partner, HOURS) == expected


@pytest.mark.parametrize("partner", ["AWS", "AZURE", "GCP"])
def test_is_expired_at_and_around_the_boundary(partner: str) -> None:
    due = TS + timedelta(hours=1) + timedelta(hours=int(HOURS[partner]))
    assert not is_expired(TS, TS, partner, HOURS)
    assert not is_expired(TS + timedelta(hours=1), TS, partner, HOURS)  # the window just closed
    assert not is_expired(due - timedelta(seconds=1), TS, partner, HOURS)
    assert not is_expired(due - EPS, TS, partner, HOURS)
    assert is_expired(due, TS, partner, HOURS)
    assert is_expired(due + EPS, TS, partner, HOURS)
    assert is_expired(due + timedelta(days=30), TS, partner, HOURS)


def test_gcp_hourly_group_is_not_expired_when_its_window_settles() -> None:
    # Counting from the timestamp itself would expire it at 14:00, before it could be read.
    window = window_for_key("2026-11-25-13:00", hourly=True)
    settled = window.end + timedelta(minutes=15)
    assert not is_expired(settled, window.report_timestamp, "GCP", HOURS)
    assert is_expired(window.end + timedelta(hours=1), window.report_timestamp, "GCP", HOURS)


def test_daily_window_deadline_counts_from_23_00() -> None:
    window = window_for_key("2026-11-25", hourly=False)
    ts = window.report_timestamp
    assert deadline(ts, "AWS", HOURS) == datetime(2026, 11, 26, 6, tzinfo=UTC)
    assert deadline(ts, "GCP", HOURS) == datetime(2026, 11, 26, 1, tzinfo=UTC)
    assert deadline(ts, "AZURE", HOURS) == datetime(2026, 11, 27, 0, tzinfo=UTC)
    assert not is_expired(datetime(2026, 11, 26, 0, 59, 59, tzinfo=UTC), ts, "GCP", HOURS)
    assert is_expired(datetime(2026, 11, 26, 1, tzinfo=UTC), ts, "GCP", HOURS)


def test_configured_hours_are_used() -> None:
    hours = {**HOURS, "AWS": Decimal(24), "GCP": Decimal("0.5")}
    assert deadline(TS, "AWS", hours) == datetime(2026, 11, 26, 14, tzinfo=UTC)
    assert deadline(TS, "GCP", hours) == datetime(2026, 11, 25, 14, 30, tzinfo=UTC)
    assert not is_expired(datetime(2026, 11, 25, 14, 29, 59, tzinfo=UTC), TS, "GCP", hours)
    assert is_expired(datetime(2026, 11, 25, 14, 30, tzinfo=UTC), TS, "GCP", hours)


def test_unknown_partner_raises() -> None:
    with pytest.raises(KeyError):
        deadline(TS, "ORACLE", HOURS)


def test_other_timezones_compare_as_instants() -> None:
    plus_two = timezone(timedelta(hours=2))
    now = datetime(2026, 11, 25, 17, tzinfo=plus_two)  # 15:00 UTC: the GCP deadline
    assert is_expired(now, TS, "GCP", HOURS)
    assert not is_expired(now - EPS, TS, "GCP", HOURS)


@given(
    st.sampled_from(["AWS", "AZURE", "GCP"]),
    st.integers(min_value=-3 * 86_400, max_value=3 * 86_400),
)
def test_is_expired_matches_deadline(partner: str, offset_seconds: int) -> None:
    now = TS + timedelta(seconds=offset_seconds)
    assert is_expired(now, TS, partner, HOURS) is (now >= deadline(TS, partner, HOURS))


# ---------------------------------------------------------------------------------------------------------
# send_order


def test_urgent_is_one_hour() -> None:
    assert URGENT == timedelta(hours=1)


def test_send_order_urgency_boundary() -> None:
    due = deadline(TS, "AWS", HOURS)  # 20:00
    assert send_order(due - timedelta(hours=1), TS, "AWS", HOURS) == (0, due)
    assert send_order(due - timedelta(hours=1) - EPS, TS, "AWS", HOURS) == (1, due)
    assert send_order(due - timedelta(minutes=5), TS, "AWS", HOURS) == (0, due)
    assert send_order(TS, TS, "AWS", HOURS) == (1, due)


def test_send_order_puts_groups_near_their_deadline_first() -> None:
    now = datetime(2026, 11, 25, 14, 10, tzinfo=UTC)
    groups = [
        ("azure-13", TS, "AZURE"),  # due 2026-11-26 14:00, not urgent
        ("aws-13", TS, "AWS"),  # due 20:00, not urgent
        ("gcp-13", TS, "GCP"),  # due 15:00, 50 min left: urgent
        ("aws-08", datetime(2026, 11, 25, 8, tzinfo=UTC), "AWS"),  # due 15:00, 50 min left: urgent
        ("gcp-12", datetime(2026, 11, 25, 12, tzinfo=UTC), "GCP"),  # due 14:00, already past: urgent
        ("aws-12", datetime(2026, 11, 25, 12, tzinfo=UTC), "AWS"),  # due 19:00, not urgent
    ]
    ordered = sorted(groups, key=lambda g: send_order(now, g[1], g[2], HOURS))
    names = [g[0] for g in ordered]
    assert names[:3] == ["gcp-12", "gcp-13", "aws-08"] or names[:3] == ["gcp-12", "aws-08", "gcp-13"]
    assert names[3:] == ["aws-12", "aws-13", "azure-13"]


def test_urgent_gcp_group_precedes_older_aws_group() -> None:
    now = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)
    gcp = send_order(now, TS, "GCP", HOURS)  # due 15:00
    aws = send_order(now, datetime(2026, 11, 25, 9, tzinfo=UTC), "AWS", HOURS)  # due 16:00, 1.5 h left
    assert gcp < aws
    assert gcp[0] == 0 and aws[0] == 1
