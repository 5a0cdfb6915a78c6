"""The ``usage`` table (quantity mode): Metronome's values per window × customer × metric, and the
window's source read from it."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb

from metronome_suger.core.conversion import Metric
from metronome_suger.core.windows import Window
from metronome_suger.storage.db import QTY, insert_ndjson, transaction
from metronome_suger.storage.window import MappingTables, Source


def snapshot_customer_ids(conn: duckdb.DuckDBPyConnection) -> list[str] | None:
    """The customers (archived included) of the latest snapshot; None when none was taken yet."""
    rows = conn.execute(
        """SELECT customer_id FROM customers WHERE snapshot_at = (SELECT max(snapshot_at) FROM customers)
        ORDER BY customer_id"""
    ).fetchall()
    return [r[0] for r in rows] if rows else None


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


# A fetched usage row, as the usage step streams it to disk: arrival order, the key, and the value twice: as
# Metronome wrote it (for messages and the exact cast) and normalized (so 10 and 10.0 count as the same).
FETCHED_COLUMNS = {
    "seq": "BIGINT", "window_start": "TIMESTAMPTZ", "window_end": "TIMESTAMPTZ", "customer_id": "VARCHAR",
    "metric_id": "VARCHAR", "metric_name": "VARCHAR", "value_text": "VARCHAR", "value_key": "VARCHAR",
}
# An earlier hour's row (read only to compare, see ``clients.metronome.EarlierRow``) has its start as Metronome sent
# it, and no end, name or value key.
FetchedRow = tuple[int, datetime | str, datetime | None, str, str, str | None, str | None, str | None]


@dataclass(frozen=True)
class Replaced:
    """What :func:`replace_usage` did: rows stored, exact repeats dropped, null values; or, when a key came
    back with two different values, that key (customer, metric name, start, end, first value, other value)
    and nothing changed."""

    rows: int = 0
    repeats: int = 0
    nulls: int = 0
    conflict: tuple[str, str | None, datetime, datetime, str | None, str | None] | None = None


FETCHED = "_fetched"  # the temp table of a usage read, loaded by ``load_fetched``


def load_fetched(conn: duckdb.DuckDBPyConnection, path: str) -> str:
    """Load a usage read's NDJSON file (``FETCHED_COLUMNS``) into a temp table; returns its name."""
    columns = ", ".join(f"{n} {t}" for n, t in FETCHED_COLUMNS.items())
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {FETCHED} ({columns})")
    insert_ndjson(conn, FETCHED, FETCHED_COLUMNS, path)
    return FETCHED


def replace_usage(
    conn: duckdb.DuckDBPyConnection, start: datetime, end: datetime, fetched: str, fetched_at: datetime,
) -> Replaced:
    """The windows in [start, end) hold exactly their rows of the ``fetched`` relation (``load_fetched``), each
    key once, in one transaction; a null value is stored as 0 and flagged. A key fetched twice with different
    values changes nothing. Rows of other hours (earlier hours read for comparison) are left alone."""
    wanted = f"(SELECT * FROM {fetched} WHERE window_start >= $start AND window_start < $end)"
    bounds = {"start": start, "end": end}
    clash = conn.execute(
        f"""SELECT customer_id, any_value(metric_name), window_start, window_end,
                  list(value_text ORDER BY seq), list(value_key ORDER BY seq)
        FROM {wanted} GROUP BY window_start, window_end, customer_id, metric_id
        HAVING count(DISTINCT coalesce(value_key, 'null')) > 1 ORDER BY min(seq) LIMIT 1""", bounds).fetchall()
    if clash:
        customer, metric, row_start, row_end, texts, keys = clash[0]
        other = next(text for text, key in zip(texts, keys, strict=True) if key != keys[0])
        return Replaced(conflict=(customer, metric, row_start, row_end, texts[0], other))
    with transaction(conn):
        conn.execute("DELETE FROM usage WHERE window_start >= $start AND window_start < $end", bounds)
        conn.execute(
            f"""INSERT INTO usage (window_start, window_end, customer_id, metric_id, metric_name, value,
                                   value_was_null, fetched_at)
            SELECT window_start, window_end, customer_id, metric_id, metric_name,
                   coalesce(CAST(value_text AS {QTY}), 0), value_text IS NULL, $at
            FROM {wanted} QUALIFY row_number() OVER (PARTITION BY window_start, customer_id, metric_id
                                                     ORDER BY seq) = 1""", {**bounds, "at": fetched_at})
    rows, total, nulls = conn.execute(
        f"""SELECT count(DISTINCT (window_start, customer_id, metric_id)), count(*),
                  count(DISTINCT (window_start, customer_id, metric_id)) FILTER (WHERE value_text IS NULL)
        FROM {wanted}""", bounds).fetchall()[0]
    return Replaced(rows=rows, repeats=total - rows, nulls=nulls)


def fresh_values(fetched: str) -> str:
    """A usage read as (window_start, customer_id, metric_id, value), each key once (as first read): what late
    usage compares with ``usage``. A value the ledger cannot hold reads as NULL (its window's run names it)."""
    return f"""(SELECT window_start, customer_id, metric_id, TRY_CAST(value_text AS {QTY}) AS value FROM {fetched}
        QUALIFY row_number() OVER (PARTITION BY window_start, customer_id, metric_id ORDER BY seq) = 1)"""


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
