"""Ledger side of the Suger status sensor: the groups still waiting for Suger's verdict, and the
writes of what Suger says became of them.

All verdicts of a tick are applied by one set-based UPDATE in one transaction, so a tick never leaves
the ledger half-updated.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import duckdb

from metronome_suger.storage.db import bulk_insert
from metronome_suger.storage.ledger import STATUSES


@dataclass(frozen=True)
class AwaitingGroup:
    """A ``sent`` group: Suger stored it, the ledger does not know yet whether it reached the marketplace."""

    record_group_id: str
    entitlement_id: str
    partner: str
    timestamp: datetime
    sent_at: datetime
    retries: int
    suger_status: str | None


@dataclass(frozen=True)
class Verdict:
    """What to write for one group. ``retried`` counts one more call of Suger's retry endpoint."""

    record_group_id: str
    status: str
    suger_status: str
    message: str | None = None
    retried: bool = False


def awaiting_groups(conn: duckdb.DuckDBPyConnection, since: datetime) -> list[AwaitingGroup]:
    """Groups in ledger status ``sent`` that were sent at or after ``since``, oldest usage first."""
    rows = conn.execute(
        """SELECT record_group_id, entitlement_id, partner, timestamp, coalesce(sent_at, created_at),
                  retries, suger_status
        FROM report_ledger WHERE status = 'sent' AND coalesce(sent_at, created_at) >= ?
        ORDER BY timestamp, entitlement_id, revision""",
        [since],
    ).fetchall()
    return [AwaitingGroup(*row) for row in rows]


_VERDICT_COLUMNS = {
    "record_group_id": "VARCHAR", "status": "VARCHAR", "suger_status": "VARCHAR",
    "message": "VARCHAR", "retried": "BOOLEAN",
}


def apply_verdicts(conn: duckdb.DuckDBPyConnection, verdicts: Sequence[Verdict], now: datetime) -> int:
    """Write Suger's statuses (a ``None`` message keeps the stored one); returns the rows changed.

    Only rows still ``sent`` are touched: a run that re-sent or re-planned the group in between wins.
    """
    bad = sorted({v.status for v in verdicts} - set(STATUSES))
    if bad:
        raise ValueError(f"unknown ledger status(es) {bad}")
    if not verdicts:
        return 0
    conn.begin()
    try:
        conn.execute(
            "CREATE OR REPLACE TEMP TABLE _verdicts (record_group_id VARCHAR, status VARCHAR, "
            "suger_status VARCHAR, message VARCHAR, retried BOOLEAN)"
        )
        bulk_insert(conn, "_verdicts", _VERDICT_COLUMNS,
                    [(v.record_group_id, v.status, v.suger_status, v.message, v.retried) for v in verdicts])
        changed = conn.execute(
            """UPDATE report_ledger g SET status = v.status, suger_status = v.suger_status,
                message = coalesce(v.message, g.message),
                retries = g.retries + CASE WHEN v.retried THEN 1 ELSE 0 END, updated_at = ?
            FROM _verdicts v
            WHERE g.record_group_id = v.record_group_id AND g.status = 'sent'""",
            [now],
        ).fetchone()[0]
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return int(changed)
