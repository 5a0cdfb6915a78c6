"""The ``usage`` table (quantity mode): Metronome's values per window × customer × metric, and the
window's source read from it."""

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

import duckdb

from metronome_suger.core.conversion import Metric
from metronome_suger.core.windows import Window
from metronome_suger.storage.db import QTY, bulk_insert
from metronome_suger.storage.window import MappingTables, Source

_USAGE_COLUMNS = {
    "window_start": "TIMESTAMPTZ", "window_end": "TIMESTAMPTZ", "customer_id": "VARCHAR", "metric_id": "VARCHAR",
    "metric_name": "VARCHAR", "value": QTY, "value_was_null": "BOOLEAN", "fetched_at": "TIMESTAMPTZ",
}


def latest_metrics(conn: duckdb.DuckDBPyConnection) -> list[Metric]:
    """The billable metrics of the latest snapshot."""
    return [Metric(*row) for row in conn.execute(
        """SELECT metric_id, name, archived FROM billable_metrics
        WHERE snapshot_at = (SELECT max(snapshot_at) FROM billable_metrics)"""
    ).fetchall()]


def reportable_metrics(conn: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """id → name of the whitelisted metrics of the latest snapshot."""
    return dict(conn.execute(
        """SELECT metric_id, name FROM billable_metrics WHERE whitelisted
        AND snapshot_at = (SELECT max(snapshot_at) FROM billable_metrics)"""
    ).fetchall())


def replace_usage(
    conn: duckdb.DuckDBPyConnection, start: datetime, end: datetime,
    rows: Iterable[tuple[datetime, datetime, str, str, str | None, Decimal | None]], fetched_at: datetime,
) -> int:
    """The windows in [start, end) hold exactly ``rows`` (start, end, customer, metric id, metric name,
    value); a null value is stored as 0 and flagged."""
    conn.execute("DELETE FROM usage WHERE window_start >= ? AND window_start < ?", [start, end])
    return bulk_insert(conn, "usage", _USAGE_COLUMNS,
                       ((s, e, c, m, n, 0 if v is None else v, v is None, fetched_at) for s, e, c, m, n, v in rows))


def usage_totals(conn: duckdb.DuckDBPyConnection, start: datetime, end: datetime) -> list[tuple[Any, ...]]:
    """(metric name, total, non-zero rows) of the windows in [start, end)."""
    return conn.execute(
        """SELECT metric_name, sum(value), count(*) FILTER (WHERE value <> 0)
        FROM usage WHERE window_start >= ? AND window_start < ? GROUP BY 1 ORDER BY 1""",
        [start, end],
    ).fetchall()


def usage_source(conn: duckdb.DuckDBPyConnection, window: Window) -> Source:
    """Quantity mode: the window's usage of reportable metrics, keyed by metric name."""
    conn.execute(
        """CREATE OR REPLACE TEMP TABLE _source AS
        SELECT u.customer_id, m.name AS source_key, u.value
        FROM usage u JOIN billable_metrics m ON m.metric_id = u.metric_id
        WHERE m.snapshot_at = (SELECT max(snapshot_at) FROM billable_metrics) AND m.whitelisted
          AND u.window_start = ?""",
        [window.start],
    )
    negatives = conn.execute(
        "SELECT customer_id, source_key, value FROM _source WHERE value < 0 ORDER BY 1, 2"
    ).fetchall()
    return Source("_source", [
        f"negative usage {value} for customer {customer} metric '{metric}' in window {window}"
        for customer, metric, value in negatives
    ] + _beyond_conversion(conn, window))


# The conversion multiplies two DECIMAL(38,10) values exactly (a DECIMAL(38,20) product): it holds |value ×
# multiplier| < 10^18, and an AMOUNT mapping's exact division holds |value| < 10^18.
LARGEST_CONVERTED = 10**18


def _beyond_conversion(conn: duckdb.DuckDBPyConnection, window: Window) -> list[str]:
    """The window's values whose conversion the ledger cannot compute exactly, each named (checked against
    the run's mapping rows, ``MappingTables``, when they are loaded)."""
    mapping = MappingTables.mapping_table
    loaded = conn.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary AND table_name = ?",
                          [mapping]).fetchall()[0][0]
    if not loaded:
        return []
    rows = conn.execute(
        f"""SELECT s.customer_id, s.source_key, s.value,
                   max(CASE WHEN m.mapping_mode = 'QUANTITY' THEN m.multiplier ELSE 1 END)
        FROM _source s JOIN {mapping} m ON m.source_key = s.source_key
        WHERE abs(CAST(s.value AS DOUBLE))
              * CASE WHEN m.mapping_mode = 'QUANTITY' THEN CAST(m.multiplier AS DOUBLE) ELSE 1 END >= ?
        GROUP BY 1, 2, 3 ORDER BY 1, 2""",
        [float(LARGEST_CONVERTED)],
    ).fetchall()
    return [f"usage {value.normalize():f} for customer {customer} metric '{metric}' in window {window} is too large "
            f"to convert exactly (x {multiplier.normalize():f}; the ledger converts |value x multiplier| < 10^18)"
            for customer, metric, value, multiplier in rows]
