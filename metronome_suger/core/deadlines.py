"""Marketplace deadlines, counted as each marketplace counts them (CONTRACT §5).

- AWS ``BatchMeterUsage`` accepts a record whose ``Timestamp`` is at most 6 h in the past, and Azure a usage
  event whose ``effectiveStartTime`` is at most 24 h old: both count from the group's ``timestamp``, which
  Suger puts on the marketplace record.
- GCP asks for usage "within one hour of the usage being generated": it counts from the **end** of the
  usage interval (the hour that starts at the group's ``timestamp``), and a month's usage must be in by
  01:00 US Pacific on the first day of the next month, whichever comes first.
- After a cancellation (the entitlement's end time) AWS takes the remaining usage for 1 h after the
  "License Deprovisioned" event only; Azure and GCP keep their usual rule for usage generated before it.

Suger forwards what we hand over at its next hourly report, so a group handed over less than one
forwarding lag before its deadline is **at risk** (sent, urgent first, warned about); at or past the
deadline it is **expired** (never sent).
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum
from typing import Any
from zoneinfo import ZoneInfo

HOUR = timedelta(hours=1)
PACIFIC = ZoneInfo("America/Los_Angeles")
FROM_INTERVAL_END = frozenset({"GCP"})  # marketplaces that count from the end of the usage interval
MONTH_END_CUTOFF = frozenset({"GCP"})  # marketplaces that close a month at 01:00 US Pacific of the next
AFTER_END = {"AWS": timedelta(hours=1)}  # how long after a cancellation the remaining usage is accepted


class Urgency(str, Enum):
    OK = "ok"
    AT_RISK = "at_risk"  # Suger's next hourly report may reach the marketplace too late
    EXPIRED = "expired"  # the marketplace no longer accepts it: never sent


def month_end_cutoff(interval_start: datetime) -> datetime:
    """01:00 US Pacific on the first day of the month after the (Pacific) month of ``interval_start``."""
    local = interval_start.astimezone(PACIFIC)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    return datetime(year, month, 1, 1, tzinfo=PACIFIC).astimezone(timezone.utc)


@dataclass(frozen=True)
class Deadlines:
    """The configured hours per marketplace (``marketplace_deadline_hours``) and Suger's forwarding lag
    (``suger_forward_lag_minutes``). Every deadline decision of the project goes through this object."""

    hours: Mapping[Any, Decimal]
    forward_lag: timedelta = HOUR

    def deadline(self, timestamp: datetime, partner: str, ended_at: datetime | None = None) -> datetime:
        """The last moment the marketplace accepts a group stamped ``timestamp`` (of an entitlement
        cancelled at ``ended_at``, if it was)."""
        allowed = timedelta(hours=float(self.hours[partner]))
        if partner in FROM_INTERVAL_END:
            interval_start = timestamp.replace(minute=0, second=0, microsecond=0)
            due = interval_start + HOUR + allowed
            if partner in MONTH_END_CUTOFF:
                due = min(due, month_end_cutoff(interval_start))
        else:
            due = timestamp + allowed
        if ended_at is not None and partner in AFTER_END:
            due = min(due, ended_at + AFTER_END[partner])
        return due

    def urgency(self, now: datetime, timestamp: datetime, partner: str, ended_at: datetime | None = None) -> Urgency:
        """Handed over at ``now``: in time, at risk (inside the forwarding lag) or expired."""
        left = self.deadline(timestamp, partner, ended_at) - now
        if left <= timedelta(0):
            return Urgency.EXPIRED
        return Urgency.AT_RISK if left < self.forward_lag else Urgency.OK

    def is_expired(self, now: datetime, timestamp: datetime, partner: str, ended_at: datetime | None = None) -> bool:
        return self.urgency(now, timestamp, partner, ended_at) is Urgency.EXPIRED

    def send_order(
        self, now: datetime, timestamp: datetime, partner: str, ended_at: datetime | None = None
    ) -> tuple[int, datetime]:
        """Sort key: at-risk groups first, then by deadline."""
        at_risk = self.urgency(now, timestamp, partner, ended_at) is not Urgency.OK
        return (0 if at_risk else 1, self.deadline(timestamp, partner, ended_at))

    def describe(self, partner: str, ended_at: datetime | None = None) -> str:
        """The rule in words, for messages: 'the AWS deadline (6 h after the group's timestamp)'."""
        origin = "the end of its usage hour" if partner in FROM_INTERVAL_END else "the group's timestamp"
        cutoff = ", and a month's usage by 01:00 US Pacific of the next" if partner in MONTH_END_CUTOFF else ""
        after_end = ""
        if ended_at is not None and partner in AFTER_END:
            after_end = (f", and {AFTER_END[partner].total_seconds() / 3600:g} h after the cancellation at "
                         f"{ended_at.astimezone(timezone.utc):%Y-%m-%dT%H:%MZ}")
        return f"the {partner} deadline ({self.hours[partner]} h after {origin}{cutoff}{after_end})"
