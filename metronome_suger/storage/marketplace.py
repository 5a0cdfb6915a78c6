"""What Suger told the marketplaces: its usage record reports, kept with their status history, each mapped to
the groups it carried (ours, or another sender's such as Suger's own Metronome integration)."""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

import duckdb

from metronome_suger.storage.db import QTY, fetch_one, json_list, json_param, json_rows, transaction
from metronome_suger.storage.ledger import record_marketplace_outcomes


@dataclass(frozen=True)
class ReportRow:
    """One report as stored: ``day`` is the UTC day of the usage it carries (its ``startTime``)."""

    report_id: str
    day: date
    entitlement_id: str | None
    partner: str | None
    status: str | None
    message: str | None
    creation_time: datetime | None
    start_time: datetime | None
    end_time: datetime | None
    request: dict[str, object] | None
    group_ids: Sequence[str]
    # dimension -> (reportedRecords, the raw request's quantity, decimalParts, newDecimalParts, unit price)
    lines: dict[str, tuple[Decimal, Decimal | None, Decimal | None, Decimal | None, Decimal | None]]


@dataclass(frozen=True)
class ForeignLine:
    record_group_id: str
    source: str
    dimension_key: str
    quantity: Decimal


_REPORT = {"report_id": "VARCHAR", "day": "DATE", "entitlement_id": "VARCHAR", "partner": "VARCHAR",
           "status": "VARCHAR", "message": "VARCHAR", "creation_time": "TIMESTAMPTZ", "start_time": "TIMESTAMPTZ",
           "end_time": "TIMESTAMPTZ", "request": "JSON"}
_LINE = {"report_id": "VARCHAR", "dimension_key": "VARCHAR", "reported": QTY, "told": QTY,
         "decimal_before": QTY, "decimal_after": QTY, "unit_price": QTY}
_GROUP = {"report_id": "VARCHAR", "record_group_id": "VARCHAR"}
_FOREIGN = {"record_group_id": "VARCHAR", "source": "VARCHAR", "dimension_key": "VARCHAR", "quantity": QTY}


def unknown_group_ids(conn: duckdb.DuckDBPyConnection, group_ids: Sequence[str]) -> list[str]:
    """The ids neither in our ledger nor already known as another sender's group."""
    rows = conn.execute(
        f"""SELECT id FROM (SELECT unnest({json_list('VARCHAR')}) AS id)
        WHERE id NOT IN (SELECT record_group_id FROM report_ledger)
          AND id NOT IN (SELECT record_group_id FROM foreign_group_lines) ORDER BY id""",
        [json.dumps(sorted(set(group_ids)))]).fetchall()
    return [r[0] for r in rows]


def store_reports(conn: duckdb.DuckDBPyConnection, reports: Sequence[ReportRow], foreign: Sequence[ForeignLine],
                  now: datetime) -> int:
    """Upsert the reports (a status or message change is appended to the history), replace their lines and
    groups, keep the other senders' group lines, and update the marketplace outcome of our groups they name.
    One transaction. Returns how many reports changed status (new ones included)."""
    report_rows = [(r.report_id, r.day, r.entitlement_id, r.partner, r.status, r.message, r.creation_time,
                    r.start_time, r.end_time, None if r.request is None else json.dumps(r.request, default=str))
                   for r in reports]
    line_rows = [(r.report_id, key, *values) for r in reports for key, values in r.lines.items()]
    group_rows = [(r.report_id, gid) for r in reports for gid in dict.fromkeys(r.group_ids)]
    ids = json.dumps([r.report_id for r in reports])
    report_json = json_param(_REPORT, report_rows)
    with transaction(conn):
        changed = int(fetch_one(conn, f"""INSERT INTO marketplace_report_history
            SELECT n.report_id, n.status, n.message, $now FROM {json_rows(_REPORT, '$reports')} n
            LEFT JOIN marketplace_reports o USING (report_id)
            WHERE o.report_id IS NULL OR o.status IS DISTINCT FROM n.status
               OR o.message IS DISTINCT FROM n.message""",
            {"reports": report_json, "now": now})[0])
        conn.execute(f"""CREATE OR REPLACE TEMP TABLE _first_seen AS SELECT report_id, first_seen_at
            FROM marketplace_reports WHERE report_id IN (SELECT unnest({json_list('VARCHAR')}))""", [ids])
        for table in ("marketplace_reports", "marketplace_report_lines", "marketplace_report_groups"):
            conn.execute(f"DELETE FROM {table} WHERE report_id IN (SELECT unnest({json_list('VARCHAR')}))", [ids])
        conn.execute(f"""INSERT INTO marketplace_reports SELECT n.*, coalesce(f.first_seen_at, $now), $now
            FROM {json_rows(_REPORT, '$reports')} n LEFT JOIN _first_seen f USING (report_id)""",
                     {"reports": report_json, "now": now})
        conn.execute("DROP TABLE _first_seen")
        conn.execute(f"INSERT INTO marketplace_report_lines SELECT * FROM {json_rows(_LINE)}",
                     [json_param(_LINE, line_rows)])
        conn.execute(f"INSERT INTO marketplace_report_groups SELECT * FROM {json_rows(_GROUP)}",
                     [json_param(_GROUP, group_rows)])
        conn.execute(f"""INSERT INTO foreign_group_lines SELECT * FROM {json_rows(_FOREIGN)} n
            WHERE NOT EXISTS (SELECT 1 FROM foreign_group_lines o WHERE o.record_group_id = n.record_group_id
                                                                    AND o.dimension_key = n.dimension_key)""",
                     [json_param(_FOREIGN, [(f.record_group_id, f.source, f.dimension_key, f.quantity)
                                            for f in foreign])])
        record_marketplace_outcomes(conn, [gid for _, gid in group_rows], now)
    return changed
