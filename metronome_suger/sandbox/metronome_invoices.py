"""Invoices of the Metronome emulator: records, status over time, and pricing as of an instant.

Totals are derived, not stored: re-rendering at a later clock shows the invoice "as of then"
(a DRAFT grows hour by hour, a credit lowers it, a VOID freezes it), which is what an hourly poller
of the real API observes. Money is `Decimal` in the invoice's credit type (USD: cents).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from metronome_suger.sandbox.wire import HOUR, fmt, json_number

_PRODUCT_NS = uuid.UUID("6f0c8f57-0d1e-4f51-9a8f-5c1c2d6c0b11")


@dataclass(frozen=True)
class PricedMetric:
    """What the invoice needs to know about a billable metric."""

    id: str
    name: str
    unit_price_cents: Decimal


HourValue = Callable[[str, str, datetime], "Decimal | None"]


@dataclass
class Credit:
    id: str
    cents: Decimal
    effective_at: datetime


@dataclass
class InvoiceRecord:
    """One invoice. `timeline` (explicit totals) replaces usage pricing when set.

    Lineage as Metronome renders it (SDK `metronome/types/v1/customers/invoice.py`): a re-issue
    (`void_invoice(reissue=True)`) is *regenerated from* the voided invoice; a correction invoice
    (`corrects`) carries `correction_record` and `created_at`, which no other invoice has."""

    id: str
    customer_id: str
    period_start: datetime
    period_end: datetime
    type: str
    credit_type: dict[str, str]
    grace: timedelta
    created_at: datetime
    timeline: list[tuple[datetime, Decimal]] | None = None
    credits: list[Credit] = field(default_factory=list)
    void_at: datetime | None = None
    regenerated_from: str | None = None
    corrects: str | None = None
    reissued_as: str | None = None

    @property
    def finalizes_at(self) -> datetime:
        return self.period_end + self.grace

    def visible(self, now: datetime) -> bool:
        return self.created_at <= now

    def status(self, now: datetime) -> str:
        if self.void_at is not None and now >= self.void_at:
            return "VOID"
        return "DRAFT" if now < self.finalizes_at else "FINALIZED"

    def as_of(self, now: datetime) -> datetime:
        """The instant whose data the invoice shows: frozen at void or finalization time."""
        status = self.status(now)
        if status == "VOID":
            assert self.void_at is not None
            return self.void_at
        if status == "FINALIZED":
            return self.finalizes_at
        return now

    def issued_at(self) -> datetime:
        return self.created_at if self.type == "SCHEDULED" else self.period_end


def round_cents(value: Decimal) -> Decimal:
    """Line totals are whole units of the credit type (cents for USD), half up."""
    return value.quantize(Decimal(1), rounding=ROUND_HALF_UP)


def _timeline_total(
    timeline: Sequence[tuple[datetime, Decimal]], t: datetime, *, inclusive: bool
) -> Decimal:
    total = Decimal(0)
    for effective_at, amount in sorted(timeline, key=lambda entry: entry[0]):
        if effective_at < t or (inclusive and effective_at == t):
            total = amount
    return total


def _usage_lines(
    inv: InvoiceRecord,
    metrics: Sequence[PricedMetric],
    hour_value: HourValue,
    start: datetime,
    end: datetime,
    as_of: datetime,
) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for metric in metrics:
        quantity = Decimal(0)
        hour = start
        while hour < end and hour + HOUR <= as_of:
            value = hour_value(inv.customer_id, metric.id, hour)
            if value is not None:
                quantity += value
            hour += HOUR
        lines.append(
            {
                "name": metric.name,
                "type": "usage",
                "credit_type": dict(inv.credit_type),
                "quantity": quantity,
                "unit_price": metric.unit_price_cents,
                "total": round_cents(quantity * metric.unit_price_cents),
                "product_id": str(uuid.uuid5(_PRODUCT_NS, metric.id)),
                "product_type": "UsageProductListItem",
                "starting_at": fmt(start),
                "ending_before": fmt(end),
            }
        )
    return lines


def _timeline_line(
    inv: InvoiceRecord, start: datetime, end: datetime, as_of: datetime
) -> dict[str, Any]:
    assert inv.timeline is not None
    lower = (
        Decimal(0)
        if start <= inv.period_start
        else _timeline_total(inv.timeline, start, inclusive=False)
    )
    if end <= as_of:
        upper = _timeline_total(inv.timeline, end, inclusive=False)
    else:
        upper = _timeline_total(inv.timeline, as_of, inclusive=True)
    scheduled = inv.type == "SCHEDULED"
    return {
        "name": "Scheduled charge" if scheduled else "Usage charges",
        "type": "scheduled" if scheduled else "usage",
        "credit_type": dict(inv.credit_type),
        "total": upper - lower,
        "starting_at": fmt(start),
        "ending_before": fmt(end),
    }


def _credit_lines(
    inv: InvoiceRecord, window: tuple[datetime, datetime] | None, as_of: datetime
) -> list[dict[str, Any]]:
    """Credits in effect by `as_of`; in a breakdown, each sits in the window of its effective time
    (credits dated before the billing period sit in its first window)."""
    lines = []
    for credit in inv.credits:
        if credit.effective_at > as_of:
            continue
        if window is not None:
            start, end = window
            if credit.effective_at >= end:
                continue
            if credit.effective_at < start and start > inv.period_start:
                continue
        lines.append(
            {
                "name": "Credit",
                "type": "applied_commit_or_credit",
                "credit_type": dict(inv.credit_type),
                "total": -credit.cents,
                "applied_commit_or_credit": {"id": credit.id, "type": "CREDIT"},
            }
        )
    return lines


def price_invoice(
    inv: InvoiceRecord,
    now: datetime,
    metrics: Sequence[PricedMetric],
    hour_value: HourValue,
    window: tuple[datetime, datetime] | None = None,
) -> tuple[list[dict[str, Any]], Decimal, Decimal]:
    """Line items (Decimal amounts), subtotal before credits, and total, as of `now`."""
    as_of = inv.as_of(now)
    start, end = window if window is not None else (inv.period_start, inv.period_end)
    if inv.timeline is None:
        lines = _usage_lines(inv, metrics, hour_value, start, end, as_of)
    else:
        lines = [_timeline_line(inv, start, end, as_of)]
    subtotal = sum((line["total"] for line in lines), Decimal(0))
    lines += _credit_lines(inv, window, as_of)
    total = sum((line["total"] for line in lines), Decimal(0))
    return lines, subtotal, total


def render_invoice(
    inv: InvoiceRecord,
    now: datetime,
    metrics: Sequence[PricedMetric],
    hour_value: HourValue,
    *,
    window: tuple[datetime, datetime] | None = None,
    skip_zero_qty_line_items: bool = False,
) -> dict[str, Any]:
    """The API Invoice dict as of `now`; with `window`, a BreakdownInvoice for that window only."""
    lines, subtotal, total = price_invoice(inv, now, metrics, hour_value, window)
    if skip_zero_qty_line_items:
        lines = [line for line in lines if line.get("quantity", 1) != 0]
    for line in lines:
        for key in ("quantity", "unit_price", "total"):
            if key in line:
                line[key] = json_number(line[key])
    out: dict[str, Any] = {
        "id": inv.id,
        "customer_id": inv.customer_id,
        "type": inv.type,
        "status": inv.status(now),
        "credit_type": dict(inv.credit_type),
        "start_timestamp": fmt(inv.period_start),
        "end_timestamp": fmt(inv.period_end),
        "issued_at": fmt(inv.issued_at()),
        "line_items": lines,
        "subtotal": json_number(subtotal),
        "total": json_number(total),
        "custom_fields": {},
        "external_invoice": None,
    }
    if inv.regenerated_from is not None:
        out["regenerated_from_invoice_id"] = inv.regenerated_from
    if inv.corrects is not None:  # "present for correction invoices only"
        out["created_at"] = fmt(inv.created_at)
        out["correction_record"] = {
            "corrected_invoice_id": inv.corrects,
            "memo": "Correction",
            "reason": "Billing correction",
        }
    if window is not None:
        out["breakdown_start_timestamp"] = fmt(window[0])
        out["breakdown_end_timestamp"] = fmt(window[1])
    return out
