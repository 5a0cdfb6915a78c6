"""Marketplace deadlines as each marketplace counts them (CONTRACT §5): AWS and Azure from the group's
timestamp, GCP from the end of the usage hour with the month-end cutoff; at risk inside the forwarding lag."""

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metronome_suger.config import DEFAULT_DEADLINE_HOURS
from metronome_suger.core.deadlines import Deadlines, Urgency, month_end_cutoff
from metronome_suger.core.windows import window_for_key

UTC = timezone.utc
TS = datetime(2026, 11, 25, 13, tzinfo=UTC)
HOURS = {"AWS": Decimal(6), "AZURE": Decimal(24), "GCP": Decimal(1)}
RULES = Deadlines(HOURS)  # forwarding lag: 60 min
EPS = timedelta(microseconds=1)


def test_defaults_match_the_contract() -> None:
    assert DEFAULT_DEADLINE_HOURS == HOURS
    assert RULES.forward_lag == timedelta(minutes=60)


@pytest.mark.parametrize(
    ("partner", "expected"),
    [
        ("AWS", datetime(2026, 11, 25, 19, tzinfo=UTC)),  # BatchMeterUsage: Timestamp at most 6 h old
        ("AZURE", datetime(2026, 11, 26, 13, tzinfo=UTC)),  # effectiveStartTime at most 24 h old
        ("GCP", datetime(2026, 11, 25, 15, tzinfo=UTC)),  # 1 h after the usage hour 13:00-14:00 ends
    ],
)
def test_deadline_per_partner(partner: str, expected: datetime) -> None:
    assert RULES.deadline(TS, partner) == expected


@pytest.mark.parametrize("partner", ["AWS", "AZURE", "GCP"])
def test_expired_at_and_after_the_deadline(partner: str) -> None:
    due = RULES.deadline(TS, partner)
    assert not RULES.is_expired(due - EPS, TS, partner)
    assert RULES.is_expired(due, TS, partner)
    assert RULES.is_expired(due + timedelta(days=30), TS, partner)


@pytest.mark.parametrize("partner", ["AWS", "AZURE", "GCP"])
def test_at_risk_inside_the_forwarding_lag(partner: str) -> None:
    due = RULES.deadline(TS, partner)
    assert RULES.urgency(due - timedelta(minutes=60), TS, partner) is Urgency.OK
    assert RULES.urgency(due - timedelta(minutes=60) + EPS, TS, partner) is Urgency.AT_RISK
    assert RULES.urgency(due - EPS, TS, partner) is Urgency.AT_RISK
    assert RULES.urgency(due, TS, partner) is Urgency.EXPIRED


def test_lag_is_configurable() -> None:
    rules = Deadlines(HOURS, timedelta(minutes=10))
    due = rules.deadline(TS, "AWS")
    assert rules.urgency(due - timedelta(minutes=30), TS, "AWS") is Urgency.OK
    assert rules.urgency(due - timedelta(minutes=9), TS, "AWS") is Urgency.AT_RISK


def test_aws_counts_from_the_timestamp_not_the_end_of_its_hour() -> None:
    # The old rule (+1 h) kept a 13:00 group alive until 20:00; AWS refuses it after 19:00.
    assert RULES.is_expired(datetime(2026, 11, 25, 19, 30, tzinfo=UTC), TS, "AWS")


def test_gcp_hourly_group_is_at_risk_not_expired_when_its_window_settles() -> None:
    window = window_for_key("2026-11-25-13:00", hourly=True)
    settled = window.end + timedelta(minutes=15)
    assert RULES.urgency(settled, window.report_timestamp, "GCP") is Urgency.AT_RISK
    assert RULES.is_expired(window.end + timedelta(hours=1), window.report_timestamp, "GCP")


def test_gcp_counts_from_the_end_of_the_hour_whatever_the_minute() -> None:
    assert RULES.deadline(TS + timedelta(minutes=59), "GCP") == RULES.deadline(TS, "GCP")


def test_daily_window_deadlines() -> None:
    ts = window_for_key("2026-11-25", hourly=False).report_timestamp  # 23:00
    assert RULES.deadline(ts, "AWS") == datetime(2026, 11, 26, 5, tzinfo=UTC)
    assert RULES.deadline(ts, "GCP") == datetime(2026, 11, 26, 1, tzinfo=UTC)
    assert RULES.deadline(ts, "AZURE") == datetime(2026, 11, 26, 23, tzinfo=UTC)


@pytest.mark.parametrize(
    ("usage_hour", "cutoff"),
    [
        # November's usage (Pacific time) is due by Dec 1 01:00 PST = 09:00 UTC.
        (datetime(2026, 11, 30, 23, tzinfo=UTC), datetime(2026, 12, 1, 9, tzinfo=UTC)),
        # 07:00 UTC on Dec 1 is still Nov 30 in California.
        (datetime(2026, 12, 1, 7, tzinfo=UTC), datetime(2026, 12, 1, 9, tzinfo=UTC)),
        # 08:00 UTC on Dec 1 is December in California: due Jan 1 01:00 PST.
        (datetime(2026, 12, 1, 8, tzinfo=UTC), datetime(2027, 1, 1, 9, tzinfo=UTC)),
        # Summer time: June's usage due Jul 1 01:00 PDT = 08:00 UTC.
        (datetime(2026, 6, 30, 12, tzinfo=UTC), datetime(2026, 7, 1, 8, tzinfo=UTC)),
    ],
)
def test_month_end_cutoff(usage_hour: datetime, cutoff: datetime) -> None:
    assert month_end_cutoff(usage_hour) == cutoff


def test_gcp_month_end_cutoff_binds_before_a_long_configured_deadline() -> None:
    rules = Deadlines({**HOURS, "GCP": Decimal(6)})
    last_hour = datetime(2026, 11, 30, 23, tzinfo=UTC)
    assert rules.deadline(last_hour, "GCP") == datetime(2026, 12, 1, 6, tzinfo=UTC)  # 6 h after 00:00
    late_hour = datetime(2026, 12, 1, 6, tzinfo=UTC)  # Nov 30 22:00 in California
    assert rules.deadline(late_hour, "GCP") == datetime(2026, 12, 1, 9, tzinfo=UTC)  # not 13:00: the cutoff
    aws = Deadlines({**HOURS, "AWS": Decimal(6)})
    assert aws.deadline(late_hour, "AWS") == datetime(2026, 12, 1, 12, tzinfo=UTC)  # AWS has no such cutoff


def test_configured_hours_are_used() -> None:
    rules = Deadlines({**HOURS, "AWS": Decimal(24), "GCP": Decimal("0.5")}, timedelta(0))
    assert rules.deadline(TS, "AWS") == datetime(2026, 11, 26, 13, tzinfo=UTC)
    assert rules.deadline(TS, "GCP") == datetime(2026, 11, 25, 14, 30, tzinfo=UTC)


def test_unknown_partner_raises() -> None:
    with pytest.raises(KeyError):
        RULES.deadline(TS, "ORACLE")


def test_other_timezones_compare_as_instants() -> None:
    now = datetime(2026, 11, 25, 17, tzinfo=timezone(timedelta(hours=2)))  # 15:00 UTC: the GCP deadline
    assert RULES.is_expired(now, TS, "GCP")
    assert not RULES.is_expired(now - EPS, TS, "GCP")


@given(st.sampled_from(["AWS", "AZURE", "GCP"]), st.integers(min_value=-3 * 86_400, max_value=3 * 86_400))
def test_urgency_matches_deadline_and_lag(partner: str, offset_seconds: int) -> None:
    now = TS + timedelta(seconds=offset_seconds)
    left = RULES.deadline(TS, partner) - now
    expected = Urgency.EXPIRED if left <= timedelta(0) else Urgency.AT_RISK if left < RULES.forward_lag else Urgency.OK
    assert RULES.urgency(now, TS, partner) is expected


def test_send_order_puts_groups_at_risk_first_then_by_deadline() -> None:
    now = datetime(2026, 11, 25, 14, 10, tzinfo=UTC)
    groups = [
        ("azure-13", TS, "AZURE"),  # due 2026-11-26 13:00
        ("aws-13", TS, "AWS"),  # due 19:00
        ("gcp-13", TS, "GCP"),  # due 15:00, 50 min left: at risk
        ("aws-09", datetime(2026, 11, 25, 9, tzinfo=UTC), "AWS"),  # due 15:00, 50 min left: at risk
        ("aws-12", datetime(2026, 11, 25, 12, tzinfo=UTC), "AWS"),  # due 18:00
    ]
    names = [g[0] for g in sorted(groups, key=lambda g: RULES.send_order(now, g[1], g[2]))]
    assert set(names[:2]) == {"gcp-13", "aws-09"}
    assert names[2:] == ["aws-12", "aws-13", "azure-13"]


def test_describe_names_the_rule() -> None:
    assert RULES.describe("AWS") == "the AWS deadline (6 h after the group's timestamp)"
    assert "end of its usage hour" in RULES.describe("GCP") and "US Pacific" in RULES.describe("GCP")


def test_aws_takes_remaining_usage_for_one_hour_after_a_cancellation() -> None:
    cancelled = datetime(2026, 11, 25, 13, 20, tzinfo=UTC)
    assert RULES.deadline(TS, "AWS", cancelled) == datetime(2026, 11, 25, 14, 20, tzinfo=UTC)  # not 19:00
    assert RULES.deadline(TS, "AZURE", cancelled) == RULES.deadline(TS, "AZURE")  # Azure: its usual 24 h
    assert RULES.deadline(TS, "GCP", cancelled) == RULES.deadline(TS, "GCP")  # GCP: its usual hour
    far = datetime(2026, 11, 26, tzinfo=UTC)
    assert RULES.deadline(TS, "AWS", far) == RULES.deadline(TS, "AWS")  # the earlier bound wins
    assert RULES.describe("AWS", cancelled).endswith("and 1 h after the cancellation at 2026-11-25T13:20Z)")
