"""Shared value types for the API models: UTC datetimes, exact decimals, a tolerant base model.

Both APIs spell timestamps several ways (``Z``, ``+00:00``, ``.000Z``, nanoseconds from Go) and
carry money and quantities as JSON numbers; everything here exists so that the rest of the code sees
exactly one representation: tz-aware UTC ``datetime`` and ``Decimal``.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timezone
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer

__all__ = [
    "ApiModel",
    "UtcDatetime",
    "parse_rfc3339",
    "format_rfc3339",
    "format_date",
    "require_aware",
]

_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_rfc3339(value: Any) -> datetime:
    """Parse an RFC 3339 / ISO 8601 timestamp liberally and return it as tz-aware UTC.

    Accepts ``Z``/``z``, numeric offsets, any number of fractional digits (truncated to
    microseconds) and a space instead of ``T``. A timestamp without an offset is taken as UTC, which
    is what both APIs mean when they omit it.
    """
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("empty timestamp")
        text = text.replace("t", "T").replace("z", "Z")
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        text = _FRACTION.sub(r"\1", text)
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"not an RFC 3339 timestamp: {value!r}") from None
    else:
        raise ValueError(f"expected an RFC 3339 timestamp string, got {type(value).__name__}")
    if dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


def require_aware(value: datetime, what: str = "datetime") -> datetime:
    """Reject naive datetimes in requests: a window boundary off by the local UTC offset is silent
    data loss."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (got naive {value.isoformat()})")
    return value.astimezone(timezone.utc)


def format_rfc3339(value: datetime, *, seconds_only: bool = False) -> str:
    """Format an aware datetime as UTC RFC 3339 with ``Z`` (``2026-11-25T14:00:00Z``).

    Microseconds are kept when present unless ``seconds_only`` (Suger's group timestamp wants whole
    seconds).
    """
    dt = require_aware(value)
    if seconds_only or dt.microsecond == 0:
        return dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_date(value: date) -> str:
    """``YYYY-MM-DD`` (Suger's list filters); a datetime is first converted to its UTC date."""
    if isinstance(value, datetime):
        value = require_aware(value).date()
    return value.isoformat()


UtcDatetime = Annotated[
    datetime,
    BeforeValidator(parse_rfc3339),
    PlainSerializer(lambda v: format_rfc3339(v), return_type=str, when_used="json"),
]
"""A tz-aware UTC datetime parsed liberally from RFC 3339 text."""


class ApiModel(BaseModel):
    """Base for response models: unknown fields are kept (APIs add fields all the time), never
    rejected."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=False)
