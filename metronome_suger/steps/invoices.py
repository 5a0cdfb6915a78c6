"""The amount modes' source: per window, the invoices of every linked customer (one paginated call per
customer, bounded concurrency) kept as snapshots, and each history key's high water moved
(``core/amounts.py`` decides, ``storage/amounts.py`` reads and writes set-based)."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import duckdb

from metronome_suger.clients.metronome import MetronomeClient
from metronome_suger.clients.metronome_models import Invoice
from metronome_suger.core.amounts import InvoiceView, Policy, Selection, select
from metronome_suger.core.windows import Window
from metronome_suger.storage.amounts import (
    linked_customers,
    record_observations,
    replace_snapshots,
    seen_before,
    window_increase,
)
from metronome_suger.storage.db import Connect, table_markdown

# Invoices are listed by billing-period start; monthly and quarterly periods begin within this much
# of any window they are open in. Longer billing periods are not read.
PERIOD_LOOKBACK = timedelta(days=95)


def invoice_view(invoice: Invoice) -> InvoiceView:
    return InvoiceView(
        invoice_id=invoice.id, customer_id=invoice.customer_id, invoice_type=invoice.type, status=invoice.status,
        credit_type_id=invoice.credit_type.id, credit_type_name=invoice.credit_type.name,
        period_start=invoice.start_timestamp, period_end=invoice.end_timestamp, total_cents=invoice.total,
        usd=invoice.is_usd,
    )


def read_invoices(client: MetronomeClient, customers: list[str], since: datetime) -> list[InvoiceView]:
    fetched = client.list_invoices_for_customers(customers, starting_on=since - PERIOD_LOOKBACK, sort="date_asc")
    return [invoice_view(inv) for invoices in fetched.values() for inv in invoices]


def _apply_window(
    conn: duckdb.DuckDBPyConnection, window: Window, views: list[InvoiceView], policy: Policy, fetched_at: datetime,
) -> tuple[Selection, Decimal]:
    """Snapshot + high water of one window in one transaction; returns the selection and the cents
    newly attributed to the window (0 when a re-run observes nothing above the high water)."""
    conn.begin()
    try:
        seen = seen_before(conn, window, (v.invoice_id for v in views))
        selection = select(views, window, policy, seen)
        replace_snapshots(conn, window, selection.kept(), fetched_at)
        added = record_observations(conn, window, selection.totals)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return selection, added


@dataclass
class InvoicesResult:
    customers: int
    invoices: int
    tracked: int
    window_cents: Decimal
    new_cents: Decimal
    paying: int
    non_usd: list[tuple[str, str]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    preview: str = ""


def observe_invoices(
    client: MetronomeClient, connect: Connect, windows: list[Window], policy: Policy, fetched_at: datetime
) -> InvoicesResult:
    with connect() as conn:
        customers = linked_customers(conn)
    views = read_invoices(client, customers, windows[0].start)
    tracked: set[str] = set()
    non_usd: set[tuple[str, str]] = set()
    skipped: dict[str, int] = {}
    new_cents = Decimal(0)
    start, end = windows[0].start, windows[-1].end
    with connect() as conn:
        for window in windows:
            selection, added = _apply_window(conn, window, views, policy, fetched_at)
            new_cents += added
            tracked |= {inv.invoice_id for inv in selection.tracked}
            non_usd |= set(selection.non_usd())
            for _, why in selection.skipped:
                skipped[why] = skipped.get(why, 0) + 1
        window_cents, paying = window_increase(conn, start, end)
        preview = table_markdown(
            conn,
            """SELECT window_start, customer_id, history_key, invoice_id,
                      observed_cents * 0.01 AS observed_usd, high_water_cents * 0.01 AS high_water_usd,
                      increase_cents * 0.01 AS increase_usd
            FROM invoice_high_water WHERE window_start >= ? AND window_start < ?
            ORDER BY increase_cents DESC, customer_id, history_key""",
            [start, end],
        )
    return InvoicesResult(len(customers), len(views), len(tracked), window_cents, new_cents, paying,
                          sorted(non_usd), dict(sorted(skipped.items())), preview)
