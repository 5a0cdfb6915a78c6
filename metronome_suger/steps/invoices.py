"""The amount modes' source: per window, the invoices of every linked customer kept as snapshots, and
each history key's high water moved (``core/amounts.py`` decides, ``storage/amounts.py`` reads and
writes set-based).

Read as the API allows (SDK ``metronome/types/v1/customers/invoice_list_params.py``): there is no
cross-customer invoice list, so one paginated call per linked customer (bounded concurrency), filtered
by Metronome to what can still change a report: ``type=USAGE``, ``credit_type_id`` = USD cents,
``status=DRAFT``, ``skip_zero_qty_line_items``. ``status`` takes a single value, and DRAFT is the only
status whose total can still grow, so FINALIZED and VOID history is not downloaded every hour. An
invoice tracked while DRAFT and no longer listed (it was finalized or voided) is read once more,
``GET /v1/customers/{customer_id}/invoices/{invoice_id}``, to take its final total. The client-side
rules in ``core/amounts.skip_reason`` still apply: a server that ignored a filter cannot make us bill
wrong.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import duckdb

from metronome_suger.clients.metronome import MetronomeClient
from metronome_suger.clients.metronome_models import USD_CREDIT_TYPE_ID, Invoice
from metronome_suger.core.amounts import TRACKED_TYPE, InvoiceView, Policy, Selection, select
from metronome_suger.core.windows import Window
from metronome_suger.crashpoints import crash_point
from metronome_suger.storage.amounts import (
    awaiting_final,
    linked_customers,
    record_observations,
    recorded_keys,
    replace_snapshots,
    seen_before,
    window_increase,
)
from metronome_suger.storage.db import Connect, table_markdown, transaction

logger = logging.getLogger(__name__)

# Invoices are listed by billing-period start; monthly and quarterly periods begin within this much
# of any window they are open in. Longer billing periods are not read.
PERIOD_LOOKBACK = timedelta(days=95)
OPEN_STATUS = "DRAFT"


def invoice_view(invoice: Invoice) -> InvoiceView:
    return InvoiceView(
        invoice_id=invoice.id, customer_id=invoice.customer_id, invoice_type=invoice.type, status=invoice.status,
        credit_type_id=invoice.credit_type.id, credit_type_name=invoice.credit_type.name,
        period_start=invoice.start_timestamp, period_end=invoice.end_timestamp, total_cents=invoice.total,
        usd=invoice.is_usd, regenerated_from=invoice.regenerated_from_invoice_id,
    )


def read_invoices(client: MetronomeClient, customers: list[str], since: datetime) -> list[InvoiceView]:
    """The open (DRAFT) USD usage invoices of ``customers`` whose period began at most
    ``PERIOD_LOOKBACK`` before ``since``: one filtered listing per customer."""
    fetched = client.list_invoices_for_customers(
        customers, status=OPEN_STATUS, invoice_type=TRACKED_TYPE, credit_type_id=USD_CREDIT_TYPE_ID,
        skip_zero_qty_line_items=True, starting_on=since - PERIOD_LOOKBACK, sort="date_asc",
    )
    return [invoice_view(inv) for invoices in fetched.values() for inv in invoices]


def read_final(
    client: MetronomeClient, awaiting: Sequence[tuple[str, str]], listed: set[str]
) -> tuple[list[InvoiceView], list[str]]:
    """The current state of each awaited (customer, invoice) the listing did not return (one GET each,
    bounded concurrency), and a note per invoice Metronome no longer knows."""
    refs = [ref for ref in awaiting if ref[1] not in listed]
    found = client.get_invoices(refs, skip_zero_qty_line_items=True) if refs else {}
    views = [invoice_view(inv) for inv in found.values() if inv is not None]
    missing = [f"invoice {invoice} (customer {customer}) was tracked while DRAFT and Metronome no longer "
               "returns it: its final total cannot be read" for (customer, invoice), inv in found.items()
               if inv is None]
    return views, missing


def window_selection(
    conn: duckdb.DuckDBPyConnection, window: Window, views: list[InvoiceView], policy: Policy
) -> Selection:
    """What the invoices mean for ``window``: what earlier windows saw of them and the history keys
    they (and the invoices they were regenerated from) were filed under, then ``core.amounts.select``."""
    ids = [v.invoice_id for v in views]
    parents = [v.regenerated_from for v in views if v.regenerated_from]
    return select(views, window, policy, seen_before(conn, window, ids), recorded_keys(conn, ids + parents))


def _apply_window(
    conn: duckdb.DuckDBPyConnection, window: Window, views: list[InvoiceView], policy: Policy, fetched_at: datetime,
) -> tuple[Selection, Decimal]:
    """Snapshot + high water of one window in one transaction; returns the selection and the cents
    newly attributed to the window (0 when a re-run observes nothing above the high water)."""
    with transaction(conn):
        selection = window_selection(conn, window, views, policy)
        replace_snapshots(conn, window, selection.kept(), fetched_at, selection.keys)
        added = record_observations(conn, window, selection.totals)
        crash_point("invoices.inside_high_water")
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
    final_reads: int = 0  # invoices read once more after they left DRAFT
    notes: list[str] = field(default_factory=list)  # lineage and final-read problems, also logged


def observe_invoices(
    client: MetronomeClient, connect: Connect, windows: list[Window], policy: Policy, fetched_at: datetime
) -> InvoicesResult:
    since = windows[0].start
    with connect() as conn:
        customers = linked_customers(conn)
        linked = set(customers)
        awaiting = [ref for ref in awaiting_final(conn, windows[0], windows[-1], since - PERIOD_LOOKBACK)
                    if ref[0] in linked]
    views = read_invoices(client, customers, since)
    finals, notes = read_final(client, awaiting, {v.invoice_id for v in views})
    views += finals
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
            notes += [orphan.note() for orphan in selection.orphans]
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
    for note in notes:
        logger.warning(note)
    return InvoicesResult(len(customers), len(views), len(tracked), window_cents, new_cents, paying,
                          sorted(non_usd), dict(sorted(skipped.items())), preview, len(finals), notes)
