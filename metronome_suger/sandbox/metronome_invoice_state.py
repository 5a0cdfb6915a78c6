"""Invoice operations of `MetronomeState` (a mixin, to keep each module small).

Relies on the host class for the lock, the clock, customers, id generation and hourly usage.
"""

from __future__ import annotations

import threading
import uuid
from abc import abstractmethod
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from metronome_suger.sandbox.clock import SandboxClock
from metronome_suger.sandbox.constants import USD_CREDIT_TYPE
from metronome_suger.sandbox.metronome_invoices import (
    Credit,
    InvoiceRecord,
    PricedMetric,
    price_invoice,
    render_invoice,
)
from metronome_suger.sandbox.wire import add_months, fmt, month_start, require_utc, to_decimal


def _served(dt: datetime) -> datetime:
    """`dt` as a client reads it back from `fmt` (UTC, milliseconds)."""
    dt = dt.astimezone(timezone.utc)
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


class InvoicesMixin:
    """Invoices: explicit, monthly (created as months begin), credits, explicit totals, void."""

    clock: SandboxClock
    _lock: threading.RLock
    _id_ns: uuid.UUID
    _customers: dict[str, dict[str, Any]]
    _invoices: dict[str, InvoiceRecord]
    _monthly: list[tuple[str, dict[str, str], timedelta, datetime]]
    # Invoice ids per customer, in creation order (a listing reads one customer's, not all).
    _by_customer: dict[str, list[str]]
    # (len(_monthly), month) of the last materialization: nothing new appears until either grows.
    _materialized: tuple[int, datetime] | None

    @abstractmethod
    def new_id(self) -> str: ...

    @abstractmethod
    def _priced_metrics(self) -> list[PricedMetric]: ...

    @abstractmethod
    def _hour_value(self, customer_id: str, metric_id: str, hour: datetime) -> Decimal | None: ...

    def add_invoice(
        self,
        customer_id: str,
        *,
        period_start: datetime,
        period_end: datetime,
        id: str | None = None,
        type: str = "USAGE",
        credit_type: dict[str, str] = USD_CREDIT_TYPE,
        grace: timedelta = timedelta(hours=24),
        created_at: datetime | None = None,
        regenerated_from: str | None = None,
        corrects: str | None = None,
        totals: Iterable[tuple[datetime, Decimal | int]] | None = None,
    ) -> dict[str, Any]:
        """Add an invoice priced from usage (until `set_invoice_total` gives it a timeline).

        `totals` are `set_invoice_total` calls made before the invoice is first rendered (pricing
        a new invoice from a month of usage is what makes adding many of them slow).

        `regenerated_from` names the invoice this one re-issues (rendered as
        `regenerated_from_invoice_id`; `void_invoice(reissue=True)` sets it for a re-issue of the
        same period, this allows another period); `corrects` makes it a correction invoice."""
        start, end = (
            require_utc(period_start, "period_start"),
            require_utc(period_end, "period_end"),
        )
        if end <= start:
            raise ValueError("period_end must be after period_start")
        with self._lock:
            if customer_id not in self._customers:
                raise KeyError(f"unknown customer {customer_id}")
            for other in (regenerated_from, corrects):
                if other is not None:
                    self._invoice(other)  # KeyError naming it when unknown
            invoice_id = id or self.new_id()
            if invoice_id in self._invoices:
                raise ValueError(f"invoice {invoice_id} already exists")
            created = require_utc(created_at, "created_at") if created_at else start
            record = InvoiceRecord(
                invoice_id, customer_id, start, end, type, dict(credit_type), grace, created,
                regenerated_from=regenerated_from, corrects=corrects,
            )
            self._store(record)
            for effective_at, total_cents in totals or ():
                self.set_invoice_total(invoice_id, total_cents, effective_at=effective_at)
            return self._render(record)

    def add_monthly_invoices(
        self,
        customer_id: str,
        *,
        first_period_start: datetime,
        credit_type: dict[str, str] = USD_CREDIT_TYPE,
        grace: timedelta = timedelta(hours=24),
    ) -> list[str]:
        """One USAGE invoice per calendar month from `first_period_start` on, each created when
        its month begins (also later, as the clock advances). Returns the ids existing now."""
        first = month_start(require_utc(first_period_start, "first_period_start"))
        with self._lock:
            if customer_id not in self._customers:
                raise KeyError(f"unknown customer {customer_id}")
            self._monthly.append((customer_id, dict(credit_type), grace, first))
            self._materialize()
            ids, month, now = [], first, self.clock.now()
            while month <= now:
                ids.append(self._monthly_id(customer_id, credit_type["id"], month))
                month = add_months(month, 1)
            return ids

    def _monthly_id(self, customer_id: str, credit_type_id: str, month: datetime) -> str:
        """Derived, not drawn from the generator: creation order cannot change it."""
        return str(uuid.uuid5(self._id_ns, f"{customer_id}|{credit_type_id}|{fmt(month)}"))

    def _store(self, record: InvoiceRecord) -> None:
        self._invoices[record.id] = record
        self._by_customer.setdefault(record.customer_id, []).append(record.id)

    def _materialize(self) -> None:
        """Create the monthly invoices whose month has begun (ids derived: order-free).

        What exists depends only on the registrations and the latest month start <= now, so this
        is a no-op (not a pass over every customer) until one of them grows."""
        now = self.clock.now()
        mark = (len(self._monthly), month_start(now))
        done = self._materialized
        if done is not None and mark[0] == done[0] and mark[1] <= done[1]:
            return
        for customer_id, credit_type, grace, first in self._monthly:
            month = first
            while month <= now:
                invoice_id = self._monthly_id(customer_id, credit_type["id"], month)
                if invoice_id not in self._invoices:
                    self._store(InvoiceRecord(
                        invoice_id,
                        customer_id,
                        month,
                        add_months(month, 1),
                        "USAGE",
                        dict(credit_type),
                        grace,
                        month,
                    ))
                month = add_months(month, 1)
        self._materialized = mark if done is None else (mark[0], max(mark[1], done[1]))

    def set_invoice_total(
        self, invoice_id: str, total_cents: Decimal | int, *, effective_at: datetime
    ) -> None:
        """Give the invoice an explicit total from `effective_at` on (replaces usage pricing)."""
        with self._lock:
            record = self._invoice(invoice_id)
            if record.timeline is None:
                record.timeline = []
            record.timeline.append(
                (require_utc(effective_at, "effective_at"), to_decimal(total_cents))
            )

    def add_credit(
        self, customer_id: str, invoice_id: str, cents: Decimal | int, *, effective_at: datetime
    ) -> str:
        """A credit that lowers the invoice total from `effective_at` on; returns the credit id."""
        with self._lock:
            record = self._invoice(invoice_id)
            if record.customer_id != customer_id:
                raise ValueError(f"invoice {invoice_id} does not belong to customer {customer_id}")
            credit_id = self.new_id()
            record.credits.append(
                Credit(credit_id, to_decimal(cents), require_utc(effective_at, "effective_at"))
            )
            return credit_id

    def void_invoice(
        self, invoice_id: str, *, at: datetime, reissue: bool = True
    ) -> dict[str, Any] | None:
        """From `at` on the invoice is VOID (total frozen); a re-issue continues the same period and
        is rendered with `regenerated_from_invoice_id` (not `correction_record`: that is for
        correction invoices)."""
        void_at = require_utc(at, "at")
        with self._lock:
            record = self._invoice(invoice_id)
            if record.void_at is not None:
                raise ValueError(f"invoice {invoice_id} is already void")
            record.void_at = void_at
            if not reissue:
                return None
            new = InvoiceRecord(
                self.new_id(),
                record.customer_id,
                record.period_start,
                record.period_end,
                record.type,
                dict(record.credit_type),
                record.grace,
                max(void_at, record.created_at),
                timeline=list(record.timeline) if record.timeline is not None else None,
                credits=list(record.credits),
                regenerated_from=record.id,
            )
            record.reissued_as = new.id
            self._store(new)
            return self._render(new)

    def get_invoice(
        self, invoice_id: str, *, skip_zero_qty_line_items: bool = False
    ) -> dict[str, Any] | None:
        """The invoice as of now, or None if unknown or not yet created."""
        with self._lock:
            self._materialize()
            record = self._invoices.get(invoice_id)
            if record is None or not record.visible(self.clock.now()):
                return None
            return self._render(record, skip_zero_qty_line_items=skip_zero_qty_line_items)

    def invoices(
        self, customer_id: str, *, skip_zero_qty_line_items: bool = False
    ) -> list[dict[str, Any]]:
        """The customer's invoices visible now, in creation order."""
        with self._lock:
            self._materialize()
            now = self.clock.now()
            return [
                self._render(r, skip_zero_qty_line_items=skip_zero_qty_line_items)
                for r in self._customer_invoices(customer_id)
                if r.visible(now)
            ]

    def find_invoices(
        self,
        customer_id: str,
        *,
        status: str | None = None,
        credit_type_id: str | None = None,
        invoice_type: str | None = None,
        starting_on: datetime | None = None,
        ending_before: datetime | None = None,
        descending: bool = False,
    ) -> list[str]:
        """Ids of the customer's visible invoices that pass the listing's filters, sorted by
        `issued_at` as rendered (stable): decided on the records, so only a page is rendered.
        The period bounds compare as served, i.e. at millisecond precision."""
        with self._lock:
            self._materialize()
            now = self.clock.now()
            found = [
                r
                for r in self._customer_invoices(customer_id)
                if r.visible(now)
                and (status is None or r.status(now) == status)
                and (credit_type_id is None or r.credit_type["id"] == credit_type_id)
                and (invoice_type is None or r.type == invoice_type)
                and (starting_on is None or _served(r.period_start) >= starting_on)
                and (ending_before is None or _served(r.period_end) <= ending_before)
            ]
            found.sort(key=lambda r: fmt(r.issued_at()) or "", reverse=descending)
            return [r.id for r in found]

    def render_invoices(
        self, invoice_ids: list[str], *, skip_zero_qty_line_items: bool = False
    ) -> list[dict[str, Any]]:
        """These invoices as of now, in the order given."""
        with self._lock:
            return [
                self._render(self._invoice(i), skip_zero_qty_line_items=skip_zero_qty_line_items)
                for i in invoice_ids
            ]

    def _customer_invoices(self, customer_id: str) -> list[InvoiceRecord]:
        return [self._invoices[i] for i in self._by_customer.get(customer_id, ())]

    def invoice_total(self, invoice_id: str, *, as_of: datetime | None = None) -> Decimal:
        """Exact total (credit-type units) as it would be served at `as_of` (default: now)."""
        with self._lock:
            record = self._invoice(invoice_id)
            when = require_utc(as_of, "as_of") if as_of else self.clock.now()
            return price_invoice(record, when, self._priced_metrics(), self._hour_value)[2]

    def breakdown_keys(
        self,
        customer_id: str,
        windows: list[tuple[datetime, datetime]],
        *,
        status: str | None = None,
        credit_type_id: str | None = None,
    ) -> list[tuple[str, datetime, datetime]]:
        """(invoice id, window) for each non-VOID visible invoice and window inside its period.

        Cheap (no pricing), so a listing can page over keys and price only one page."""
        with self._lock:
            self._materialize()
            now = self.clock.now()
            out = []
            records = self._customer_invoices(customer_id)
            for start, end in windows:
                for record in records:
                    current = record.status(now)
                    if (
                        not record.visible(now)
                        or current == "VOID"
                        or (status is not None and current != status)
                        or (
                            credit_type_id is not None
                            and record.credit_type["id"] != credit_type_id
                        )
                    ):
                        continue
                    if start >= record.period_start and end <= record.period_end:
                        out.append((record.id, start, end))
            return out

    def breakdown(
        self,
        invoice_id: str,
        start: datetime,
        end: datetime,
        *,
        skip_zero_qty_line_items: bool = False,
    ) -> dict[str, Any]:
        """The BreakdownInvoice of one invoice for the window [start, end), as of now."""
        with self._lock:
            return self._render(
                self._invoice(invoice_id),
                window=(start, end),
                skip_zero_qty_line_items=skip_zero_qty_line_items,
            )

    def _invoice(self, invoice_id: str) -> InvoiceRecord:
        self._materialize()
        try:
            return self._invoices[invoice_id]
        except KeyError:
            raise KeyError(f"unknown invoice {invoice_id}") from None

    def _render(
        self,
        record: InvoiceRecord,
        *,
        window: tuple[datetime, datetime] | None = None,
        skip_zero_qty_line_items: bool = False,
    ) -> dict[str, Any]:
        return render_invoice(
            record,
            self.clock.now(),
            self._priced_metrics(),
            self._hour_value,
            window=window,
            skip_zero_qty_line_items=skip_zero_qty_line_items,
        )
