"""Set-based conversion of a window's source into record groups, and their revisions against the ledger.

The source of a window is a relation of (customer_id, source_key, value): Metronome usage per metric in
``quantity`` mode, the invoice-amount increase in dollars (key ``metronome``) in the amount modes.
``WindowScope`` joins it with the links, the mapping and the dimension matches into its converted
relation.

Exactly once: for each (entitlement, window, dimension) the converted total is compared with what the
ledger already holds as sent, accepted or expired; only the positive difference becomes a group, under
the next revision (a deterministic id). A group that was computed but never reached Suger (pending, or
refused on submission) is recomputed in place under the same id.
"""

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from metronome_suger.core.ids import record_group_id
from metronome_suger.storage.db import fetch_one, transaction
from metronome_suger.storage.ledger import CLOSED_SQL, GroupPlan, store_plan
from metronome_suger.storage.window import WindowScope

DELTA_SQL = """
WITH target AS (
    SELECT entitlement_id, any_value(partner) AS partner,
           string_agg(DISTINCT customer_id, ',' ORDER BY customer_id) AS customer_id,
           dimension_key, sum(quantity) AS total
    FROM {converted} WHERE quantity IS NOT NULL GROUP BY entitlement_id, dimension_key
), reported AS (
    SELECT g.entitlement_id, any_value(g.partner) AS partner, l.dimension_key, sum(l.quantity) AS total
    FROM report_ledger g JOIN report_lines l USING (record_group_id)
    WHERE g.window_start = ? AND {closed}
    GROUP BY g.entitlement_id, l.dimension_key
)
SELECT coalesce(t.entitlement_id, r.entitlement_id) AS entitlement_id, coalesce(t.partner, r.partner) AS partner,
       coalesce(t.customer_id, '') AS customer_id, coalesce(t.dimension_key, r.dimension_key) AS dimension_key,
       coalesce(t.total, 0) AS target, coalesce(r.total, 0) AS reported
FROM target t FULL JOIN reported r
  ON r.entitlement_id = t.entitlement_id AND r.dimension_key = t.dimension_key
"""
# One new group per entitlement with a dimension above what Suger holds, under the next revision; its
# customer and partner are those of its first such dimension.
NEW_GROUPS_SQL = """
SELECT d.entitlement_id, arg_min(d.partner, d.dimension_key), arg_min(d.customer_id, d.dimension_key),
       coalesce(any_value(r.last) + 1, 0)
FROM {deltas} d LEFT JOIN (
    SELECT entitlement_id, max(revision) AS last FROM report_ledger WHERE window_start = ? AND {closed}
    GROUP BY entitlement_id) r USING (entitlement_id)
WHERE d.target > d.reported GROUP BY d.entitlement_id ORDER BY 1
"""
DELTAS = "_deltas"  # the window's (entitlement, dimension) targets against what Suger holds, while planning
LINES = f"(SELECT entitlement_id, dimension_key, target - reported AS quantity FROM {DELTAS} WHERE target > reported)"


@dataclass
class RecordsResult:
    groups: int = 0
    lines: int = 0
    totals: dict[str, Decimal] = field(default_factory=dict)  # per dimension, over the new groups
    over_reported: list[tuple[str, str, Decimal, Decimal]] = field(default_factory=list)


def plan_groups(scope: WindowScope, *, org_id: str, billing_mode: str, now: datetime) -> RecordsResult:
    """Plan the window's groups from the scope's converted relation and store them (lines, ledger,
    over-reporting). Set-based: only the new groups' heads pass through Python, for their ids."""
    conn, window = scope.conn, scope.window
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {DELTAS} AS "
                 + DELTA_SQL.format(converted=scope.converted, closed=CLOSED_SQL), [window.start])
    groups = [GroupPlan(record_group_id(org_id, ent, billing_mode, window.start, revision), revision, ent,
                        customer or "", partner or "")
              for ent, partner, customer, revision in conn.execute(
                  NEW_GROUPS_SQL.format(deltas=DELTAS, closed=CLOSED_SQL), [window.start]).fetchall()]
    with transaction(conn):  # the window's plan is stored whole, or not at all
        conn.execute(  # the lines of closed groups are history; open ones are recomputed
            f"""DELETE FROM usage_records WHERE window_start = ? AND record_group_id NOT IN
            (SELECT record_group_id FROM report_ledger WHERE window_start = ? AND {CLOSED_SQL})""",
            [window.start, window.start],
        )
        store_plan(conn, window, groups, LINES, scope.matches, now)
        conn.execute(
            f"""INSERT INTO usage_records
            SELECT g.record_group_id, g.revision, ?, ?, c.entitlement_id, c.customer_id, c.partner,
                   c.source_key, c.origin_quantity, c.dimension_key, c.mapping_mode, c.multiplier,
                   c.rate, coalesce(c.quantity, 0), ?
            FROM {scope.converted} c JOIN report_ledger g ON g.entitlement_id = c.entitlement_id
            WHERE g.window_start = ? AND NOT {CLOSED_SQL}""",
            [window.start, window.end, now, window.start],
        )
        result = RecordsResult(groups=len(groups))
        result.lines = int(fetch_one(
            conn, "SELECT count(*) FROM usage_records WHERE window_start = ? AND computed_at = ?",
            [window.start, now])[0])
        result.totals = dict(conn.execute(f"SELECT dimension_key, sum(quantity) FROM {LINES} GROUP BY 1").fetchall())
        result.over_reported = conn.execute(f"""SELECT entitlement_id, dimension_key, reported, target FROM {DELTAS}
            WHERE target < reported ORDER BY 1, 2""").fetchall()
        conn.execute("DELETE FROM over_reported WHERE window_start = ?", [window.start])
        conn.execute(f"""INSERT INTO over_reported SELECT ?, entitlement_id, dimension_key, reported, target, ?
            FROM {DELTAS} WHERE target < reported""", [window.start, now])
    return result
