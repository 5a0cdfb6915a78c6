"""Usage endpoints of the Metronome emulator: `POST /v1/usage`, `/v1/usage/groups`, `/v1/ingest`.

The two usage POSTs take filters in the JSON body and the cursor in the query string, as the SDK
sends them; `/v1/usage` has a fixed page size (it has no `limit`).
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import lru_cache
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
# A usage page names the same few window bounds 200 times: format each once.
_fmt = lru_cache(maxsize=16_384)(fmt)


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


@lru_cache(maxsize=256)
def _windows(start: datetime, end: datetime, size: str) -> list[Window]:
    """HOUR/DAY windows from `start`; the last one ends at `end`. NONE: one window.

    Cached, and shared (callers must not change it): every shard of a listing names the same
    window instants instead of allocating its own."""
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
    """(metric, group_by) pairs; a metric here only needs its id and name."""
    raw = body.get("billable_metrics")
    if raw is None:
        return [
            ({"id": mid, "name": name}, None)
            for mid, name in state.metric_names(include_archived=False)
        ]
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


def _selected_customers(state: MetronomeState, body: dict[str, Any]) -> Sequence[str]:
    raw = body.get("customer_ids")
    if raw is None:
        return state.customer_ids_view()
    if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw):
        raise bad_request("customer_ids must be a list of strings")
    unknown = state.unknown_customer(raw)
    if unknown is not None:
        raise not_found(f"Customer {unknown} not found")
    return list(dict.fromkeys(raw))


class _UsageKeys(Sequence[tuple[str, dict[str, Any], Any, Window]]):
    """The customer × metric × window keys of a request, computed per index rather than materialized:
    a page costs O(page), not O(customers × metrics × windows), so a large sandbox stays fast."""

    def __init__(self, customers: Sequence[str], metrics: list[tuple[dict[str, Any], Any]],
                 windows: list[Window]) -> None:
        self.customers, self.metrics, self.windows = customers, metrics, windows
        self.per_customer = len(metrics) * len(windows)

    def __len__(self) -> int:
        return len(self.customers) * self.per_customer

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            first, stop, step = index.indices(len(self))
            return list(self._run(first, stop)) if step == 1 else [
                self[i] for i in range(first, stop, step)]
        if not 0 <= index < len(self):
            raise IndexError(index)
        customer, rest = divmod(index, self.per_customer)
        metric, window = divmod(rest, len(self.windows))
        return (self.customers[customer], *self.metrics[metric], self.windows[window])

    def _run(self, first: int, stop: int) -> Iterator[tuple[str, dict[str, Any], Any, Window]]:
        """Keys first..stop-1 by counting (one divmod per page, not two per key)."""
        if first >= stop or not self.per_customer:
            return
        customer, rest = divmod(first, self.per_customer)
        metric, window = divmod(rest, len(self.windows))
        for _ in range(stop - first):
            yield (self.customers[customer], *self.metrics[metric], self.windows[window])
            window += 1
            if window == len(self.windows):
                window, metric = 0, metric + 1
                if metric == len(self.metrics):
                    metric, customer = 0, customer + 1


@dataclass(frozen=True)
class _Plan:
    """What a valid `POST /v1/usage` body asks for. `customers` None: all (read per request, as
    customers may be added); `metric_filter` is the raw `billable_metrics` (looked up per request)."""

    windows: list[Window]
    customers: Sequence[str] | None
    metric_filter: Any


class _PlanCache:
    """Valid bodies of one app's usage requests, by raw bytes. The shards of a listing send the
    same body (up to 500 customer ids) with every page: it is parsed and checked once. A plan
    cannot go stale: customers are never removed, and metrics are looked up anew."""

    SIZE = 1024

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plans: OrderedDict[tuple[bytes, str], _Plan] = OrderedDict()

    def get(self, key: tuple[bytes, str]) -> _Plan | None:
        with self._lock:
            plan = self._plans.get(key)
            if plan is not None:
                self._plans.move_to_end(key)
            return plan

    def put(self, key: tuple[bytes, str], plan: _Plan) -> None:
        with self._lock:
            self._plans[key] = plan
            if len(self._plans) > self.SIZE:
                self._plans.popitem(last=False)


async def _plan(
    request: Request, state: MetronomeState
) -> tuple[_Plan, list[Any], Sequence[str]]:
    """The request's plan (parsed once per body), its metrics and its customers."""
    cache: _PlanCache | None = getattr(request.app.state, "usage_plans", None)
    if cache is None:
        cache = request.app.state.usage_plans = _PlanCache()
    key = (await request.body(), request.headers.get("content-encoding", ""))
    plan = cache.get(key)
    if plan is None:
        body = json_object(await json_body(request))
        if body.get("window_size") is None:
            raise bad_request("window_size is required")
        size = window_size(body["window_size"], ("HOUR", "DAY", "NONE"))
        start, end = _range(body)
        metrics = _selected_metrics(state, body)
        customers = _selected_customers(state, body)
        plan = _Plan(_windows(start, end, size),
                     None if body.get("customer_ids") is None else customers,
                     body.get("billable_metrics"))
        cache.put(key, plan)
        return plan, metrics, customers
    metrics = _selected_metrics(state, {"billable_metrics": plan.metric_filter})
    return plan, metrics, state.customer_ids_view() if plan.customers is None else plan.customers


async def usage(request: Request) -> Response:
    state = state_of(request)
    plan, metrics, customers = await _plan(request, state)
    keys = _UsageKeys(customers, metrics, plan.windows)
    page, cursor = page_of(request, keys, kind="usage", limit=USAGE_PAGE_SIZE)
    values = state.window_values((c, m["id"], ws, we) for c, m, _, (ws, we) in page)
    return _usage_response(page, values, cursor)


# Exactly what JSONResponse writes (compact separators, no ASCII escaping, no NaN).
_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def _number(value: Decimal | None) -> str:
    """`json_number(value)` as the JSON encoder writes it (repr of a finite float or an int)."""
    if value is None:
        return "null"
    if value.is_finite() and value == value.to_integral_value():
        return repr(int(value))
    number = float(value)
    if math.isfinite(number):
        return repr(number)
    return _encode(number)  # raises for NaN / infinity, as JSONResponse would


def _usage_response(page: list[Any], values: list[Decimal | None], cursor: str | None) -> Response:
    """The bytes `JSONResponse({"data": rows, "next_page": cursor})` would send, assembled from
    fragments: a page repeats a few customer × metric heads and window spans 100 times, and the
    encoder's per-row work was most of the route's time."""
    heads: dict[tuple[str, str], str] = {}
    spans: dict[Window, str] = {}
    rows = []
    for (customer_id, metric, group_by, window), value in zip(page, values, strict=True):
        head = heads.get((customer_id, metric["id"]))
        if head is None:
            head = heads[(customer_id, metric["id"])] = (
                '{"customer_id":' + _encode(customer_id)
                + ',"billable_metric_id":' + _encode(metric["id"])
                + ',"billable_metric_name":' + _encode(metric["name"]))
        span = spans.get(window)
        if span is None:
            span = spans[window] = (
                ',"start_timestamp":' + _encode(_fmt(window[0]))
                + ',"end_timestamp":' + _encode(_fmt(window[1])) + ',"value":')
        row = head + span + _number(value)
        if group_by is not None:
            # The emulator keeps no per-group data: every requested group reports "no matches".
            row += ',"groups":' + _encode({v: None for v in group_by.get("values") or []})
        rows.append(row + "}")
    text = '{"data":[' + ",".join(rows) + '],"next_page":' + _encode(cursor) + "}"
    return Response(text.encode("utf-8"), media_type="application/json")


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
