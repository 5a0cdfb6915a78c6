"""Request helpers of the Metronome emulator: parsing that fails the way Metronome does (`ApiError`
becomes JSON `{"message": ...}`) and cursor paging of a request."""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

from starlette.requests import Request

from metronome_suger.sandbox.faults import Faults
from metronome_suger.sandbox.metronome_state import MetronomeState
from metronome_suger.sandbox.paging import CursorError, paginate
from metronome_suger.sandbox.wire import parse_rfc3339

T = TypeVar("T")


class ApiError(Exception):
    """An HTTP error answered as `{"message": ...}` with `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def not_found(message: str) -> ApiError:
    return ApiError(404, message)


def query_limit(request: Request, default: int) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request("limit must be an integer between 1 and 100") from None
    if not 1 <= value <= 100:
        raise bad_request("limit must be an integer between 1 and 100")
    return value


def query_bool(request: Request, name: str, default: bool = False) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise bad_request(f"{name} must be true or false")


def query_list(request: Request, name: str) -> list[str] | None:
    """Array query params, comma-joined (SDK style) or repeated (OpenAPI style)."""
    values = request.query_params.getlist(name)
    if not values:
        return None
    return [part for value in values for part in value.split(",") if part]


def parse_time(value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise bad_request(f"{name} must be an RFC 3339 timestamp string")
    try:
        return parse_rfc3339(value)
    except ValueError:
        raise bad_request(f"{name} is not a valid RFC 3339 timestamp: {value!r}") from None


def query_time(request: Request, name: str, *, required: bool) -> datetime | None:
    raw = request.query_params.get(name)
    if raw is None:
        if required:
            raise bad_request(f"{name} is required")
        return None
    return parse_time(raw, name)


def window_size(value: Any, allowed: tuple[str, ...], *, default: str | None = None) -> str:
    """Enum case-insensitivity as in the spec (`hour`, `HOUR`, `Hour`)."""
    if value is None and default is not None:
        return default
    if not isinstance(value, str) or value.upper() not in allowed:
        raise bad_request(f"window_size must be one of {', '.join(allowed)}")
    return value.upper()


async def json_body(request: Request) -> Any:
    raw = await request.body()
    if request.headers.get("content-encoding", "").lower() == "gzip":
        try:
            raw = gzip.decompress(raw)
        except OSError:
            raise bad_request("body is not valid gzip") from None
    if not raw:
        raise bad_request("a JSON body is required")
    try:
        return json.loads(raw)
    except ValueError:
        raise bad_request("body is not valid JSON") from None


def json_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_request("body must be a JSON object")
    return body


def state_of(request: Request) -> MetronomeState:
    state: MetronomeState = request.app.state.metronome
    return state


def page_of(
    request: Request, items: Sequence[T], *, kind: str, limit: int
) -> tuple[list[T], str | None]:
    """The page named by the `next_page` query parameter (400 for a cursor we did not issue)."""
    faults: Faults | None = request.app.state.faults
    cursor = request.query_params.get("next_page")
    try:
        page, next_cursor = paginate(items, kind=kind, limit=limit, cursor=cursor, faults=faults)
    except CursorError as exc:
        raise bad_request(str(exc)) from None
    return list(page), next_cursor
