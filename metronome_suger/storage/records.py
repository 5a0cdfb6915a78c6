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
from metronome_suger.storage.db import fetch_one
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
SELECT coalesce(t.entitlement_id, r.entitlement_id) AS entitlement_id, coalesce(t.partner, r.partner),
       t.customer_id, coalesce(t.dimension_key, r.dimension_key) AS dimension_key,
       coalesce(t.total, 0) AS target, coalesce(r.total, 0) AS reported
FROM target t FULL JOIN reported r
  ON r.entitlement_id = t.entitlement_id AND r.dimension_key = t.dimension_key
ORDER BY 1, 4
"""


@dataclass
class RecordsResult:
    groups: list[GroupPlan] = field(default_factory=list)
    lines: int = 0
    over_reported: list[tuple[str, str, Decimal, Decimal]] = field(default_factory=list)


def plan_groups(scope: WindowScope, *, org_id: str, billing_mode: str, now: datetime) -> RecordsResult:
    """Plan the window's groups from the scope's converted relation and store them (lines, ledger,
    over-reporting)."""
    conn, window = scope.conn, scope.window
    deltas = conn.execute(DELTA_SQL.format(converted=scope.converted, closed=CLOSED_SQL), [window.start]).fetchall()
    revisions = dict(conn.execute(
        f"""SELECT entitlement_id, max(revision) FILTER (WHERE {CLOSED_SQL})
        FROM report_ledger WHERE window_start = ? GROUP BY entitlement_id""",
        [window.start],
    ).fetchall())
    result = RecordsResult()
    plans: dict[str, GroupPlan] = {}
    for entitlement_id, partner, customer_id, dim, target, reported in deltas:
        if target > reported:
            plan = plans.get(entitlement_id)
            if plan is None:
                last = revisions.get(entitlement_id)
                revision = 0 if last is None else last + 1
                plan = plans[entitlement_id] = GroupPlan(
                    record_group_id(org_id, entitlement_id, billing_mode, window.start, revision),
                    revision, entitlement_id, customer_id or "", partner or "", {},
                )
            plan.records[dim] = target - reported
        elif target < reported:
            result.over_reported.append((entitlement_id, dim, reported, target))
    result.groups = list(plans.values())
    _store(scope, result, now)
    return result


def _store(scope: WindowScope, result: RecordsResult, now: datetime) -> None:
    conn, window = scope.conn, scope.window
    conn.execute(  # the lines of closed groups are history; open ones are recomputed
        f"""DELETE FROM usage_records WHERE window_start = ? AND record_group_id NOT IN
        (SELECT record_group_id FROM report_ledger WHERE window_start = ? AND {CLOSED_SQL})""",
        [window.start, window.start],
    )
    store_plan(conn, window, result.groups, scope.matches, now)
    plan = [(g.entitlement_id, g.record_group_id, g.revision) for g in result.groups]
    conn.execute(
        f"""INSERT INTO usage_records
        SELECT p.record_group_id, p.revision, ?, ?, c.entitlement_id, c.customer_id, c.partner,
               c.source_key, c.origin_quantity, c.dimension_key, c.mapping_mode, c.multiplier,
               c.rate, coalesce(c.quantity, 0), ?
        FROM {scope.converted} c
        JOIN (SELECT unnest(?::VARCHAR[]) AS entitlement_id, unnest(?::VARCHAR[]) AS record_group_id,
                     unnest(?::INTEGER[]) AS revision) p USING (entitlement_id)""",
        [window.start, window.end, now, [p[0] for p in plan], [p[1] for p in plan], [p[2] for p in plan]],
    )
    result.lines = int(fetch_one(
        conn, "SELECT count(*) FROM usage_records WHERE window_start = ? AND computed_at = ?", [window.start, now])[0])
    conn.execute("DELETE FROM over_reported WHERE window_start = ?", [window.start])
    if result.over_reported:
        conn.executemany(
            "INSERT INTO over_reported VALUES (?, ?, ?, ?, ?, ?)",
            [(window.start, e, d, rep, cur, now) for e, d, rep, cur in result.over_reported],
        )
