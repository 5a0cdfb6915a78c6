"""What the Suger emulator puts on and takes off the wire: Go-style RFC 3339 times, numbers from
Decimal, the error a handler raises (the app renders it in the spec's error shape), and the checks
of a UsageMeteringConfigInfo body."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal
from functools import lru_cache
from typing import Any

JsonDict = dict[str, Any]
PARTNERS = ("AWS", "AZURE", "GCP")


class SugerError(Exception):
    """A request Suger would refuse: carries the HTTP status and the message for the error body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def utc(value: datetime) -> datetime:
    """Naive datetimes are taken as UTC, as Suger documents every timestamp in UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def hour_floor(value: datetime) -> datetime:
    return value.replace(minute=0, second=0, microsecond=0)


@lru_cache(maxsize=65_536)
def rfc3339(value: datetime) -> str:
    """Go-style RFC 3339 with ``Z`` (fraction only when non-zero), as Suger's backend emits it.

    Cached: a frozen clock stamps thousands of groups and reports with the same instants."""
    value = utc(value)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


_PLAIN = (str, int, float, bool, type(None))
# Exactly what Starlette's JSONResponse writes (compact separators, no ASCII escaping, no NaN).
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def json_bytes(value: Any) -> bytes:
    """The body ``JSONResponse(value)`` would send."""
    return _ENCODER.encode(value).encode("utf-8")


def render(value: Any) -> Any:
    """Turn internal values (Decimal, datetime) into the JSON the API returns.

    Every Suger answer goes through here, so the common types are dispatched by exact type first."""
    kind = type(value)
    if kind is dict:
        return {k: v if type(v) in _PLAIN else render(v) for k, v in value.items()}
    if kind is list:
        return [v if type(v) in _PLAIN else render(v) for v in value]
    if kind is Decimal:
        return int(value) if value == value.to_integral_value() else float(value)
    if kind is datetime:
        return rfc3339(value)
    if kind in _PLAIN:
        return value
    if isinstance(value, dict):
        return {k: render(v) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v) for v in value]
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _valid_mapping_value(value: Any) -> bool:
    """A UsageMeteringDimensionMappingValue: target key, known mode, non-negative multiplier."""
    if not isinstance(value, dict) or not isinstance(value.get("dimensionKey"), str):
        return False
    multiplier = value.get("convertionMultiplier")
    number = isinstance(multiplier, (int, float, Decimal)) and not isinstance(multiplier, bool)
    return value.get("mappingMode") in (None, "", "QUANTITY", "AMOUNT") and (
        multiplier is None or (number and multiplier >= 0))


def metering_config_entries(config: JsonDict) -> list[JsonDict]:
    """The partner configs of a UsageMeteringConfigInfo body, each checked (400 otherwise)."""
    entries = config.get("partnerUsageMeteringConfigs") or []
    if not isinstance(entries, list):
        raise SugerError(400, "partnerUsageMeteringConfigs must be an array")
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("partner") not in PARTNERS:
            raise SugerError(400, f"each partner config needs a partner in {PARTNERS}")
        mapping = entry.get("dimensionMappingV2") or {}
        for values in mapping.values() if isinstance(mapping, dict) else [None]:
            for value in values if isinstance(values, list) else [None]:
                if not _valid_mapping_value(value):
                    raise SugerError(400, f"invalid dimensionMappingV2 value: {value!r}")
    return entries
