"""Set-based conversion of source quantities into record groups, and their revisions against the ledger.

The source of a window is a table of (customer_id, source_key, value): Metronome usage per metric in
``quantity`` mode, the invoice-amount increase in dollars (key ``metronome``) in the amount modes.
It is joined with the customer → entitlement links and the conversion rules, per partner, in SQL.

Exactly once: for each (entitlement, window, dimension) the converted total is compared with what the
ledger already holds as sent, accepted or expired; only the positive difference becomes a group, under
the next revision (a deterministic id). A group that was computed but never accepted (pending, rejected)
is recomputed in place under the same id.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import duckdb

from metronome_suger.core.conversion import MappingRow
from metronome_suger.core.ids import record_group_id
from metronome_suger.core.windows import Window
from metronome_suger.storage.db import QTY, bulk_insert

# Closed groups are history: Suger holds them (even one it later marked INVALID or gave up forwarding,
# which ``suger_record_status`` surfaces), or they expired. Open groups never reached Suger (pending, or
# refused on submission) and are recomputed under the same id.
CLOSED_SQL = "(status IN ('sent', 'accepted', 'expired') OR (status = 'rejected' AND suger_status IS NOT NULL))"
OPEN_SQL = f"(NOT {CLOSED_SQL})"


@dataclass
class GroupPlan:
    record_group_id: str
    revision: int
    entitlement_id: str
    customer_id: str
    partner: str
    records: dict[str, Decimal]


@dataclass
class RecordsResult:
    groups: list[GroupPlan] = field(default_factory=list)
    lines: int = 0
    over_reported: list[tuple[str, str, Decimal, Decimal]] = field(default_factory=list)


def load_links(conn: duckdb.DuckDBPyConnection, window: Window) -> None:
    """``_links``: the customer → entitlement links of the latest snapshot usable for the window."""
    conn.execute(
        """CREATE OR REPLACE TEMP TABLE _links AS
        SELECT DISTINCT metronome_customer_id AS customer_id, entitlement_id, partner
        FROM entitlements
        WHERE snapshot_at = (SELECT max(snapshot_at) FROM entitlements)
          AND status IN ('ACTIVE', 'PENDING_CANCEL')
          AND (start_time IS NULL OR start_time < ?)
          AND (end_time IS NULL OR end_time > ?)""",
        [window.end, window.start],
    )
    conn.execute(
        """CREATE OR REPLACE TEMP TABLE _dims AS
        SELECT entitlement_id, dimension_key, dimension_name, rate FROM entitlement_dimensions
        WHERE snapshot_at = (SELECT max(snapshot_at) FROM entitlement_dimensions)"""
    )


def load_mapping(conn: duckdb.DuckDBPyConnection, rows: Sequence[MappingRow]) -> None:
    conn.execute(
        f"""CREATE OR REPLACE TEMP TABLE _mapping (partner VARCHAR, source_key VARCHAR,
        dimension_key VARCHAR, mapping_mode VARCHAR, multiplier {QTY})"""
    )
    bulk_insert(
        conn,
        "_mapping",
        {"partner": "VARCHAR", "source_key": "VARCHAR", "dimension_key": "VARCHAR",
         "mapping_mode": "VARCHAR", "multiplier": QTY},
        [(r.partner, r.source_key, r.dimension_key, r.mapping_mode, r.multiplier) for r in rows],
    )


CONVERT_SQL = f"""
CREATE OR REPLACE TEMP TABLE _converted AS
WITH dims AS (
    SELECT l.entitlement_id, m.dimension_key, max(d.rate) AS rate
    FROM _links l JOIN _mapping m ON m.partner = l.partner
    JOIN _dims d ON d.entitlement_id = l.entitlement_id
        AND (d.dimension_key = m.dimension_key OR d.dimension_name = m.dimension_key)
    GROUP BY ALL
)
SELECT l.entitlement_id, l.partner, s.customer_id, s.source_key,
       CAST(s.value AS {QTY}) AS origin_quantity, m.dimension_key, m.mapping_mode,
       m.multiplier, dims.rate,
       CASE WHEN m.mapping_mode = 'QUANTITY' THEN CAST(s.value * m.multiplier AS {QTY})
            WHEN dims.rate > 0 THEN exact_div(s.value, dims.rate) END AS quantity
FROM _source s
JOIN _links l ON l.customer_id = s.customer_id
JOIN _mapping m ON m.partner = l.partner AND m.source_key = s.source_key
LEFT JOIN dims ON dims.entitlement_id = l.entitlement_id AND dims.dimension_key = m.dimension_key
WHERE s.value <> 0
"""

DELTA_SQL = """
WITH target AS (
    SELECT entitlement_id, any_value(partner) AS partner,
           string_agg(DISTINCT customer_id, ',' ORDER BY customer_id) AS customer_id,
           dimension_key, sum(quantity) AS total
    FROM _converted WHERE quantity IS NOT NULL GROUP BY entitlement_id, dimension_key
), reported AS (
    SELECT g.entitlement_id, l.dimension_key, sum(l.quantity) AS total
    FROM report_ledger g JOIN report_lines l USING (record_group_id)
    WHERE g.window_start = ? AND {closed}
    GROUP BY ALL
)
SELECT coalesce(t.entitlement_id, r.entitlement_id) AS entitlement_id, t.partner, t.customer_id,
       coalesce(t.dimension_key, r.dimension_key) AS dimension_key,
       coalesce(t.total, 0) AS target, coalesce(r.total, 0) AS reported
FROM target t FULL JOIN reported r
  ON r.entitlement_id = t.entitlement_id AND r.dimension_key = t.dimension_key
ORDER BY 1, 4
""".format(closed=CLOSED_SQL)  # only report_ledger has status columns


def convert(
    conn: duckdb.DuckDBPyConnection,
    *,
    window: Window,
    mapping: Sequence[MappingRow],
    org_id: str,
    billing_mode: str,
    now: datetime,
) -> RecordsResult:
    """Convert ``_source`` (a temp table the caller filled) for one window and plan its groups."""
    load_links(conn, window)
    load_mapping(conn, mapping)
    conn.execute(CONVERT_SQL)
    deltas = conn.execute(DELTA_SQL, [window.start]).fetchall()
    revisions = dict(
        conn.execute(
            f"""SELECT entitlement_id, max(revision) FILTER (WHERE {CLOSED_SQL})
            FROM report_ledger WHERE window_start = ? GROUP BY entitlement_id""",
            [window.start],
        ).fetchall()
    )
    partner_of = dict(conn.execute("SELECT entitlement_id, partner FROM _links").fetchall())
    result = RecordsResult()
    plans: dict[str, GroupPlan] = {}
    for entitlement_id, partner, customer_id, dim, target, reported in deltas:
        if target > reported:
            last = revisions.get(entitlement_id)
            revision = 0 if last is None else last + 1
            plan = plans.get(entitlement_id)
            if plan is None:
                plan = plans[entitlement_id] = GroupPlan(
                    record_group_id(org_id, entitlement_id, billing_mode, window.start, revision),
                    revision, entitlement_id, customer_id or "",
                    partner or partner_of.get(entitlement_id, ""), {},
                )
            plan.records[dim] = target - reported
        elif target < reported:
            result.over_reported.append((entitlement_id, dim, reported, target))
    result.groups = list(plans.values())
    _store(conn, window, result, now)
    return result


def _store(conn: duckdb.DuckDBPyConnection, window: Window, result: RecordsResult, now: datetime) -> None:
    """Replace the window's open groups with the new plan; closed groups are history and stay."""
    open_ids = [r[0] for r in conn.execute(
        f"SELECT record_group_id FROM report_ledger WHERE window_start = ? AND {OPEN_SQL}",
        [window.start],
    ).fetchall()]
    for table in ("report_lines", "report_ledger"):
        conn.execute(
            f"DELETE FROM {table} WHERE record_group_id IN (SELECT unnest(?::VARCHAR[]))", [open_ids]
        )
    conn.execute(
        """DELETE FROM usage_records WHERE window_start = ? AND record_group_id NOT IN
        (SELECT record_group_id FROM report_ledger WHERE window_start = ?)""",
        [window.start, window.start],
    )
    ids = {g.entitlement_id: (g.record_group_id, g.revision) for g in result.groups}
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE _plan (entitlement_id VARCHAR, record_group_id VARCHAR, revision INTEGER)"
    )
    if ids:
        conn.executemany("INSERT INTO _plan VALUES (?, ?, ?)", [(e, i, r) for e, (i, r) in ids.items()])
    conn.execute(
        """INSERT INTO usage_records
        SELECT p.record_group_id, p.revision, ?, ?, c.entitlement_id, c.customer_id, c.partner,
               c.source_key, c.origin_quantity, c.dimension_key, c.mapping_mode, c.multiplier,
               c.rate, coalesce(c.quantity, 0), ?
        FROM _converted c JOIN _plan p USING (entitlement_id)""",
        [window.start, window.end, now],
    )
    result.lines = conn.execute(
        "SELECT count(*) FROM usage_records WHERE window_start = ? AND computed_at = ?", [window.start, now]
    ).fetchone()[0]
    bulk_insert(
        conn,
        "report_ledger",
        {"record_group_id": "VARCHAR", "revision": "INTEGER", "window_start": "TIMESTAMPTZ",
         "window_end": "TIMESTAMPTZ", "entitlement_id": "VARCHAR", "customer_id": "VARCHAR",
         "partner": "VARCHAR", "timestamp": "TIMESTAMPTZ", "records": "JSON", "status": "VARCHAR",
         "created_at": "TIMESTAMPTZ", "updated_at": "TIMESTAMPTZ"},
        [(g.record_group_id, g.revision, window.start, window.end, g.entitlement_id, g.customer_id,
          g.partner, window.report_timestamp,
          json.dumps({k: str(v) for k, v in sorted(g.records.items())}), "pending", now, now)
         for g in result.groups],
    )
    bulk_insert(
        conn,
        "report_lines",
        {"record_group_id": "VARCHAR", "dimension_key": "VARCHAR", "quantity": QTY},
        [(g.record_group_id, k, v) for g in result.groups for k, v in g.records.items()],
    )
    # What each pending group is worth at the entitlement's prices: the revenue at stake if it expires.
    conn.execute(
        f"""UPDATE report_ledger g SET dollars = coalesce((
            SELECT sum(CAST(l.quantity * r.rate AS {QTY})) FROM report_lines l
            JOIN (SELECT entitlement_id, dimension_key AS dim, max(rate) AS rate FROM _dims GROUP BY ALL
                  UNION ALL
                  SELECT entitlement_id, dimension_name, max(rate) FROM _dims
                  WHERE dimension_name NOT IN (SELECT dimension_key FROM _dims d2
                                               WHERE d2.entitlement_id = _dims.entitlement_id)
                  GROUP BY ALL) r
              ON r.entitlement_id = g.entitlement_id AND r.dim = l.dimension_key
            WHERE l.record_group_id = g.record_group_id), 0)
        WHERE g.window_start = ? AND g.status = 'pending'""",
        [window.start],
    )
    conn.execute("DELETE FROM over_reported WHERE window_start = ?", [window.start])
    if result.over_reported:
        conn.executemany(
            "INSERT INTO over_reported VALUES (?, ?, ?, ?, ?, ?)",
            [(window.start, e, d, rep, cur, now) for e, d, rep, cur in result.over_reported],
        )
