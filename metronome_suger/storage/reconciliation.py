"""The three-way reconciliation of one UTC day in SQL: our groups by cause, the billed reports' figures, per
entitlement × dimension. The causes and the arithmetic are core.reconciliation's."""

from datetime import date, datetime, timedelta
from typing import Any

import duckdb

from metronome_suger.core.deadlines import Deadlines, Urgency
from metronome_suger.core.reconciliation import (
    BILLED_REPORTS,
    FAILED_REPORTS,
    LEDGER_CAUSES,
    REPORT_GRACE,
    SUGER_INTEGRATION,
    Line,
    Reconciliation,
    units,
)
from metronome_suger.storage.db import sql_list
from metronome_suger.storage.ledger import ENDED_AT_SQL, deciding_reports, outcome_sql
from metronome_suger.storage.snapshots import LATEST_RATES_SQL

# A group's cause: its deciding report's outcome, else its ledger status, else in flight within the grace.
_CAUSE_SQL = f"""CASE WHEN {outcome_sql('d.rank')} IN ('billed', 'failed') THEN {outcome_sql('d.rank')}
    WHEN g.status IN {sql_list(LEDGER_CAUSES)} THEN g.status
    WHEN d.rank IS NOT NULL AND {outcome_sql('d.rank')} = 'in_flight' THEN 'in_flight'
    WHEN coalesce(g.answered_at, g.sent_at, g.created_at) > CAST($now AS TIMESTAMPTZ) - $grace THEN 'in_flight'
    ELSE 'missing_report' END"""

_DAY_GROUPS = "SELECT record_group_id FROM report_ledger WHERE window_start >= $day AND window_start < $next"
_OURS_SQL = f"""SELECT g.entitlement_id, g.partner, l.dimension_key, {_CAUSE_SQL} AS cause,
        sum(l.quantity) AS quantity, sum(CASE WHEN g.status IN ('sent', 'accepted') THEN l.quantity ELSE 0 END)
    FROM report_ledger g JOIN report_lines l USING (record_group_id)
    LEFT JOIN ({deciding_reports(_DAY_GROUPS)}) d USING (record_group_id)
    WHERE g.window_start >= $day AND g.window_start < $next {{entitlement}}
    GROUP BY ALL"""

_DECREASES_SQL = """SELECT o.entitlement_id, o.dimension_key, sum(o.reported - o.current)
    FROM over_reported o WHERE o.window_start >= $day AND o.window_start < $next {entitlement} GROUP BY ALL"""

REPORT_LOOKBACK_DAYS = 3  # a report starting this many days before a day may carry its groups (retries)

# The billed reports carrying the day's usage: what the marketplace was told, the carry, the rounding, the other
# senders' groups they carried. A report belongs to the day it starts (its first group's hour), but one report
# may carry groups of several days (a late window handed over with the next day's): each day is told the
# quantity of its own groups, and the report's day the rest (carry, rounding, other senders, any mismatch).
_TOLD_SQL = f"""WITH billed AS (
        SELECT * FROM marketplace_reports r
        WHERE r.status IN {{billed}} AND r.day BETWEEN CAST($day AS DATE) - {REPORT_LOOKBACK_DAYS}
                                                   AND CAST($day AS DATE) {{entitlement}}
    ), ours AS (
        SELECT mg.report_id, l.dimension_key, sum(l.quantity) AS total,
               sum(l.quantity) FILTER (WHERE g.window_start >= $day AND g.window_start < $next) AS on_day
        FROM billed r JOIN marketplace_report_groups mg USING (report_id)
        JOIN report_ledger g USING (record_group_id) JOIN report_lines l USING (record_group_id) GROUP BY ALL
    ), foreign_units AS (
        SELECT mg.report_id, f.dimension_key, sum(f.quantity) AS quantity
        FROM billed r JOIN marketplace_report_groups mg USING (report_id)
        JOIN foreign_group_lines f USING (record_group_id) WHERE f.source = '{SUGER_INTEGRATION}' GROUP BY ALL
    ), told AS (
        SELECT r.entitlement_id, r.partner, l.dimension_key, r.day = CAST($day AS DATE) AS own,
               coalesce(o.on_day, 0) AS on_day, coalesce(o.total, 0) AS ours, coalesce(l.told, l.reported) AS told,
               l.reported, coalesce(l.decimal_before, 0) - coalesce(l.decimal_after, 0) AS carry,
               coalesce(fu.quantity, 0) AS foreign_quantity, l.unit_price
        FROM billed r JOIN marketplace_report_lines l USING (report_id)
        LEFT JOIN ours o ON o.report_id = r.report_id AND o.dimension_key = l.dimension_key
        LEFT JOIN foreign_units fu ON fu.report_id = r.report_id AND fu.dimension_key = l.dimension_key
        WHERE r.day = CAST($day AS DATE) OR o.on_day IS NOT NULL
    )
    SELECT entitlement_id, partner, dimension_key,
           sum(on_day + CASE WHEN own THEN told - ours ELSE 0 END), sum(CASE WHEN own THEN carry ELSE 0 END),
           sum(CASE WHEN own THEN told - reported ELSE 0 END), sum(CASE WHEN own THEN foreign_quantity ELSE 0 END),
           max(unit_price)
    FROM told GROUP BY ALL"""

# Reports of the day whose quantity disagrees with the groups they name (ours and known others', with the
# carry): named with both numbers.
_MISMATCH_SQL = """WITH carried AS (
        SELECT mg.report_id, l.dimension_key, l.quantity FROM marketplace_report_groups mg
        JOIN report_lines l USING (record_group_id)
        UNION ALL
        SELECT mg.report_id, f.dimension_key, f.quantity FROM marketplace_report_groups mg
        JOIN foreign_group_lines f USING (record_group_id)
    ), sums AS (SELECT report_id, dimension_key, sum(quantity) AS quantity FROM carried GROUP BY ALL)
    SELECT r.entitlement_id, l.dimension_key, r.report_id, r.status, l.reported, coalesce(s.quantity, 0),
           coalesce(l.decimal_before, 0) - coalesce(l.decimal_after, 0)
    FROM marketplace_reports r JOIN marketplace_report_lines l USING (report_id)
    LEFT JOIN sums s ON s.report_id = r.report_id AND s.dimension_key = l.dimension_key
    WHERE r.day = $day {entitlement}
      AND l.reported <> coalesce(s.quantity, 0) + coalesce(l.decimal_before, 0) - coalesce(l.decimal_after, 0)
    ORDER BY 1, 2, 3"""

_FAILED_SQL = """SELECT r.entitlement_id, r.partner, l.dimension_key, r.report_id, r.message
    FROM marketplace_reports r JOIN marketplace_report_lines l USING (report_id)
    WHERE r.day = $day AND r.status IN {failed} {entitlement} ORDER BY 1, 3, r.creation_time, 4"""

_FOREIGN_SQL = """SELECT DISTINCT mg.record_group_id FROM marketplace_reports r JOIN marketplace_report_groups mg
    USING (report_id)
    WHERE r.day = $day {entitlement}
      AND mg.record_group_id NOT IN (SELECT record_group_id FROM report_ledger)
      AND mg.record_group_id NOT IN (SELECT record_group_id FROM foreign_group_lines)
    ORDER BY 1"""

# Pending groups of the day, to tell those at risk (their marketplace deadline inside Suger's forwarding lag).
_PENDING_SQL = f"""SELECT report_ledger.entitlement_id, l.dimension_key, report_ledger.partner,
        report_ledger.timestamp, {ENDED_AT_SQL}, sum(l.quantity)
    FROM report_ledger JOIN report_lines l USING (record_group_id)
    WHERE report_ledger.status = 'pending' AND report_ledger.window_start >= $day
      AND report_ledger.window_start < $next {{entitlement}} GROUP BY ALL"""

_REPORTS_SQL = "SELECT count(*) FROM marketplace_reports r WHERE r.day = $day {entitlement}"


def reconcile(conn: duckdb.DuckDBPyConnection, day: date, now: datetime, *, entitlement_id: str | None = None,
              grace: timedelta = REPORT_GRACE, deadlines: Deadlines | None = None) -> Reconciliation:
    """The day's lines (optionally one entitlement's), sorted by entitlement and dimension. With ``deadlines``,
    pending units whose marketplace deadline is inside Suger's forwarding lag (or past) are ``at_risk``."""
    start = datetime(day.year, day.month, day.day, tzinfo=now.tzinfo)
    params: dict[str, Any] = {"day": start, "next": start + timedelta(days=1)}
    where = ""
    if entitlement_id is not None:
        where, params["ent"] = "AND {alias}.entitlement_id = $ent", entitlement_id

    def rows(sql: str, alias: str, **extra: Any) -> list[tuple[Any, ...]]:
        query = sql.format(entitlement=where.format(alias=alias), billed=sql_list(BILLED_REPORTS),
                           failed=sql_list(FAILED_REPORTS))
        used = {k: v for k, v in {**params, **extra}.items() if f"${k}" in query}
        return conn.execute(query, used).fetchall()

    lines: dict[tuple[str, str], Line] = {}

    def line(ent: str, partner: str | None, dim: str) -> Line:
        found = lines.get((ent, dim))
        if found is None:
            found = lines[(ent, dim)] = Line(ent, partner or "", dim)
        elif partner and not found.partner:
            found.partner = partner
        return found

    for ent, partner, dim, cause, quantity, sent in rows(_OURS_SQL, "g", now=now, grace=grace):
        item = line(ent, partner, dim)
        item.causes[cause] = item.cause(cause) + quantity
        item.converted += quantity
        item.sent += sent
    if deadlines is not None:
        for ent, dim, partner, timestamp, ended_at, quantity in rows(_PENDING_SQL, "report_ledger"):
            if deadlines.urgency(now, timestamp, partner, ended_at) is not Urgency.OK:
                item = line(ent, partner, dim)
                item.causes["pending"] -= quantity
                item.causes["at_risk"] = item.cause("at_risk") + quantity
    for ent, dim, decrease in rows(_DECREASES_SQL, "o"):
        item = line(ent, None, dim)
        item.late_decrease += decrease
        item.converted -= decrease
    for ent, partner, dim, told, carry, rounding, foreign, price in rows(_TOLD_SQL, "r"):
        item = line(ent, partner, dim)
        item.told, item.carry, item.rounding, item.suger_integration, item.unit_price = (
            told, carry, rounding, foreign, price)
    for ent, dim, report, status, reported, carried, carry in rows(_MISMATCH_SQL, "r"):
        line(ent, None, dim).notes.append(
            f"report {report} ({status}) told the marketplace {units(reported)} but its groups sum "
            f"{units(carried)}" + (f" and the carry {units(carry)}" if carry else ""))
    for ent, partner, dim, report, message in rows(_FAILED_SQL, "r"):
        line(ent, partner, dim).notes.append(f"report {report} FAILED: {message or 'no message'}")
    rates = {(ent, dim): rate for ent, dim, rate in conn.execute(LATEST_RATES_SQL).fetchall()}
    for (ent, dim), item in lines.items():
        if item.unit_price is None:
            item.unit_price = rates.get((ent, dim))
    reports = int(rows(_REPORTS_SQL, "r")[0][0])
    foreign = [r[0] for r in rows(_FOREIGN_SQL, "r")]
    return Reconciliation(day.isoformat(), [lines[k] for k in sorted(lines)], foreign, reports)

