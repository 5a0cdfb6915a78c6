"""Marketplace deadlines: past its deadline a group is never sent.

The deadline counts from the end of the hour that starts at the group's ``timestamp`` (the last moment
its usage was generated). Counting from the ``timestamp`` itself would make GCP's 1 h rule expire every
hourly group at the very moment its window closes, before it can be read.
"""

from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

URGENT = timedelta(hours=1)  # a group this close to its deadline is sent before the others


def deadline(timestamp: datetime, partner: str, hours: Mapping[Any, Decimal]) -> datetime:
    return timestamp + timedelta(hours=1) + timedelta(hours=float(hours[partner]))


def is_expired(now: datetime, timestamp: datetime, partner: str, hours: Mapping[Any, Decimal]) -> bool:
    return now >= deadline(timestamp, partner, hours)


def send_order(now: datetime, timestamp: datetime, partner: str, hours: Mapping[Any, Decimal]) -> tuple[int, datetime]:
    """Sort key: urgent groups first, then by deadline."""
    due = deadline(timestamp, partner, hours)
    return (0 if due - now <= URGENT else 1, due)
