"""JSON in and out without losing money: Decimal-exact request bodies and Decimal-parsed responses.

Why: a float in the path turns 0.1 into 0.1000000000000000055…; quantities and cents must survive
the round trip bit for bit, and anything that cannot be sent exactly must fail loudly instead of
rounding.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from html import unescape
from typing import Any

import httpx
import pydantic

from metronome_suger.clients.types import format_date, format_rfc3339

__all__ = [
    "decode_json",
    "encode_json",
    "message_from_body",
    "summarize_validation_error",
    "to_jsonable",
]

MESSAGE_LIMIT = 500
_HTML_START = re.compile(r"\s*(<!doctype html|<html|<head|<body)", re.IGNORECASE)
_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_HTML_HIDDEN = re.compile(r"<(script|style)[^>]*>.*?</\1>", re.IGNORECASE | re.DOTALL)
_HTML_TAG = re.compile(r"<[^>]*>")


def to_jsonable(value: Any) -> Any:
    """Convert a request body to plain JSON types, keeping every Decimal exact.

    An integral Decimal becomes a JSON integer; another Decimal becomes a float only when that
    float's shortest text equals the Decimal (so the number on the wire *is* the Decimal); anything
    else raises ``ValueError`` rather than silently rounding money. Aware datetimes become RFC 3339
    ``Z`` strings.
    """
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, Decimal):
        return _decimal_to_json(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot send non-finite number {value!r} as JSON")
        return value
    if isinstance(value, datetime):
        return format_rfc3339(value)
    if isinstance(value, date):
        return format_date(value)
    if isinstance(value, pydantic.BaseModel):
        return to_jsonable(value.model_dump(by_alias=True, exclude_none=True))
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"JSON object keys must be strings, got {key!r}")
            out[key] = to_jsonable(item)
        return out
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item) for item in value]
    raise ValueError(f"cannot serialise {type(value).__name__} as JSON")


def _decimal_to_json(value: Decimal) -> int | float:
    if not value.is_finite():
        raise ValueError(f"cannot send non-finite Decimal {value} as JSON")
    if value == value.to_integral_value():
        return int(value)
    as_float = float(value)
    if Decimal(repr(as_float)) != value:
        raise ValueError(
            f"Decimal {value} cannot be sent exactly as a JSON number (it has more precision "
            f"than a binary float round-trips; nearest is {as_float!r}); round it before sending"
        )
    return as_float


def encode_json(value: Any) -> bytes:
    """Compact UTF-8 JSON for a request body (see :func:`to_jsonable` for the Decimal rule)."""
    return json.dumps(
        to_jsonable(value), separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def decode_json(content: bytes) -> Any:
    """Parse a response body with every fractional number as ``Decimal`` (never through float)."""
    return json.loads(content, parse_float=Decimal)


def message_from_body(content: bytes, status: int | None) -> tuple[str, Any]:
    """The server's error message: JSON ``{"message"}`` (or ``error``), a JSON string, the title (or
    text) of an HTML error page, or a text excerpt."""
    decoded: Any = None
    try:
        decoded = json.loads(content) if content.strip() else None
    except ValueError:
        decoded = None
    if isinstance(decoded, Mapping):
        for key in ("message", "error", "detail"):
            if isinstance(decoded.get(key), str) and decoded[key].strip():
                return decoded[key].strip(), decoded
    if isinstance(decoded, str) and decoded.strip():
        return decoded.strip(), decoded
    text = " ".join(content.decode("utf-8", errors="replace").split())
    if _HTML_START.match(text):  # a proxy's or load balancer's error page: its title (else its text), not markup
        title = _HTML_TITLE.search(text)
        text = " ".join(unescape(_HTML_TAG.sub(" ", title.group(1) if title else _HTML_HIDDEN.sub(" ", text))).split())
    if not text:
        text = httpx.codes.get_reason_phrase(status) if status else "empty response"
        return text or "empty response", decoded
    return (text[:MESSAGE_LIMIT] + "…") if len(text) > MESSAGE_LIMIT else text, decoded


def summarize_validation_error(
    err: pydantic.ValidationError, limit: int = 5, prefix: str = ""
) -> str:
    """A short, input-free description of what did not match (inputs may be large or sensitive)."""
    parts = []
    for item in err.errors(include_input=False, include_url=False)[:limit]:
        loc = ".".join(str(p) for p in (prefix, *item.get("loc", ())) if p != "") or "<root>"
        parts.append(f"{loc}: {item.get('msg', 'invalid')}")
    more = err.error_count() - limit
    if more > 0:
        parts.append(f"... and {more} more")
    return "; ".join(parts)
