"""``metronome_invoice_snapshots``: the amount modes' source (``amount_hourly``, ``amount_daily``).

Per window: read the invoices of every linked customer (one paginated call per customer, bounded
concurrency), keep them as snapshots, and move each history key's high water (``core/amounts.py``
decides, ``storage/amounts.py`` reads and writes set-based). ``load_amount_source`` then gives
``suger_usage_records`` the dollars each window attributes to each customer under key ``metronome``.
"""

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import dagster as dg
import duckdb

from metronome_suger.clients.metronome_models import Invoice
from metronome_suger.config import AppConfig
from metronome_suger.core.amounts import InvoiceView, Selection, cents_to_dollars, dollars_text, select
from metronome_suger.core.windows import Window
from metronome_suger.orchestration.partitions import context_windows, partitions_for
from metronome_suger.orchestration.records import SourceLoader
from metronome_suger.orchestration.resources import ClockResource, MetronomeResource, SafeDuckDBResource
from metronome_suger.orchestration.snapshots import GROUP, POOL
from metronome_suger.storage.amounts import (
    linked_customers,
    load_source,
    record_observations,
    replace_snapshots,
    seen_before,
)
from metronome_suger.storage.db import table_markdown

# Invoices are listed by billing-period start; monthly and quarterly periods begin within this much
# of any window they are open in. Longer billing periods are not read.
PERIOD_LOOKBACK = timedelta(days=95)


def invoice_view(invoice: Invoice) -> InvoiceView:
    return InvoiceView(
        invoice_id=invoice.id,
        customer_id=invoice.customer_id,
        invoice_type=invoice.type,
        status=invoice.status,
        credit_type_id=invoice.credit_type.id,
        credit_type_name=invoice.credit_type.name,
        period_start=invoice.start_timestamp,
        period_end=invoice.end_timestamp,
        total_cents=invoice.total,
    )


def _apply_window(
    conn: duckdb.DuckDBPyConnection, window: Window, views: list[InvoiceView], config: AppConfig,
    fetched_at: datetime,
) -> tuple[Selection, Decimal]:
    """Snapshot + high water of one window in one transaction; returns the selection and the cents
    newly attributed to the window (0 when a re-run observes nothing above the high water)."""
    conn.begin()
    try:
        seen = seen_before(conn, window, (v.invoice_id for v in views))
        selection = select(views, window, config.invoice_change_policy, seen)
        replace_snapshots(conn, window, selection.kept(), fetched_at)
        added = record_observations(conn, window, selection.totals)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return selection, added


def build_invoice_asset(config: AppConfig) -> dg.AssetsDefinition:
    @dg.asset(
        group_name=GROUP,
        kinds={"duckdb"},
        pool=POOL,
        partitions_def=partitions_for(config),
        deps=["suger_entitlements"],
    )
    def metronome_invoice_snapshots(
        context: dg.AssetExecutionContext, metronome: MetronomeResource, duckdb: SafeDuckDBResource,
        clock: ClockResource,
    ) -> dg.MaterializeResult:
        """Invoice totals of linked customers per window, and the increase each window reports."""
        windows = context_windows(context, config.hourly)
        with duckdb.get_connection() as conn:
            customers = linked_customers(conn)
        with metronome.get_client() as client:
            fetched = client.list_invoices_for_customers(
                customers, starting_on=windows[0].start - PERIOD_LOOKBACK, sort="date_asc"
            )
        views = [invoice_view(inv) for invoices in fetched.values() for inv in invoices]
        fetched_at = clock.now()
        tracked: set[str] = set()
        non_usd: set[tuple[str, str]] = set()
        skipped: dict[str, int] = {}
        new_cents = Decimal(0)
        with duckdb.get_connection() as conn:
            for window in windows:
                selection, added = _apply_window(conn, window, views, config, fetched_at)
                new_cents += added
                tracked |= {inv.invoice_id for inv in selection.tracked}
                non_usd |= set(selection.non_usd())
                for _, why in selection.skipped:
                    skipped[why] = skipped.get(why, 0) + 1
            start, end = windows[0].start, windows[-1].end
            summary = conn.execute(
                """SELECT coalesce(sum(increase_cents), 0), count(DISTINCT customer_id) FILTER (WHERE increase_cents > 0)
                FROM invoice_high_water WHERE window_start >= ? AND window_start < ?""",
                [start, end],
            ).fetchone()
            assert summary is not None  # an aggregate always returns one row
            window_cents, paying = summary
            preview = table_markdown(
                conn,
                """SELECT window_start, customer_id, history_key, invoice_id,
                          observed_cents * 0.01 AS observed_usd, high_water_cents * 0.01 AS high_water_usd,
                          increase_cents * 0.01 AS increase_usd
                FROM invoice_high_water WHERE window_start >= ? AND window_start < ?
                ORDER BY increase_cents DESC, customer_id, history_key""",
                [start, end],
            )
        if non_usd:
            context.log.warning(
                "invoices in a credit type other than USD are not reported (amount modes report USD only): "
                + "; ".join(f"customer {c}: {t}" for c, t in sorted(non_usd))
            )
        context.log.info(
            f"{len(customers)} linked customers, {len(views)} invoices read, {len(tracked)} tracked; "
            f"{dollars_text(cents_to_dollars(new_cents))} newly observed above the high water"
        )
        metadata: dict[str, Any] = {
            "dagster/row_count": len(views),
            "customers": len(customers),
            "customers_with_increase": int(paying),
            "invoices_tracked": len(tracked),
            "increase_dollars": dg.MetadataValue.float(float(cents_to_dollars(window_cents))),
            "increase_dollars_exact": dollars_text(cents_to_dollars(window_cents)),
            "new_increase_dollars": dg.MetadataValue.float(float(cents_to_dollars(new_cents))),
            "skipped_non_usd": len(non_usd),
            "preview": dg.MetadataValue.md(preview),
        }
        if non_usd:
            metadata["skipped_non_usd_details"] = dg.MetadataValue.md(
                "\n".join(f"- customer {c}: {t}" for c, t in sorted(non_usd))
            )
        for reason, count in sorted(skipped.items()):
            metadata[f"skipped:{reason}"] = count
        return dg.MaterializeResult(metadata=metadata)

    return metronome_invoice_snapshots


def load_amount_source(config: AppConfig) -> SourceLoader:
    """The amount modes' ``SourceLoader``: the dollars each window attributes per customer, read from
    ``invoice_high_water`` (never changed here: the ``customer_linkage`` check calls it too). The same
    loader serves both amount modes; ``config`` is accepted for symmetry with the other sources."""
    del config
    return load_source
