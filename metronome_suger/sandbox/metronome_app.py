"""The Metronome emulator: the read and ingest surface this project uses, as a Starlette app.

Field names, wrappers (`{"data": ...}`), cursor placement and error shapes follow the real API,
so the project's client and the official SDK can both be tested against it.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from metronome_suger.sandbox.faults import Faults
from metronome_suger.sandbox.metronome_http import (
    ApiError,
    bad_request,
    json_body,
    json_object,
    not_found,
    page_of,
    query_bool,
    query_limit,
    query_list,
    query_time,
    state_of,
    window_size,
)
from metronome_suger.sandbox.metronome_state import MetronomeState
from metronome_suger.sandbox.metronome_usage_routes import ingest, usage, usage_groups
from metronome_suger.sandbox.wire import DAY, HOUR

DEFAULT_LIMIT = 25


class BearerAuth:
    """Pure ASGI guard: `Authorization: Bearer <token>` or 401 `{"message": ...}`."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers", [])).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                response = JSONResponse(
                    {"message": "Unauthorized: missing or invalid bearer token"}, 401
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _customer_or_404(request: Request) -> dict[str, Any]:
    customer_id = request.path_params["customer_id"]
    customer = state_of(request).get_customer(customer_id)
    if customer is None:
        raise not_found(f"Customer {customer_id} not found")
    return customer


async def list_customers(request: Request) -> JSONResponse:
    limit = query_limit(request, DEFAULT_LIMIT)
    only_archived = query_bool(request, "only_archived")
    ids = query_list(request, "customer_ids")
    sf_ids = query_list(request, "salesforce_account_ids")
    alias = request.query_params.get("ingest_alias")
    if ids is not None and len(ids) > 100:
        raise bad_request("customer_ids accepts at most 100 ids")
    wanted = None if ids is None else set(ids)

    def keep(c: dict[str, Any]) -> bool:
        return (
            (c["archived_at"] is not None) == only_archived
            and (wanted is None or c["id"] in wanted)
            and (sf_ids is None or c["customer_config"]["salesforce_account_id"] in sf_ids)
            and (alias is None or alias in c["ingest_aliases"])
        )

    state = state_of(request)
    # Filter the stored records, page their ids, copy only the page.
    if ids is None and sf_ids is None and alias is None:
        found: Sequence[str] = state.customer_ids_view(archived=only_archived)
    else:
        found = state.customer_ids_where(keep)
    page, cursor = page_of(request, found, kind="customers", limit=limit)
    return JSONResponse({"data": state.get_customers(page), "next_page": cursor})


async def get_customer(request: Request) -> JSONResponse:
    return JSONResponse({"data": _customer_or_404(request)})


def _deprecated_fields(metric: dict[str, Any]) -> dict[str, Any]:
    key = metric.get("aggregation_key")
    return {
        **metric,
        "aggregate": str(metric["aggregation_type"]).lower(),
        "aggregate_keys": [key] if key else [],
        "group_by": sorted({k for group in metric.get("group_keys") or [] for k in group}),
    }


async def list_metrics(request: Request) -> JSONResponse:
    limit = query_limit(request, DEFAULT_LIMIT)
    items = state_of(request).metrics(include_archived=query_bool(request, "include_archived"))
    data, cursor = page_of(request, items, kind="billable-metrics", limit=limit)
    return JSONResponse({"data": data, "next_page": cursor})


async def get_metric(request: Request) -> JSONResponse:
    metric_id = request.path_params["billable_metric_id"]
    metric = state_of(request).get_metric(metric_id)
    if metric is None:
        raise not_found(f"Billable metric {metric_id} not found")
    return JSONResponse({"data": metric})


async def list_customer_metrics(request: Request) -> JSONResponse:
    _customer_or_404(request)
    limit = query_limit(request, DEFAULT_LIMIT)
    query_bool(request, "on_current_plan")
    items = [
        _deprecated_fields(m)
        for m in state_of(request).metrics(include_archived=query_bool(request, "include_archived"))
    ]
    data, cursor = page_of(request, items, kind="customer-billable-metrics", limit=limit)
    return JSONResponse({"data": data, "next_page": cursor})


def _sort(request: Request) -> str:
    sort = request.query_params.get("sort", "date_asc")
    if sort not in ("date_asc", "date_desc"):
        raise bad_request("sort must be date_asc or date_desc")
    return sort


# SDK metronome/types/v1/customers/invoice_list_params.py: `type: Literal[...]`.
INVOICE_TYPES = ("USAGE", "USAGE_CONSOLIDATED", "SCHEDULED")


async def list_invoices(request: Request) -> JSONResponse:
    """One customer's invoices with the server-side filters of SDK `metronome/types/v1/customers/
    invoice_list_params.py`: `status` (one value), `type`, `credit_type_id`, `starting_on` /
    `ending_before` (billing period), `skip_zero_qty_line_items`, `sort` by `issued_at`. There is no
    cross-customer list."""
    customer = _customer_or_404(request)
    limit = query_limit(request, DEFAULT_LIMIT)
    sort = _sort(request)
    status = request.query_params.get("status")
    credit_type_id = request.query_params.get("credit_type_id")
    invoice_type = request.query_params.get("type")
    if invoice_type is not None and invoice_type.upper() not in INVOICE_TYPES:
        raise bad_request(f"type must be one of {', '.join(INVOICE_TYPES)}")
    starting_on = query_time(request, "starting_on", required=False)
    ending_before = query_time(request, "ending_before", required=False)
    skip_zero = query_bool(request, "skip_zero_qty_line_items")
    state = state_of(request)
    ids = state.find_invoices(
        customer["id"],
        status=None if status is None else status.upper(),
        credit_type_id=credit_type_id,
        invoice_type=None if invoice_type is None else invoice_type.upper(),
        starting_on=starting_on,
        ending_before=ending_before,
        descending=sort == "date_desc",
    )
    page, cursor = page_of(request, ids, kind="invoices", limit=limit)
    data = state.render_invoices(page, skip_zero_qty_line_items=skip_zero)
    return JSONResponse({"data": data, "next_page": cursor})


def _windows(start: datetime, end: datetime, size: str) -> list[tuple[datetime, datetime]]:
    """Aligned UTC windows that start on/after `start` and end on/before `end`."""
    step = HOUR if size == "HOUR" else DAY
    first = start.replace(minute=0, second=0, microsecond=0)
    if size == "DAY":
        first = first.replace(hour=0)
    if first < start:
        first += step
    out = []
    while first + step <= end:
        out.append((first, first + step))
        first += step
    return out


async def list_breakdowns(request: Request) -> JSONResponse:
    customer = _customer_or_404(request)
    size = window_size(request.query_params.get("window_size"), ("HOUR", "DAY"), default="DAY")
    limit = query_limit(request, 24 if size == "HOUR" else 35)
    sort = _sort(request)
    start = query_time(request, "starting_on", required=True)
    end = query_time(request, "ending_before", required=True)
    assert start is not None and end is not None
    if end <= start:
        raise bad_request("ending_before must be after starting_on")
    if (end - start) > timedelta(days=400):
        raise bad_request("the requested range is too long")
    status = request.query_params.get("status")
    if status is not None and status.upper() not in ("DRAFT", "FINALIZED"):
        raise bad_request("status must be DRAFT or FINALIZED")
    state = state_of(request)
    keys = state.breakdown_keys(
        customer["id"],
        _windows(start, end, size),
        status=status.upper() if status else None,
        credit_type_id=request.query_params.get("credit_type_id"),
    )
    if sort == "date_desc":
        keys.sort(key=lambda key: key[1], reverse=True)
    page, cursor = page_of(request, keys, kind="breakdowns", limit=limit)
    skip_zero = query_bool(request, "skip_zero_qty_line_items")
    data = [state.breakdown(i, s, e, skip_zero_qty_line_items=skip_zero) for i, s, e in page]
    return JSONResponse({"data": data, "next_page": cursor})


async def get_invoice(request: Request) -> JSONResponse:
    customer = _customer_or_404(request)
    invoice_id = request.path_params["invoice_id"]
    skip_zero = query_bool(request, "skip_zero_qty_line_items")
    invoice = state_of(request).get_invoice(invoice_id, skip_zero_qty_line_items=skip_zero)
    if invoice is None or invoice["customer_id"] != customer["id"]:
        raise not_found(f"Invoice {invoice_id} not found")
    return JSONResponse({"data": invoice})


async def billing_provider_configurations(request: Request) -> JSONResponse:
    body = json_object(await json_body(request))
    customer_id = body.get("customer_id")
    if not isinstance(customer_id, str):
        raise bad_request("customer_id is required")
    if state_of(request).get_customer(customer_id) is None:
        raise not_found(f"Customer {customer_id} not found")
    return JSONResponse({"data": []})


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse({"message": exc.message}, status_code=exc.status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = "Not found" if exc.status_code == 404 else str(exc.detail)
    return JSONResponse({"message": message}, status_code=exc.status_code, headers=exc.headers)


def create_metronome_app(
    state: MetronomeState, *, token: str, faults: Faults | None = None
) -> Starlette:
    """The emulator app. `faults` supplies the empty-page toggles (None: never an empty page)."""
    routes = [
        Route("/v1/customers", list_customers, methods=["GET"]),
        Route("/v1/customers/{customer_id}", get_customer, methods=["GET"]),
        Route(
            "/v1/customers/{customer_id}/billable-metrics", list_customer_metrics, methods=["GET"]
        ),
        Route("/v1/customers/{customer_id}/invoices", list_invoices, methods=["GET"]),
        # Must precede {invoice_id}: "breakdowns" is not an invoice id.
        Route("/v1/customers/{customer_id}/invoices/breakdowns", list_breakdowns, methods=["GET"]),
        Route("/v1/customers/{customer_id}/invoices/{invoice_id}", get_invoice, methods=["GET"]),
        Route("/v1/billable-metrics", list_metrics, methods=["GET"]),
        Route("/v1/billable-metrics/{billable_metric_id}", get_metric, methods=["GET"]),
        Route("/v1/usage", usage, methods=["POST"]),
        Route("/v1/usage/groups", usage_groups, methods=["POST"]),
        Route("/v1/ingest", ingest, methods=["POST"]),
        Route(
            "/v1/getCustomerBillingProviderConfigurations",
            billing_provider_configurations,
            methods=["POST"],
        ),
    ]
    app = Starlette(
        routes=routes, exception_handlers={ApiError: _api_error, HTTPException: _http_error}
    )
    app.state.metronome = state
    app.state.faults = faults
    app.add_middleware(BearerAuth, token=token)
    return app
