"""The report ledger: one row per record group, what was sent and what Suger answered.

The only module that writes ``report_ledger``: new groups are inserted ``pending`` (``store_plan``), and
every status change goes through the state machine of ``core/ledger.py`` (``record``), which raises on a
transition it does not allow.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import duckdb

from metronome_suger.core.ledger import NEEDS_ATTENTION, STATES, SUGER_STATUSES, Event, transition
from metronome_suger.core.linkage import ENDED_STATUSES
from metronome_suger.core.reconciliation import OUTCOMES
from metronome_suger.core.windows import Window
from metronome_suger.storage.db import QTY, bulk_insert, fetch_one, json_param, json_rows, sql_list

# Closed groups are history: Suger holds them (even one it later marked INVALID or gave up forwarding,
# which ``suger_record_status`` surfaces), or they expired. Open groups never reached Suger (pending, or
# refused on submission) and are recomputed under the same id.
CLOSED_SQL = "(status IN ('sent', 'accepted', 'expired') OR (status = 'rejected' AND suger_status IS NOT NULL))"


@dataclass(frozen=True)
class LedgerGroup:
    record_group_id: str
    revision: int
    entitlement_id: str
    customer_id: str
    partner: str
    window_start: datetime
    timestamp: datetime
    records: dict[str, Decimal]
    status: str
    suger_status: str | None
    retries: int
    sent_at: datetime | None
    ended_at: datetime | None = None  # the entitlement's cancellation time, if it was cancelled


# When the group's entitlement was cancelled (the latest snapshot's end time of an ended status), over
# a ``report_ledger`` row: some marketplaces take the remaining usage only for a while after it.
ENDED_AT_SQL = f"""(SELECT max(e.end_time) FROM entitlements e
    WHERE e.snapshot_at = (SELECT max(snapshot_at) FROM entitlements)
      AND e.entitlement_id = report_ledger.entitlement_id AND e.status IN {sql_list(ENDED_STATUSES)})"""
_COLUMNS = ("record_group_id, revision, entitlement_id, customer_id, partner, window_start, timestamp, "
            f"records, status, suger_status, retries, coalesce(sent_at, created_at), {ENDED_AT_SQL}")


def _group(row: tuple[Any, ...]) -> LedgerGroup:
    gid, rev, ent, cust, partner, wstart, ts, records, status, suger, retries, sent_at, ended_at = row
    lines = {k: Decimal(v) for k, v in json.loads(records).items()}
    return LedgerGroup(gid, rev, ent, cust, partner, wstart, ts, lines, status, suger, retries, sent_at, ended_at)


def groups_in_window(
    conn: duckdb.DuckDBPyConnection, window: Window, statuses: Sequence[str] = STATES
) -> list[LedgerGroup]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM report_ledger WHERE window_start >= ? AND window_start < ? "
        "AND list_contains(?::VARCHAR[], status) ORDER BY timestamp, entitlement_id, revision",
        [window.start, window.end, list(statuses)],
    ).fetchall()
    return [_group(r) for r in rows]


def awaiting_groups(conn: duckdb.DuckDBPyConnection, since: datetime) -> list[LedgerGroup]:
    """``sent`` groups sent at or after ``since`` (Suger has them; their marketplace fate is unknown)."""
    rows = conn.execute(
        f"""SELECT {_COLUMNS} FROM report_ledger
        WHERE status = 'sent' AND coalesce(sent_at, created_at) >= ?
        ORDER BY timestamp, entitlement_id, revision""",
        [since],
    ).fetchall()
    return [_group(r) for r in rows]


@dataclass(frozen=True)
class Change:
    """An event for one group, in the state the writer read it in (``state``)."""

    record_group_id: str
    state: str
    event: Event
    suger_status: str | None = None
    message: str | None = None


_CHANGE_COLUMNS = {
    "record_group_id": "VARCHAR", "from_status": "VARCHAR", "to_status": "VARCHAR", "suger_status": "VARCHAR",
    "message": "VARCHAR", "keeps_message": "BOOLEAN", "submitted": "BOOLEAN", "retried": "BOOLEAN",
}
_APPLY_SQL = """UPDATE report_ledger g SET status = c.to_status,
    suger_status = coalesce(c.suger_status, g.suger_status),
    message = CASE WHEN c.keeps_message THEN coalesce(c.message, g.message) ELSE c.message END,
    attempts = g.attempts + CASE WHEN c.submitted THEN 1 ELSE 0 END,
    retries = g.retries + CASE WHEN c.retried THEN 1 ELSE 0 END,
    sent_at = CASE WHEN c.submitted THEN CAST($now AS TIMESTAMPTZ) ELSE g.sent_at END,
    answered_at = CASE WHEN c.submitted THEN CAST($now AS TIMESTAMPTZ) ELSE g.answered_at END,
    updated_at = CAST($now AS TIMESTAMPTZ)
FROM {source} c
WHERE g.record_group_id = c.record_group_id AND g.status = c.from_status"""


def record(conn: duckdb.DuckDBPyConnection, changes: Sequence[Change], now: datetime) -> int:
    """Apply the changes in one statement (one transaction); returns the rows changed.

    Each change is checked against the state machine first (an illegal one raises before anything is
    written). A row whose status moved since it was read is left alone: the other writer won.
    """
    rows = []
    for change in changes:
        rule = transition(change.state, change.event)
        rows.append((change.record_group_id, change.state, rule.to, change.suger_status, change.message,
                     rule.keeps_message, rule.submitted, rule.retried))
    if not rows:
        return 0
    params: dict[str, Any] = {"now": now}  # named: the order of placeholders in an UPDATE ... FROM differs by version
    if len(rows) == 1:  # one answer as soon as it arrives: no temp table for a single row
        source = "(SELECT " + ", ".join(f"CAST(${n} AS {t}) AS {n}" for n, t in _CHANGE_COLUMNS.items()) + ")"
        params.update(zip(_CHANGE_COLUMNS, rows[0], strict=True))
    else:
        conn.execute("CREATE OR REPLACE TEMP TABLE _ledger_changes ("
                     + ", ".join(f"{n} {t}" for n, t in _CHANGE_COLUMNS.items()) + ")")
        bulk_insert(conn, "_ledger_changes", _CHANGE_COLUMNS, rows)
        source = "_ledger_changes"
    return int(fetch_one(conn, _APPLY_SQL.format(source=source), params)[0])


@dataclass(frozen=True)
class GroupPlan:
    """A new group of a window; its lines are the rows of a relation (see ``store_plan``)."""

    record_group_id: str
    revision: int
    entitlement_id: str
    customer_id: str
    partner: str


_PLAN_COLUMNS = {"record_group_id": "VARCHAR", "revision": "INTEGER", "entitlement_id": "VARCHAR",
                 "customer_id": "VARCHAR", "partner": "VARCHAR"}
_STORE_PLAN_SQL = """INSERT INTO report_ledger (record_group_id, revision, window_start, window_end, entitlement_id,
    customer_id, partner, timestamp, records, status, dollars, created_at, updated_at)
SELECT g.record_group_id, g.revision, $start, $end, g.entitlement_id, g.customer_id, g.partner, $timestamp,
       l.records, 'pending', l.dollars, $now, $now
FROM {groups} g JOIN (
    SELECT l.entitlement_id,
           to_json(map(list(l.dimension_key ORDER BY l.dimension_key),
                       list(CAST(l.quantity AS VARCHAR) ORDER BY l.dimension_key))) AS records,
           -- what the group is worth at the entitlement's prices: the revenue at stake if it expires
           coalesce(sum(CAST(l.quantity * m.rate AS {qty})), 0) AS dollars
    FROM {lines} l LEFT JOIN {matches} m ON m.entitlement_id = l.entitlement_id AND m.target = l.dimension_key
    GROUP BY l.entitlement_id
) l USING (entitlement_id)"""


def store_plan(conn: duckdb.DuckDBPyConnection, window: Window, groups: Sequence[GroupPlan], lines: str,
               matches: str, now: datetime) -> None:
    """Replace the window's open groups by ``groups``, inserted ``pending`` with their lines (the rows of the
    relation ``lines``: entitlement_id, dimension_key, quantity) and priced at the entitlement's rates
    through the ``matches`` relation. Closed groups are history. Set-based: no row passes through Python."""
    open_ids = f"SELECT record_group_id FROM report_ledger WHERE window_start = ? AND NOT {CLOSED_SQL}"
    conn.execute(f"DELETE FROM report_lines WHERE record_group_id IN ({open_ids})", [window.start])
    conn.execute(f"DELETE FROM report_ledger WHERE window_start = ? AND NOT {CLOSED_SQL}", [window.start])
    if not groups:
        return
    conn.execute(
        _STORE_PLAN_SQL.format(groups=json_rows(_PLAN_COLUMNS, "$plan"), lines=lines, matches=matches, qty=QTY),
        {"start": window.start, "end": window.end, "timestamp": window.report_timestamp, "now": now,
         "plan": json_param(_PLAN_COLUMNS, [(g.record_group_id, g.revision, g.entitlement_id, g.customer_id, g.partner)
                                         for g in groups])},
    )
    conn.execute(f"""INSERT INTO report_lines (record_group_id, dimension_key, quantity)
        SELECT g.record_group_id, l.dimension_key, l.quantity FROM {lines} l
        JOIN report_ledger g ON g.entitlement_id = l.entitlement_id
        WHERE g.window_start = ? AND NOT {CLOSED_SQL}""", [window.start])


def flagged_groups(conn: duckdb.DuckDBPyConnection, window: Window) -> list[tuple[str, str, str, str, str]]:
    """(group, entitlement, partner, Suger status, message) of groups Suger marked INVALID, could not
    forward (REPORT_FAILED) or holds in a status this version does not know, as last polled."""
    return conn.execute(
        """SELECT record_group_id, entitlement_id, partner, suger_status,
                  CASE WHEN list_contains(?::VARCHAR[], suger_status) THEN coalesce(message, '')
                       ELSE 'a Suger status this version does not know: the group is not counted as reported' END
        FROM report_ledger WHERE window_start >= ? AND window_start < ?
          AND (list_contains(?::VARCHAR[], suger_status) OR NOT list_contains(?::VARCHAR[], suger_status))
        ORDER BY 1""",
        [list(SUGER_STATUSES), window.start, window.end, list(NEEDS_ATTENTION), list(SUGER_STATUSES)],
    ).fetchall()


def suger_status_counts(conn: duckdb.DuckDBPyConnection, window: Window) -> dict[str, int]:
    """Suger statuses of the groups Suger holds or refused."""
    return dict(conn.execute(
        """SELECT coalesce(suger_status, 'unknown'), count(*) FROM report_ledger
        WHERE window_start >= ? AND window_start < ? AND status IN ('sent', 'accepted', 'rejected')
        GROUP BY 1""",
        [window.start, window.end],
    ).fetchall())


def handovers(
    conn: duckdb.DuckDBPyConnection, window: Window
) -> list[tuple[str, datetime, datetime | None, datetime | None, Decimal]]:
    """(partner, timestamp, entitlement ended at, handed over at, dollars) of the groups handed to Suger or
    still waiting to be (``None``): what the deadline check weighs against each marketplace's deadline."""
    return conn.execute(
        f"""SELECT partner, timestamp, {ENDED_AT_SQL}, CASE WHEN status = 'pending' THEN NULL ELSE sent_at END,
                  coalesce(dollars, 0)
        FROM report_ledger WHERE window_start >= ? AND window_start < ?
          AND status IN ('pending', 'sent', 'accepted') ORDER BY timestamp, record_group_id""",
        [window.start, window.end],
    ).fetchall()


def expired_by_partner(conn: duckdb.DuckDBPyConnection, window: Window) -> list[tuple[str, int, Decimal]]:
    """(partner, groups, dollars) that expired unsent."""
    return conn.execute(
        """SELECT partner, count(*), coalesce(sum(dollars), 0) FROM report_ledger
        WHERE window_start >= ? AND window_start < ? AND status = 'expired' GROUP BY 1 ORDER BY 1""",
        [window.start, window.end],
    ).fetchall()


def _outcome_rank(status: str) -> str:
    """SQL: the rank of a report ``status`` in core.reconciliation.OUTCOMES (the first outcome ranks highest,
    0 for a status that decides nothing)."""
    whens = " ".join(f"WHEN {status} IN {sql_list(statuses)} THEN {len(OUTCOMES) - i}"
                     for i, (_, statuses) in enumerate(OUTCOMES))
    return f"(CASE {whens} ELSE 0 END)"


def outcome_sql(rank: str) -> str:
    """SQL: the outcome named by a rank of :func:`_outcome_rank` (NULL for 0)."""
    whens = " ".join(f"WHEN {rank} = {len(OUTCOMES) - i} THEN '{name}'" for i, (name, _) in enumerate(OUTCOMES))
    return f"(CASE {whens} END)"


def deciding_reports(groups: str) -> str:
    """SQL: per group of ``groups`` (a SQL relation of record_group_id) named by a stored report, the deciding
    report (highest outcome rank, then the latest), its message and rank."""
    return f"""SELECT mg.record_group_id, r.report_id, r.message, {_outcome_rank('r.status')} AS rank
        FROM marketplace_report_groups mg JOIN marketplace_reports r USING (report_id)
        WHERE mg.record_group_id IN ({groups})
        QUALIFY row_number() OVER (PARTITION BY mg.record_group_id
                                   ORDER BY {_outcome_rank('r.status')} DESC, r.creation_time DESC, r.report_id) = 1"""


_IDS = """SELECT unnest(from_json(CAST($ids AS VARCHAR), '["VARCHAR"]'))"""


def record_marketplace_outcomes(conn: duckdb.DuckDBPyConnection, group_ids: Sequence[str], now: datetime) -> int:
    """What the marketplace did with our groups among ``group_ids``, from every stored report naming them:
    ``marketplace_status`` billed / failed / in_flight (core.reconciliation.OUTCOMES), the deciding report and
    its message (a refusal's reason). Ledger ``status`` is Suger's side and is not touched."""
    if not group_ids:
        return 0
    return int(fetch_one(conn, f"""UPDATE report_ledger g SET marketplace_status = {outcome_sql('d.rank')},
            marketplace_report_id = d.report_id, marketplace_message = d.message,
            updated_at = CAST($now AS TIMESTAMPTZ)
        FROM ({deciding_reports(_IDS)}) d
        WHERE g.record_group_id = d.record_group_id
          AND (g.marketplace_status IS DISTINCT FROM {outcome_sql('d.rank')}
               OR g.marketplace_report_id IS DISTINCT FROM d.report_id)""",
        {"now": now, "ids": json.dumps(sorted(set(group_ids)))})[0])
