"""DuckDB side of the amount modes: invoice snapshots, the per-key high water, the window's source.

``invoice_snapshots`` keeps one row per invoice per window (a re-run replaces its window's rows).
``invoice_high_water`` keeps one row per (history key, window): the total observed, the high water after
it, and the cents that window attributes to the key. A window's attribution only ever grows, which is
what lets ``suger_usage_records`` send just the positive difference on a re-run.
"""

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal

import duckdb

from metronome_suger.core.amounts import InvoiceView, KeyTotal, Seen, WindowRow, observe_in_window
from metronome_suger.core.conversion import AMOUNT_SOURCE_KEY
from metronome_suger.core.windows import Window
from metronome_suger.storage.db import QTY, bulk_insert, fetch_one, json_list
from metronome_suger.storage.window import USABLE_LINK_SQL, Source


def linked_customers(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Metronome customers with a usable entitlement in the latest ``entitlements`` snapshot.

    Entitlement start and end times are not applied here: an increase outside them is still measured
    (and named by ``customer_linkage``) rather than piling up into a spike when the link becomes usable.
    """
    rows = conn.execute(
        f"""SELECT DISTINCT metronome_customer_id FROM entitlements
        WHERE snapshot_at = (SELECT max(snapshot_at) FROM entitlements) AND {USABLE_LINK_SQL}
        ORDER BY 1""",
    ).fetchall()
    return [r[0] for r in rows]


def seen_before(conn: duckdb.DuckDBPyConnection, window: Window, invoice_ids: Iterable[str]) -> dict[str, Seen]:
    """Per invoice: observed open (DRAFT, or any status Metronome may add) / FINALIZED in any window
    before this one."""
    rows = conn.execute(
        f"""SELECT invoice_id, bool_or(upper(status) NOT IN ('FINALIZED', 'VOID')),
                  bool_or(upper(status) = 'FINALIZED')
        FROM invoice_snapshots
        WHERE window_start < ? AND invoice_id IN (SELECT unnest({json_list('VARCHAR')}))
        GROUP BY invoice_id""",
        [window.start, json.dumps(sorted(set(invoice_ids)))],
    ).fetchall()
    return {invoice_id: Seen(bool(draft), bool(finalized)) for invoice_id, draft, finalized in rows}


def awaiting_final(
    conn: duckdb.DuckDBPyConnection, first: Window, last: Window, period_from: datetime
) -> list[tuple[str, str]]:
    """(customer, invoice) of each invoice tracked while open (a history key recorded, status neither
    FINALIZED nor VOID) in a window before ``last`` and seen FINALIZED or VOID in no window before
    ``first``, with a billing period starting at or after ``period_from``: the invoices whose final
    total a run of ``first``..``last`` must still read once, even when a listing of DRAFT invoices no
    longer returns them."""
    rows = conn.execute(
        """SELECT customer_id, invoice_id FROM invoice_snapshots
        WHERE period_start >= ?
        GROUP BY customer_id, invoice_id
        HAVING bool_or(window_start < ? AND history_key IS NOT NULL
                       AND upper(status) NOT IN ('FINALIZED', 'VOID'))
           AND NOT bool_or(window_start < ? AND upper(status) IN ('FINALIZED', 'VOID'))
        ORDER BY 1, 2""",
        [period_from, last.start, first.start],
    ).fetchall()
    return [(customer, invoice) for customer, invoice in rows]


def recorded_keys(conn: duckdb.DuckDBPyConnection, invoice_ids: Iterable[str]) -> dict[str, str]:
    """Invoice id -> the history key its latest tracked snapshot was filed under (any window): what
    lineage continues (``core.amounts.lineage_keys``)."""
    rows = conn.execute(
        f"""SELECT invoice_id, arg_max(history_key, window_start) FROM invoice_snapshots
        WHERE history_key IS NOT NULL AND invoice_id IN (SELECT unnest({json_list('VARCHAR')}))
        GROUP BY invoice_id""",
        [json.dumps(sorted(set(invoice_ids)))],
    ).fetchall()
    return {invoice_id: key for invoice_id, key in rows}


_SNAPSHOT_COLUMNS = {
    "window_start": "TIMESTAMPTZ", "window_end": "TIMESTAMPTZ", "customer_id": "VARCHAR",
    "invoice_id": "VARCHAR", "invoice_type": "VARCHAR", "status": "VARCHAR", "credit_type_id": "VARCHAR",
    "credit_type_name": "VARCHAR", "period_start": "TIMESTAMPTZ", "period_end": "TIMESTAMPTZ",
    "total_cents": QTY, "fetched_at": "TIMESTAMPTZ", "regenerated_from_invoice_id": "VARCHAR",
    "history_key": "VARCHAR",
}


def replace_snapshots(
    conn: duckdb.DuckDBPyConnection, window: Window, invoices: Sequence[InvoiceView], fetched_at: datetime,
    keys: Mapping[str, str],
) -> int:
    """The window's snapshot rows become exactly ``invoices`` (history of other windows untouched);
    ``keys`` (invoice id -> history key, tracked invoices only) records which history each total went to."""
    conn.execute("DELETE FROM invoice_snapshots WHERE window_start = ?", [window.start])
    unique = {inv.invoice_id: inv for inv in invoices}  # the primary key is per window and invoice
    return bulk_insert(
        conn,
        "invoice_snapshots",
        _SNAPSHOT_COLUMNS,
        [(window.start, window.end, i.customer_id, i.invoice_id, i.invoice_type, i.status, i.credit_type_id,
          i.credit_type_name, i.period_start, i.period_end, i.total_cents, fetched_at, i.regenerated_from,
          keys.get(i.invoice_id))
         for i in unique.values()],
    )


def _prior(conn: duckdb.DuckDBPyConnection, window: Window, keys: list[str]) -> dict[str, tuple[Decimal, Decimal]]:
    """key -> (high water over every window of the key, cents this window already attributes)."""
    rows = conn.execute(
        f"""SELECT history_key, max(high_water_cents),
                  coalesce(max(increase_cents) FILTER (WHERE window_start = ?), 0)
        FROM invoice_high_water WHERE history_key IN (SELECT unnest({json_list('VARCHAR')}))
        GROUP BY history_key""",
        [window.start, json.dumps(keys)],
    ).fetchall()
    return {key: (high, done) for key, high, done in rows}


_HIGH_WATER_COLUMNS = {
    "history_key": "VARCHAR", "customer_id": "VARCHAR", "window_start": "TIMESTAMPTZ",
    "invoice_id": "VARCHAR", "period_start": "TIMESTAMPTZ", "observed_cents": QTY,
    "high_water_cents": QTY, "increase_cents": QTY,
}


def record_observations(conn: duckdb.DuckDBPyConnection, window: Window, totals: Sequence[KeyTotal]) -> Decimal:
    """Apply the window's observations to the high water (pure rule per key, set-based reads/writes).

    Only the (key, window) rows of this window are written. Returns the cents newly attributed to the
    window: 0 when a re-run observes nothing above the high water.
    """
    prior = _prior(conn, window, [t.history_key for t in totals])
    written: list[tuple[KeyTotal, WindowRow]] = []
    added = Decimal(0)
    for total in totals:
        high, done = prior.get(total.history_key, (Decimal(0), Decimal(0)))
        row = observe_in_window(high, done, total.observed_cents)
        written.append((total, row))
        added += row.increase_cents - done
    conn.execute("CREATE OR REPLACE TEMP TABLE _high_water AS SELECT * FROM invoice_high_water LIMIT 0")
    bulk_insert(
        conn,
        "_high_water",
        _HIGH_WATER_COLUMNS,
        [(t.history_key, t.customer_id, window.start, ",".join(t.invoice_ids), t.period_start,
          row.observed_cents, row.high_water_cents, row.increase_cents) for t, row in written],
    )
    conn.execute("INSERT OR REPLACE INTO invoice_high_water SELECT * FROM _high_water")
    return added


def amount_source(conn: duckdb.DuckDBPyConnection, window: Window) -> Source:
    """The amount modes' source: per customer, the dollars the window attributes (Σ increase cents ÷ 100, exact).

    Only reads. A negative amount cannot arise from the high-water rule; if one is found it is a
    problem that forbids sending the window.
    """
    conn.execute(
        f"""CREATE OR REPLACE TEMP TABLE _source AS
        SELECT customer_id, CAST(? AS VARCHAR) AS source_key,
               CAST(sum(increase_cents) * CAST(0.01 AS DECIMAL(3,2)) AS {QTY}) AS value
        FROM invoice_high_water WHERE window_start = ?
        GROUP BY customer_id""",
        [AMOUNT_SOURCE_KEY, window.start],
    )
    negative = conn.execute(
        """SELECT customer_id, history_key, increase_cents FROM invoice_high_water
        WHERE window_start = ? AND increase_cents < 0 ORDER BY 1, 2""",
        [window.start],
    ).fetchall()
    return Source("_source", [
        f"negative invoice increase of {cents} cents for customer {customer} key '{AMOUNT_SOURCE_KEY}' "
        f"({history_key}) in window {window}: the high-water table is inconsistent"
        for customer, history_key, cents in negative
    ])


def window_increase(conn: duckdb.DuckDBPyConnection, start: datetime, end: datetime) -> tuple[Decimal, int]:
    """Cents the windows in [start, end) attribute, and how many customers they attribute some to."""
    cents, customers = fetch_one(
        conn,
        """SELECT coalesce(sum(increase_cents), 0), count(DISTINCT customer_id) FILTER (WHERE increase_cents > 0)
        FROM invoice_high_water WHERE window_start >= ? AND window_start < ?""",
        [start, end],
    )
    return Decimal(cents), int(customers)
