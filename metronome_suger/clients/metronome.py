"""Typed client for the parts of the Metronome API this project reads.

Why a hand-written client rather than ``metronome-sdk``: we need ``Decimal`` money end to end (the
SDK parses numbers as float), one retry/redaction policy shared with Suger, and pagination that
keeps going through empty pages and refuses to loop on a repeated cursor.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from pydantic import SecretStr, TypeAdapter

from metronome_suger.clients.errors import NotFoundError
from metronome_suger.clients.http import (
    DEFAULT_TIMEOUT,
    DEFAULT_USER_AGENT,
    JsonApiClient,
    auth_header,
    check_paging,
    iter_bounded,
    map_bounded,
    path_segment,
)
from metronome_suger.clients.metronome_models import (
    BillableMetric,
    Customer,
    Invoice,
    UsageRow,
)
from metronome_suger.clients.paging import Page, PageShapeError, paginate
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
_INVOICE = TypeAdapter(Invoice)

_WINDOW_SIZES = {"HOUR", "DAY", "NONE"}
# SDK metronome/types/v1/customers/invoice_list_params.py: `type`.
_INVOICE_TYPES = {"USAGE", "USAGE_CONSOLIDATED", "SCHEDULED"}


def day_bounds(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The whole UTC days covering ``[start, end)`` (both UTC, ``start < end``): UTC midnights, at
    least one day apart."""
    floor = start.replace(hour=0, minute=0, second=0, microsecond=0)
    ceil = end.replace(hour=0, minute=0, second=0, microsecond=0)
    return floor, ceil if ceil == end else ceil + timedelta(days=1)


# Customers per usage shard: enough shards to keep every worker busy to the end (4 per worker), at least
# ~5 pages each (a shard's last page is partly empty), and at most 100 ids, since the body with its
# customer_ids travels with every page of the shard.
SHARDS_PER_WORKER = 4
MIN_SHARD_ROWS = 500
MAX_SHARD_CUSTOMERS = 100
HOURS_PER_DAY = 24


def usage_shards(customer_ids: Sequence[str], metrics: int, workers: int) -> list[list[str]]:
    """``customer_ids`` (each once, order kept) cut into the shards one ``POST /v1/usage`` cursor each reads."""
    unique = list(dict.fromkeys(customer_ids))
    by_balance = math.ceil(len(unique) / (SHARDS_PER_WORKER * workers))
    by_pages = math.ceil(MIN_SHARD_ROWS / (max(metrics, 1) * HOURS_PER_DAY))
    size = max(1, min(MAX_SHARD_CUSTOMERS, max(by_balance, by_pages)))
    return [unique[i:i + size] for i in range(0, len(unique), size)]


class _Stopped(Exception):
    """Another shard failed: this one stops reading (its result is never used)."""


class _Overlap:
    """Does a raw usage row (before validation) overlap ``[start, end)``? Rows whose timestamps do not
    parse are kept, so validation names them; parsed timestamps are cached (a day has 24 of each)."""

    def __init__(self, start: datetime, end: datetime) -> None:
        self.start, self.end = start, end
        self._parsed: dict[str, datetime | None] = {}

    def _time(self, value: Any) -> datetime | None:
        if not isinstance(value, str):
            return None
        if value not in self._parsed:
            try:
                parsed: datetime | None = datetime.fromisoformat(value)
            except ValueError:
                parsed = None
            self._parsed[value] = parsed if parsed is not None and parsed.tzinfo is not None else None
        return self._parsed[value]

    def __call__(self, item: Any) -> bool:
        if not isinstance(item, Mapping):
            return True
        row_start, row_end = self._time(item.get("start_timestamp")), self._time(item.get("end_timestamp"))
        if row_start is None or row_end is None:
            return True
        return row_end > self.start and row_start < self.end


# A usage row of an earlier hour: (start_timestamp as sent, customer_id, billable_metric_id, value as parsed).
EarlierRow = tuple[Any, Any, Any, Any]


def _earlier_row(item: Mapping[str, Any]) -> EarlierRow:
    return (item.get("start_timestamp"), item.get("customer_id"), item.get("billable_metric_id"), item.get("value"))


@dataclass(frozen=True)
class UsageBatch:
    """One shard's answer: the validated rows of the wanted hours, and the earlier hours' rows (if asked)."""

    rows: list[UsageRow]
    earlier: list[EarlierRow]


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
    ) -> Iterator[UsageRow]:
        """Aggregated usage rows from ``POST /v1/usage`` (filters in the body, cursor in the query).

        Metronome takes only bounds "aligned to UTC midnight" and "at least one day" apart (SDK
        ``metronome/types/v1/usage_list_params.py``), so the request always covers the whole UTC days
        around ``[starting_on, ending_before)`` and only the rows whose window lies inside it are
        yielded: an hourly window is read from its day. There is no way to send other bounds.
        ``window_size`` NONE aggregates the whole requested range, so its bounds must already be UTC
        midnights. ``None`` filters mean "all"; an *empty* list means "none" and yields nothing
        without a call (sending ``[]`` could be read as "no filter").
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
        query_start, query_end = day_bounds(start, end)
        widened = (query_start, query_end) != (start, end)
        if widened and size == "NONE":
            raise ValueError(
                "window_size NONE aggregates the whole range, so starting_on and ending_before "
                "must be UTC midnights (Metronome accepts no other bounds)"
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

    def iter_usage_overlapping(
        self,
        *,
        starting_on: datetime,
        ending_before: datetime,
        customer_ids: Sequence[str] | None,
        billable_metric_ids: Sequence[str],
        earlier_from: datetime | None = None,
    ) -> Iterator[UsageBatch]:
        """The HOUR rows overlapping ``[starting_on, ending_before)``, in batches as they arrive.

        Metronome answers whole UTC days, so an hourly window costs the day's pages: the customers are
        split into shards (:func:`usage_shards`), one cursor per shard, at most ``max_workers`` cursors
        at once, and each page's rows wholly outside the hours are dropped before model validation (an
        hour's window validates 1/24 of what it reads). A row that only partly overlaps is kept, so the
        caller can refuse it by name. A shard's batch arrives when its cursor ends; the first failure
        is raised once the running shards stopped. ``customer_ids`` None: one cursor over all customers.
        ``earlier_from``: the rows of ``[earlier_from, starting_on)`` that the same pages hold (the same UTC
        day) come too, unvalidated and light (:class:`EarlierRow`): what a caller compares, never stores.
        """
        start = require_aware(starting_on, "starting_on")
        end = require_aware(ending_before, "ending_before")
        if end <= start:
            raise ValueError("ending_before must be after starting_on")
        metrics = list(dict.fromkeys(billable_metric_ids))
        if not metrics or (customer_ids is not None and not customer_ids):
            return
        query_start, query_end = day_bounds(start, end)
        base = {"starting_on": format_rfc3339(query_start), "ending_before": format_rfc3339(query_end),
                "window_size": "HOUR", "billable_metrics": [{"id": m} for m in metrics]}
        keep, stop = _Overlap(start, end), threading.Event()
        earlier = None if earlier_from is None or earlier_from >= start else _Overlap(earlier_from, start)

        def read_shard(shard: list[str] | None) -> UsageBatch:
            body = base if shard is None else {**base, "customer_ids": shard}
            kept = UsageBatch([], [])

            def fetch(position: dict[str, Any]) -> Any:
                if stop.is_set():
                    raise _Stopped
                return self.request("POST", "/v1/usage", params=position, json=body)

            def fail(what: str) -> Exception:
                return self.malformed("POST", "/v1/usage", what)

            for items in paginate(self._pages(send_limit=False), fetch, fail):
                wanted = [item for item in items if keep(item)]
                if wanted:
                    page: list[UsageRow] = self.parse_model(_USAGE, wanted, "POST", "/v1/usage", loc_prefix="data")
                    kept.rows.extend(page)
                if earlier is not None:
                    kept.earlier.extend(_earlier_row(item) for item in items if not keep(item) and earlier(item)
                                        and isinstance(item, Mapping))
            return kept

        shards = [None] if customer_ids is None else usage_shards(customer_ids, len(metrics), self.max_workers)
        answers = iter_bounded(read_shard, shards, max_workers=self.max_workers)
        try:
            for _, answer in answers:
                if isinstance(answer, BaseException):
                    raise answer
                yield answer
        finally:
            stop.set()  # the running shards stop after their current page
            answers.close()

    def list_usage(
        self,
        *,
        starting_on: datetime,
        ending_before: datetime,
        window_size: str = "HOUR",
        customer_ids: Sequence[str] | None = None,
        billable_metric_ids: Sequence[str] | None = None,
    ) -> list[UsageRow]:
        """:meth:`iter_usage`, collected."""
        return list(
            self.iter_usage(
                starting_on=starting_on,
                ending_before=ending_before,
                window_size=window_size,
                customer_ids=customer_ids,
                billable_metric_ids=billable_metric_ids,
            )
        )

    # -- invoices ----------------------------------------------------------------------------------

    def list_invoices(
        self,
        customer_id: str,
        *,
        status: str | None = None,
        invoice_type: str | None = None,
        credit_type_id: str | None = None,
        skip_zero_qty_line_items: bool = False,
        starting_on: datetime | None = None,
        ending_before: datetime | None = None,
        sort: str = "date_asc",
    ) -> list[Invoice]:
        """A customer's invoices, filtered by Metronome (SDK ``metronome/types/v1/customers/
        invoice_list_params.py``): ``status`` is one value (``DRAFT``, ``FINALIZED``, ``VOID``),
        ``invoice_type`` is sent as ``type`` (``USAGE``, ``USAGE_CONSOLIDATED``, ``SCHEDULED``), the
        dates apply to the billing period. ``sort`` is always sent because Metronome documents two
        different defaults. There is no cross-customer invoice list: one call (and its pages) per
        customer."""
        if invoice_type is not None and invoice_type not in _INVOICE_TYPES:
            raise ValueError(f"invoice_type must be one of {sorted(_INVOICE_TYPES)}, got {invoice_type!r}")
        params = {
            "status": status,
            "type": invoice_type,
            "credit_type_id": credit_type_id,
            "skip_zero_qty_line_items": True if skip_zero_qty_line_items else None,
            "starting_on": require_aware(starting_on, "starting_on") if starting_on else None,
            "ending_before": (
                require_aware(ending_before, "ending_before") if ending_before else None
            ),
            "sort": sort,
        }
        path = f"/v1/customers/{path_segment(customer_id)}/invoices"
        return list(self.iter_pages("GET", path, self._pages(), _INVOICES, params=params))

    def list_invoices_for_customers(
        self,
        customer_ids: Sequence[str],
        *,
        status: str | None = None,
        invoice_type: str | None = None,
        credit_type_id: str | None = None,
        skip_zero_qty_line_items: bool = False,
        starting_on: datetime | None = None,
        ending_before: datetime | None = None,
        sort: str = "date_asc",
    ) -> dict[str, list[Invoice]]:
        """:meth:`list_invoices` for many customers on at most ``max_workers`` threads (input order
        kept)."""
        unique = list(dict.fromkeys(customer_ids))

        def one(customer_id: str) -> list[Invoice]:
            return self.list_invoices(
                customer_id,
                status=status,
                invoice_type=invoice_type,
                credit_type_id=credit_type_id,
                skip_zero_qty_line_items=skip_zero_qty_line_items,
                starting_on=starting_on,
                ending_before=ending_before,
                sort=sort,
            )

        results = map_bounded(one, unique, max_workers=self.max_workers)
        return dict(zip(unique, results, strict=True))

    def get_invoice(
        self, customer_id: str, invoice_id: str, *, skip_zero_qty_line_items: bool = False
    ) -> Invoice:
        """One invoice as it is now (``GET /v1/customers/{customer_id}/invoices/{invoice_id}``,
        ``{"data": {...}}``); :class:`NotFoundError` if Metronome does not know it."""
        path = f"/v1/customers/{path_segment(customer_id)}/invoices/{path_segment(invoice_id)}"
        params = {"skip_zero_qty_line_items": True if skip_zero_qty_line_items else None}
        payload = self.request("GET", path, params=params)
        if not isinstance(payload, Mapping) or not isinstance(payload.get("data"), Mapping):
            raise self.malformed("GET", path, "expected a JSON object with a 'data' object")
        return self.parse_model(_INVOICE, payload["data"], "GET", path, loc_prefix="data")

    def get_invoices(
        self, refs: Sequence[tuple[str, str]], *, skip_zero_qty_line_items: bool = False
    ) -> dict[tuple[str, str], Invoice | None]:
        """:meth:`get_invoice` for many ``(customer_id, invoice_id)`` pairs on at most
        ``max_workers`` threads (input order kept); ``None`` for an invoice Metronome answers 404
        for, so one missing invoice does not hide the others."""
        unique = list(dict.fromkeys(refs))

        def one(ref: tuple[str, str]) -> Invoice | None:
            try:
                return self.get_invoice(*ref, skip_zero_qty_line_items=skip_zero_qty_line_items)
            except NotFoundError:
                return None

        results = map_bounded(one, unique, max_workers=self.max_workers)
        return dict(zip(unique, results, strict=True))
