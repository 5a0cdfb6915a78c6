"""The report ledger: one row per record group, what was sent and what Suger answered.

Status transitions: pending → sent (Suger stored it; 201 or 409) → accepted (forwarded to the
marketplace); pending → rejected (Suger refused it; its message is kept); pending → expired (past the
marketplace deadline, never sent).
"""

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import duckdb

from metronome_suger.core.windows import Window

STATUSES = ("pending", "sent", "accepted", "rejected", "expired")


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


def _group(row: tuple) -> LedgerGroup:
    gid, rev, ent, cust, partner, wstart, ts, records, status = row
    return LedgerGroup(gid, rev, ent, cust, partner, wstart, ts,
                       {k: Decimal(v) for k, v in json.loads(records).items()}, status)


_COLUMNS = ("record_group_id, revision, entitlement_id, customer_id, partner, window_start, "
            "timestamp, records, status")


def groups_in_window(conn: duckdb.DuckDBPyConnection, window: Window, statuses: tuple[str, ...] = STATUSES) -> list[LedgerGroup]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM report_ledger WHERE window_start >= ? AND window_start < ? "
        "AND list_contains(?::VARCHAR[], status) ORDER BY timestamp, entitlement_id, revision",
        [window.start, window.end, list(statuses)],
    ).fetchall()
    return [_group(r) for r in rows]


def record_answer(
    conn: duckdb.DuckDBPyConnection,
    record_group_id: str,
    *,
    status: str,
    now: datetime,
    suger_status: str | None = None,
    message: str | None = None,
    sent: bool = True,
) -> None:
    """Write Suger's answer for one group as soon as it arrives (a crash loses at most one answer)."""
    if status not in STATUSES:
        raise ValueError(f"unknown ledger status {status!r}")
    conn.execute(
        """UPDATE report_ledger SET status = ?, suger_status = coalesce(?, suger_status),
            message = ?, attempts = attempts + ?, sent_at = CASE WHEN ? THEN ? ELSE sent_at END,
            answered_at = CASE WHEN ? THEN ? ELSE answered_at END, updated_at = ?
        WHERE record_group_id = ?""",
        [status, suger_status, message, 1 if sent else 0, sent, now, sent, now, now, record_group_id],
    )

