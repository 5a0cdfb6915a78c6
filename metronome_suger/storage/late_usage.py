"""Late usage: which already-run windows hold Metronome values that differ from Metronome's now.

Set-based: a fresh ``POST /v1/usage`` read (a run's, of the earlier hours of its day, or the sensor's) is
compared with ``usage`` per window in one query. What runs observe is kept in ``late_usage_observed``.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import duckdb

from metronome_suger.storage.db import QTY, bulk_insert, fetch_one, json_list, retrying_conflicts, transaction
from metronome_suger.storage.window import USABLE_LINK_SQL


@dataclass(frozen=True)
class WindowChange:
    """A window whose Metronome values moved since its run. ``digest`` names the new values and
    the run that stored the old ones, so the same change is requested once, and a value that moves
    back and forth across runs is never mistaken for a change already handled."""

    window_start: datetime
    rose: int
    fell: int
    digest: str


def partners_in_use(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Marketplaces we report to: any in the ledger, or on a usable entitlement of the latest snapshot."""
    rows = conn.execute(
        f"""SELECT partner FROM report_ledger
        UNION
        SELECT partner FROM entitlements
        WHERE snapshot_at = (SELECT max(snapshot_at) FROM entitlements) AND {USABLE_LINK_SQL}
        ORDER BY 1""",
    ).fetchall()
    return [r[0] for r in rows]


def run_windows(conn: duckdb.DuckDBPyConnection, since: datetime, until: datetime) -> list[datetime]:
    """Starts of the windows with stored usage (i.e. already run) in [since, until)."""
    rows = conn.execute(
        "SELECT DISTINCT window_start FROM usage WHERE window_start >= ? AND window_start < ? ORDER BY 1",
        [since, until],
    ).fetchall()
    return [r[0] for r in rows]


def stored_metrics(conn: duckdb.DuckDBPyConnection, starts: Sequence[datetime]) -> list[str]:
    """The metrics whose usage those windows hold: the ones worth asking Metronome about again."""
    rows = conn.execute(
        "SELECT DISTINCT metric_id FROM usage WHERE list_contains(?::TIMESTAMPTZ[], window_start) ORDER BY 1",
        [list(starts)],
    ).fetchall()
    return [r[0] for r in rows]


_CHANGES_SQL = f"""
WITH fresh AS (
    SELECT window_start, customer_id, metric_id, coalesce(value, 0) AS value FROM {{fresh}}
    WHERE list_contains(?::TIMESTAMPTZ[], window_start) AND list_contains(?::VARCHAR[], metric_id)
), stored AS (
    SELECT window_start, customer_id, metric_id, value FROM usage
    WHERE list_contains(?::TIMESTAMPTZ[], window_start) AND list_contains(?::VARCHAR[], metric_id)
), diff AS (
    SELECT coalesce(f.window_start, s.window_start) AS window_start,
           coalesce(f.value, 0) AS fresh, coalesce(s.value, 0) AS stored
    FROM fresh f FULL JOIN stored s
      ON s.window_start = f.window_start AND s.customer_id = f.customer_id AND s.metric_id = f.metric_id
), changes AS (
    SELECT window_start, count(*) FILTER (WHERE fresh > stored) AS rose,
           count(*) FILTER (WHERE fresh < stored) AS fell
    FROM diff GROUP BY window_start
), values_text AS (
    SELECT window_start,
           string_agg(customer_id || '|' || metric_id || '|' || CAST(CAST(value AS {QTY}) AS VARCHAR),
                      ';' ORDER BY customer_id, metric_id) AS text
    FROM fresh WHERE value <> 0 GROUP BY window_start
), fetched AS (
    SELECT window_start, max(fetched_at) AS fetched_at FROM usage
    WHERE list_contains(?::TIMESTAMPTZ[], window_start) GROUP BY window_start
)
SELECT c.window_start, c.rose, c.fell,
       md5(coalesce(v.text, '') || '@' || coalesce(CAST(f.fetched_at AS VARCHAR), '')) AS digest
FROM changes c LEFT JOIN values_text v USING (window_start) LEFT JOIN fetched f USING (window_start)
WHERE c.rose + c.fell > 0
ORDER BY c.window_start
"""


def changed_windows(
    conn: duckdb.DuckDBPyConnection, starts: Sequence[datetime], metrics: Sequence[str], fresh: str,
) -> list[WindowChange]:
    """Compare the ``fresh`` relation (window_start, customer_id, metric_id, value; see
    ``storage.usage.fresh_values``) with ``usage`` for these windows and metrics.

    A null value counts as 0, as ``metronome_usage`` stores it; a row present on one side only
    counts against 0 on the other. Only windows where some value rose or fell are returned.
    """
    params = [list(starts), list(metrics), list(starts), list(metrics), list(starts)]
    rows = conn.execute(_CHANGES_SQL.format(fresh=fresh), params).fetchall()
    return [WindowChange(start, int(rose), int(fell), digest) for start, rose, fell, digest in rows]


def record_observations(
    conn: duckdb.DuckDBPyConnection, starts: Sequence[datetime], changes: Sequence[WindowChange], at: datetime,
) -> None:
    """What a run saw of earlier windows of its day: each of ``starts`` observed at ``at``, changed or not.
    Concurrent runs of one day observe the same earlier windows: on PostgreSQL the later writer's transaction
    meets a serialization conflict and is retried (the last observation stands)."""
    changed = {c.window_start: c for c in changes}
    rows = [(start, c.rose, c.fell, c.digest, at) if (c := changed.get(start)) else (start, 0, 0, None, at)
            for start in starts]

    def replace() -> None:
        with transaction(conn):
            conn.execute("DELETE FROM late_usage_observed WHERE list_contains(?::TIMESTAMPTZ[], window_start)",
                         [list(starts)])
            bulk_insert(conn, "late_usage_observed",
                        {"window_start": "TIMESTAMPTZ", "rose": "INTEGER", "fell": "INTEGER", "digest": "VARCHAR",
                         "observed_at": "TIMESTAMPTZ"}, rows)

    retrying_conflicts(replace)


def last_reads(conn: duckdb.DuckDBPyConnection, starts: Sequence[datetime]) -> dict[datetime, datetime]:
    """UTC day -> when (the pipeline's time) a run last read it: for its own window, or the earlier windows of
    its day it compared."""
    rows = conn.execute(
        """SELECT date_trunc('day', window_start), max(read_at) FROM (
            SELECT window_start, fetched_at AS read_at FROM usage
            WHERE list_contains(?::TIMESTAMPTZ[], window_start)
            UNION ALL
            SELECT window_start, observed_at FROM late_usage_observed
            WHERE list_contains(?::TIMESTAMPTZ[], window_start))
        GROUP BY 1""",
        [list(starts), list(starts)],
    ).fetchall()
    return {day: read_at for day, read_at in rows}


def observed_changes(conn: duckdb.DuckDBPyConnection, starts: Sequence[datetime]) -> list[WindowChange]:
    """The changes runs observed in these windows after the window's own latest run (a rerun since then
    already took them)."""
    rows = conn.execute(
        """SELECT o.window_start, o.rose, o.fell, o.digest FROM late_usage_observed o
        WHERE list_contains(?::TIMESTAMPTZ[], o.window_start) AND o.rose + o.fell > 0
          AND o.observed_at > (SELECT max(u.fetched_at) FROM usage u WHERE u.window_start = o.window_start)
        ORDER BY 1""",
        [list(starts)],
    ).fetchall()
    return [WindowChange(start, int(rose), int(fell), digest) for start, rose, fell, digest in rows]


# -- amount modes ------------------------------------------------------------------------------------


def amount_window_was_run(conn: duckdb.DuckDBPyConnection, window_start: datetime) -> bool:
    """Whether ``metronome_invoice_snapshots`` already observed this window."""
    return bool(fetch_one(
        conn,
        """SELECT EXISTS (SELECT 1 FROM invoice_snapshots WHERE window_start = ?)
               OR EXISTS (SELECT 1 FROM invoice_high_water WHERE window_start = ?)""",
        [window_start, window_start],
    )[0])


def high_waters(conn: duckdb.DuckDBPyConnection, history_keys: Sequence[str]) -> dict[str, Decimal]:
    """The highest total already observed per history key, over every window (what a run compares with)."""
    rows = conn.execute(
        f"""SELECT history_key, max(high_water_cents) FROM invoice_high_water
        WHERE history_key IN (SELECT unnest({json_list('VARCHAR')})) GROUP BY history_key""",
        [json.dumps(list(history_keys))],
    ).fetchall()
    return {key: Decimal(high) for key, high in rows}


def customer_partners(conn: duckdb.DuckDBPyConnection, customer_ids: Sequence[str]) -> dict[str, list[str]]:
    """The marketplaces each customer reports to (usable entitlements of the latest snapshot)."""
    rows = conn.execute(
        f"""SELECT metronome_customer_id, list(DISTINCT partner ORDER BY partner) FROM entitlements
        WHERE snapshot_at = (SELECT max(snapshot_at) FROM entitlements)
          AND {USABLE_LINK_SQL} AND metronome_customer_id IN (SELECT unnest({json_list('VARCHAR')}))
        GROUP BY 1""",
        [json.dumps(list(customer_ids))],
    ).fetchall()
    return {customer: list(partners) for customer, partners in rows}
