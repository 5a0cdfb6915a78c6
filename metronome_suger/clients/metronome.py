"""Typed client for the parts of the Metronome API this project reads.

Why a hand-written client rather than ``metronome-sdk``: we need ``Decimal`` money end to end (the
SDK parses numbers as float), one retry/redaction policy shared with Suger, and pagination that
keeps going through empty pages and refuses to loop on a repeated cursor.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from pydantic import SecretStr, TypeAdapter

from metronome_suger.clients.http import (
    DEFAULT_TIMEOUT,
    DEFAULT_USER_AGENT,
    JsonApiClient,
    auth_header,
    check_paging,
    map_bounded,
    path_segment,
)
from metronome_suger.clients.metronome_models import (
    BillableMetric,
    Customer,
    Invoice,
    UsageRow,
)
from metronome_suger.clients.paging import Page, PageShapeError
from metronome_suger.clients.retry import RetryPolicy
from metronome_suger.clients.types import format_rfc3339, require_aware

__all__ = ["DEFAULT_METRONOME_URL", "MetronomeClient"]

DEFAULT_METRONOME_URL = "https://api.metronome.com"
MAX_PAGE_LIMIT = 100

_CUSTOMERS = TypeAdapter(list[Customer])
_CUSTOMER = TypeAdapter(Customer)
_METRICS = TypeAdapter(list[BillableMetric])
_USAGE = TypeAdapter(list[UsageRow])
_INVOICES = TypeAdapter(list[Invoice])

_WINDOW_SIZES = {"HOUR", "DAY", "NONE"}


def _floor_day(value: datetime) -> datetime:
    return value.replace(hour=0, minute=0, second=0, microsecond=0)


def _ceil_day(value: datetime) -> datetime:
    floor = _floor_day(value)
    return floor if floor == value else floor + timedelta(days=1)


@dataclass(frozen=True)
class _CursorPages:
    """Metronome's page shape: ``{"data": [...], "next_page": "<cursor>" | null}``, the cursor sent
    back as the ``next_page`` query parameter. Only the cursor ends a list (empty pages are legal).
    ``limit`` None: the endpoint takes none (``POST /v1/usage``)."""

    limit: int | None
    start: str = ""
    noun: str = "cursor"
    items_at: str = "data"

    def params(self, position: str) -> dict[str, Any]:
        query: dict[str, Any] = {}
        if self.limit is not None:
            query["limit"] = self.limit
        if position:
            query["next_page"] = position
        return query

    def read(self, payload: Any, position: str) -> Page[str]:
        if not isinstance(payload, Mapping) or not isinstance(payload.get("data"), list):
            raise PageShapeError("expected a JSON object with a 'data' list")
        next_page = payload.get("next_page")
        if next_page is not None and not isinstance(next_page, str):
            raise PageShapeError(f"'next_page' must be a string or null, got {next_page!r}")
        return Page(payload["data"], next_page or None)


class MetronomeClient(JsonApiClient):
    """Metronome API client (``Authorization: Bearer <token>``); the module docstring says why."""

    def __init__(
        self,
        base_url: str,
        token: str | SecretStr,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        page_limit: int = 100,
        max_workers: int = 8,
        user_agent: str = DEFAULT_USER_AGENT,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        check_paging(page_limit, MAX_PAGE_LIMIT, max_workers)
        super().__init__(
            base_url,
            auth_header("Bearer", token, "Metronome API token"),
            service="metronome",
            timeout=timeout,
            retry=retry,
            user_agent=user_agent,
            sleep=sleep,
            clock=clock,
            transport=transport,
        )
        self.page_limit = page_limit
        self.max_workers = max_workers

    def _pages(self, *, send_limit: bool = True) -> _CursorPages:
        return _CursorPages(self.page_limit if send_limit else None)

    # -- customers and metrics ---------------------------------------------------------------------

    def list_customers(self, *, include_archived: bool = False) -> list[Customer]:
        """Active customers; with ``include_archived`` also the archived ones (Metronome needs a 2nd
        call)."""
        customers = list(self.iter_pages("GET", "/v1/customers", self._pages(), _CUSTOMERS))
        if include_archived:
            known = {c.id for c in customers}
            archived = self.iter_pages(
                "GET", "/v1/customers", self._pages(), _CUSTOMERS, params={"only_archived": True}
            )
            for customer in archived:
                if customer.id not in known:
                    known.add(customer.id)
                    customers.append(customer)
        return customers

    def get_customer(self, customer_id: str) -> Customer:
        """One customer (``{"data": {...}}``); :class:`NotFoundError` if unknown."""
        path = f"/v1/customers/{path_segment(customer_id)}"
        payload = self.request("GET", path)
        if not isinstance(payload, Mapping) or not isinstance(payload.get("data"), Mapping):
            raise self.malformed("GET", path, "expected a JSON object with a 'data' object")
        return self.parse_model(_CUSTOMER, payload["data"], "GET", path, loc_prefix="data")

    def list_billable_metrics(self, *, include_archived: bool = True) -> list[BillableMetric]:
        """All billable metrics (archived included by default so history stays explainable)."""
        return list(
            self.iter_pages(
                "GET",
                "/v1/billable-metrics",
                self._pages(),
                _METRICS,
                params={"include_archived": include_archived},
            )
        )

    # -- usage -------------------------------------------------------------------------------------

    def iter_usage(
        self,
        *,
        starting_on: datetime,
        ending_before: datetime,
        window_size: str = "HOUR",
        customer_ids: Sequence[str] | None = None,
        billable_metric_ids: Sequence[str] | None = None,
        day_aligned: bool = True,
    ) -> Iterator[UsageRow]:
        """Aggregated usage rows from ``POST /v1/usage`` (filters in the body, cursor in the query).

        Metronome documents this endpoint's bounds as "aligned to UTC midnight and at least one day
        apart", so by default (``day_aligned``) the request is widened to whole UTC days and only
        the rows whose window lies inside ``[starting_on, ending_before)`` are yielded; an hourly
        window therefore works whether or not the server enforces that rule. ``day_aligned=False``
        sends the bounds as given. ``None`` filters mean "all"; an *empty* list means "none" and
        yields nothing without a call (sending ``[]`` could be read as "no filter").
        """
        start = require_aware(starting_on, "starting_on")
        end = require_aware(ending_before, "ending_before")
        if end <= start:
            raise ValueError("ending_before must be after starting_on")
        size = window_size.upper()
        if size not in _WINDOW_SIZES:
            raise ValueError(
                f"window_size must be one of {sorted(_WINDOW_SIZES)}, got {window_size!r}"
            )
        query_start, query_end = (
            (_floor_day(start), _ceil_day(end)) if day_aligned else (start, end)
        )
        widened = (query_start, query_end) != (start, end)
        if widened and size == "NONE":
            raise ValueError(
                "window_size NONE aggregates the whole range, so its bounds must already be UTC "
                "midnights when day_aligned is on"
            )
        if (customer_ids is not None and not customer_ids) or (
            billable_metric_ids is not None and not billable_metric_ids
        ):
            return iter(())
        body: dict[str, Any] = {
            "starting_on": format_rfc3339(query_start),
            "ending_before": format_rfc3339(query_end),
            "window_size": size,
        }
        if customer_ids is not None:
            body["customer_ids"] = list(dict.fromkeys(customer_ids))
        if billable_metric_ids is not None:
            body["billable_metrics"] = [{"id": m} for m in dict.fromkeys(billable_metric_ids)]
        rows = self.iter_pages(
            "POST", "/v1/usage", self._pages(send_limit=False), _USAGE, json=body
        )
        if not widened:
            return rows
        return (r for r in rows if r.start_timestamp >= start and r.end_timestamp <= end)

    def list_usage(
        self,
        *,
        starting_on: datetime,
        ending_before: datetime,
        window_size: str = "HOUR",
        customer_ids: Sequence[str] | None = None,
        billable_metric_ids: Sequence[str] | None = None,
        day_aligned: bool = True,
    ) -> list[UsageRow]:
        """:meth:`iter_usage`, collected."""
        return list(
            self.iter_usage(
                starting_on=starting_on,
                ending_before=ending_before,
                window_size=window_size,
                customer_ids=customer_ids,
                billable_metric_ids=billable_metric_ids,
                day_aligned=day_aligned,
            )
        )

    # -- invoices ----------------------------------------------------------------------------------

    def list_invoices(
        self,
        customer_id: str,
        *,
        status: str | None = None,
        starting_on: datetime | None = None,
        ending_before: datetime | None = None,
        credit_type_id: str | None = None,
        sort: str = "date_asc",
    ) -> list[Invoice]:
        """A customer's invoices; date filters apply to the billing period. ``sort`` is always sent
        because Metronome documents two different defaults."""
        params = {
            "status": status,
            "starting_on": require_aware(starting_on, "starting_on") if starting_on else None,
            "ending_before": (
                require_aware(ending_before, "ending_before") if ending_before else None
            ),
            "credit_type_id": credit_type_id,
            "sort": sort,
        }
        path = f"/v1/customers/{path_segment(customer_id)}/invoices"
        return list(self.iter_pages("GET", path, self._pages(), _INVOICES, params=params))

    def list_invoices_for_customers(
        self,
        customer_ids: Sequence[str],
        *,
        status: str | None = None,
        starting_on: datetime | None = None,
        ending_before: datetime | None = None,
        credit_type_id: str | None = None,
        sort: str = "date_asc",
    ) -> dict[str, list[Invoice]]:
        """:meth:`list_invoices` for many customers on at most ``max_workers`` threads (input order
        kept)."""
        unique = list(dict.fromkeys(customer_ids))

        def one(customer_id: str) -> list[Invoice]:
            return self.list_invoices(
                customer_id,
                status=status,
                starting_on=starting_on,
                ending_before=ending_before,
                credit_type_id=credit_type_id,
                sort=sort,
            )

        results = map_bounded(one, unique, max_workers=self.max_workers)
        return dict(zip(unique, results, strict=True))

