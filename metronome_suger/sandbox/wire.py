"""What goes on the wire: RFC 3339 times, JSON numbers from Decimal, UTC calendar helpers."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def require_utc(dt: datetime, what: str) -> datetime:
    """`dt` in UTC; a naive datetime is a ValueError (ambiguous in a UTC-only world)."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware")
    return dt.astimezone(timezone.utc)


def parse_rfc3339(value: str) -> datetime:
    """Parse `...Z`, `...+00:00` or `....000Z`; no offset is a ValueError."""
    if not isinstance(value, str) or len(value) < 20 or value[4] != "-" or value[10] not in "Tt":
        raise ValueError(f"not an RFC 3339 timestamp: {value!r}")
    text = value[:-1] + "+00:00" if value[-1] in "Zz" else value
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp needs a UTC offset (e.g. 'Z'): {value!r}")
    return parsed.astimezone(timezone.utc)


def fmt(dt: datetime | None) -> str | None:
    """Format as RFC 3339 with `Z` (milliseconds only when present)."""
    if dt is None:
        return None
    dt = dt.astimezone(timezone.utc)
    if dt.microsecond:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def floor_hour(dt: datetime) -> datetime:
    return dt.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)


def floor_day(dt: datetime) -> datetime:
    return floor_hour(dt).replace(hour=0)


def month_start(dt: datetime) -> datetime:
    return floor_day(dt).replace(day=1)


def add_months(dt: datetime, months: int) -> datetime:
    """Shift a month-start datetime by whole months."""
    index = dt.year * 12 + (dt.month - 1) + months
    return dt.replace(year=index // 12, month=index % 12 + 1, day=1)


def hours_between(start: datetime, end: datetime) -> list[datetime]:
    """Hour starts h with start <= h < end (start must be hour-aligned)."""
    out: list[datetime] = []
    current = start
    while current < end:
        out.append(current)
        current += HOUR
    return out


def to_decimal(value: Decimal | int | float | str) -> Decimal:
    """Exact Decimal from user input; floats go through `str` so 0.1 stays 0.1."""
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(str(value))
    return Decimal(value)


def json_number(value: Decimal | None) -> int | float | None:
    """A JSON number for a Decimal: an int when integral, else the shortest float."""
    if value is None:
        return None
    if value == value.to_integral_value():
        return int(value)
    return float(value)


_MASK64 = (1 << 64) - 1


def mix64(*parts: int) -> int:
    """splitmix64 over the parts: a fast pseudo-random number, stable across runs and platforms (the worlds'
    generated usage and totals)."""
    x = 0
    for part in parts:
        x = (x + part + 0x9E3779B97F4A7C15) & _MASK64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
        x ^= x >> 31
    return x
