"""Usage endpoints of the Metronome emulator: `POST /v1/usage`, `/v1/usage/groups`, `/v1/ingest`.

The two usage POSTs take filters in the JSON body and the cursor in the query string, as the SDK
sends them; `/v1/usage` has a fixed page size (it has no `limit`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from metronome_suger.sandbox.metronome_http import (
    bad_request,
    json_body,
    json_object,
    not_found,
    page_of,
    parse_time,
    query_limit,
    state_of,
    window_size,
)
from metronome_suger.sandbox.metronome_state import MetronomeState
from metronome_suger.sandbox.wire import (
    DAY,
    HOUR,
    add_months,
    floor_day,
    fmt,
    json_number,
    month_start,
)

USAGE_PAGE_SIZE = 100
MAX_RANGE = timedelta(days=400)
Window = tuple[datetime, datetime]


def _range(body: dict[str, Any]) -> Window:
    """The bounds of `POST /v1/usage` and `/v1/usage/groups`, as Metronome documents them for every
    `window_size` (NONE included): "Must be aligned to UTC midnight" and `ending_before` "at least one
    day after `starting_on`" (SDK 4.12 `metronome/types/v1/usage_list_params.py` and
    `usage_list_with_groups_params.py`). Always enforced: a client that sends hour bounds fails here
    exactly as it would against the real API."""
    for name in ("starting_on", "ending_before"):
        if body.get(name) is None:
            raise bad_request(f"{name} is required")
    start = parse_time(body["starting_on"], "starting_on")
    end = parse_time(body["ending_before"], "ending_before")
    for name, value in (("starting_on", start), ("ending_before", end)):
        if value != floor_day(value):
            raise bad_request(f"{name} must be aligned to UTC midnight, got {body[name]!r}")
    if end - start < DAY:
        raise bad_request("ending_before must be at least one day after starting_on")
    if end - start > MAX_RANGE:
        raise bad_request("the requested range is too long")
    return start, end


def _windows(start: datetime, end: datetime, size: str) -> list[Window]:
    """HOUR/DAY windows from `start`; the last one ends at `end`. NONE: one window."""
    if size == "NONE":
        return [(start, end)]
    step = HOUR if size == "HOUR" else DAY
    out = []
    current = start
    while current < end:
        out.append((current, min(current + step, end)))
        current += step
    return out


def _group_by(metric_filter: dict[str, Any]) -> dict[str, Any] | None:
    group_by = metric_filter.get("group_by")
    if group_by is None:
        return None
    if not isinstance(group_by, dict) or not isinstance(group_by.get("key"), str):
        raise bad_request("group_by.key is required")
    values = group_by.get("values")
    if values is not None and (
        not isinstance(values, list)
        or not 1 <= len(values) <= 200
        or not all(isinstance(v, str) for v in values)
    ):
        raise bad_request("group_by.values must be a list of 1 to 200 strings")
    return group_by


def _selected_metrics(
    state: MetronomeState, body: dict[str, Any]
) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    raw = body.get("billable_metrics")
    if raw is None:
        return [(m, None) for m in state.metrics(include_archived=False)]
    if not isinstance(raw, list):
        raise bad_request("billable_metrics must be a list of {id}")
    out = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise bad_request("each billable_metrics entry needs an id")
        metric = state.get_metric(item["id"])
        if metric is None:
            raise not_found(f"Billable metric {item['id']} not found")
        out.append((metric, _group_by(item)))
    return out


def _selected_customers(state: MetronomeState, body: dict[str, Any]) -> list[str]:
    raw = body.get("customer_ids")
    if raw is None:
        return state.customer_ids()
    if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw):
        raise bad_request("customer_ids must be a list of strings")
    for customer_id in raw:
        if state.get_customer(customer_id) is None:
            raise not_found(f"Customer {customer_id} not found")
    return list(dict.fromkeys(raw))


class _UsageKeys(Sequence[tuple[str, dict[str, Any], Any, Window]]):
    """The customer × metric × window keys of a request, computed per index rather than materialized:
    a page costs O(page), not O(customers × metrics × windows), so a large sandbox stays fast."""

    def __init__(self, customers: list[str], metrics: list[tuple[dict[str, Any], Any]],
                 windows: list[Window]) -> None:
        self.customers, self.metrics, self.windows = customers, metrics, windows
        self.per_customer = len(metrics) * len(windows)

    def __len__(self) -> int:
        return len(self.customers) * self.per_customer

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not 0 <= index < len(self):
            raise IndexError(index)
        customer, rest = divmod(index, self.per_customer)
        metric, window = divmod(rest, len(self.windows))
        return (self.customers[customer], *self.metrics[metric], self.windows[window])


async def usage(request: Request) -> JSONResponse:
    state = state_of(request)
    body = json_object(await json_body(request))
    if body.get("window_size") is None:
        raise bad_request("window_size is required")
    size = window_size(body["window_size"], ("HOUR", "DAY", "NONE"))
    start, end = _range(body)
    metrics = _selected_metrics(state, body)
    customers = _selected_customers(state, body)
    keys = _UsageKeys(customers, metrics, _windows(start, end, size))
    page, cursor = page_of(request, keys, kind="usage", limit=USAGE_PAGE_SIZE)
    rows = []
    for customer_id, metric, group_by, (ws, we) in page:
        row: dict[str, Any] = {
            "customer_id": customer_id,
            "billable_metric_id": metric["id"],
            "billable_metric_name": metric["name"],
            "start_timestamp": fmt(ws),
            "end_timestamp": fmt(we),
            "value": json_number(state.window_value(customer_id, metric["id"], ws, we)),
        }
        if group_by is not None:
            # The emulator keeps no per-group data: every requested group reports "no matches".
            row["groups"] = {value: None for value in group_by.get("values") or []}
        rows.append(row)
    return JSONResponse({"data": rows, "next_page": cursor})


async def usage_groups(request: Request) -> JSONResponse:
    state = state_of(request)
    limit = query_limit(request, 100)
    body = json_object(await json_body(request))
    for name in ("customer_id", "billable_metric_id", "window_size"):
        if not isinstance(body.get(name), str):
            raise bad_request(f"{name} is required")
    size = window_size(body["window_size"], ("HOUR", "DAY", "NONE"))
    if state.get_customer(body["customer_id"]) is None:
        raise not_found(f"Customer {body['customer_id']} not found")
    metric = state.get_metric(body["billable_metric_id"])
    if metric is None:
        raise not_found(f"Billable metric {body['billable_metric_id']} not found")
    has_dates = body.get("starting_on") is not None or body.get("ending_before") is not None
    if body.get("current_period"):
        if has_dates:
            raise bad_request("current_period cannot be combined with starting_on/ending_before")
        start = month_start(state.clock.now())
        end = add_months(start, 1)
    else:
        start, end = _range(body)
    group_by = _group_by(body)
    keys: list[tuple[Window, str | None]] = []
    for window in _windows(start, end, size):
        values = (group_by or {}).get("values") or [None]
        keys.extend((window, value) for value in values)
    page, cursor = page_of(request, keys, kind="usage-groups", limit=limit)
    rows = []
    for (ws, we), group_value in page:
        value = (
            None
            if group_value is not None
            else state.window_value(body["customer_id"], metric["id"], ws, we)
        )
        rows.append(
            {
                "starting_on": fmt(ws),
                "ending_before": fmt(we),
                "group_key": group_by["key"] if group_by else None,
                "group_value": group_value,
                "value": json_number(value),
            }
        )
    return JSONResponse({"data": rows, "next_page": cursor})


def _check_event(event: Any, index: int, now: datetime) -> dict[str, Any]:
    if not isinstance(event, dict):
        raise bad_request(f"event {index} must be an object")
    transaction_id = event.get("transaction_id")
    if not isinstance(transaction_id, str) or not 1 <= len(transaction_id) <= 128:
        raise bad_request(f"event {index}: transaction_id must be a string of 1 to 128 characters")
    for name in ("customer_id", "event_type"):
        if not isinstance(event.get(name), str) or not event[name]:
            raise bad_request(f"event {index}: {name} is required")
    timestamp = parse_time(event.get("timestamp"), f"event {index}: timestamp")
    if timestamp > now + timedelta(hours=24):
        raise bad_request(f"event {index}: timestamp is more than 24 hours in the future")
    properties = event.get("properties")
    if properties is not None and not isinstance(properties, dict):
        raise bad_request(f"event {index}: properties must be an object")
    return event


async def ingest(request: Request) -> Response:
    state = state_of(request)
    body = await json_body(request)
    if not isinstance(body, list) or not 1 <= len(body) <= 100:
        raise bad_request("body must be a JSON array of 1 to 100 events")
    now = state.clock.now()
    events = [_check_event(event, i, now) for i, event in enumerate(body)]
    state.ingest(events)
    return Response(status_code=200)
