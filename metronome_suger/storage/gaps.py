"""What ``mapping_completeness`` and ``customer_linkage`` read for one window (the mapping gaps are also
re-checked before sending)."""

from datetime import datetime
from decimal import Decimal

from metronome_suger.core.conversion import AMOUNT_SOURCE_KEY, MappingGap, find_gaps
from metronome_suger.storage.window import WindowScope


def mapping_gaps(scope: WindowScope, amount_mode: bool) -> list[MappingGap]:
    """Unmapped source keys × partners in use, and mapped targets missing (or ambiguous) on entitlements."""
    conn, window = scope.conn, scope.window
    partners = [r[0] for r in conn.execute(f"SELECT DISTINCT partner FROM {scope.links} ORDER BY 1").fetchall()]
    if amount_mode:
        keys = [(AMOUNT_SOURCE_KEY, "the amount modes report under this key")]
    else:
        keys = conn.execute(
            f"""SELECT name, 'reportable billable metric' FROM billable_metrics
            WHERE snapshot_at = (SELECT max(snapshot_at) FROM billable_metrics) AND whitelisted AND NOT archived
            UNION
            SELECT m.name, 'has usage in ' || ? FROM usage u
            JOIN billable_metrics m ON m.metric_id = u.metric_id
                AND m.snapshot_at = (SELECT max(snapshot_at) FROM billable_metrics) AND m.whitelisted
            JOIN {scope.links} l ON l.customer_id = u.customer_id
            WHERE u.window_start = ? AND u.value <> 0""",
            [str(window), window.start],
        ).fetchall()
    reasons: dict[str, str] = {}
    for key, why in keys:  # a key with usage is the stronger reason to name
        if key not in reasons or why.startswith("has usage"):
            reasons[key] = why
    required = [(p, k, why) for p in partners for k, why in reasons.items()]
    return find_gaps(required, scope.mapping, scope.linked_entitlements())


def unlinked_usage(scope: WindowScope) -> list[tuple[str, str, Decimal, list[tuple[str, str, datetime | None]]]]:
    """(customer, source key, quantity, [(entitlement, status, end time)]) of source rows whose customer has
    no usable link for the window; the list holds the customer's entitlements that are not usable for it."""
    rows = scope.conn.execute(
        f"""SELECT s.customer_id, s.source_key, s.value,
                   coalesce((SELECT list(struct_pack(id := e.entitlement_id, status := coalesce(e.status, ''),
                                                     ended := e.end_time) ORDER BY e.entitlement_id)
                             FROM entitlements e
                             WHERE e.snapshot_at = (SELECT max(snapshot_at) FROM entitlements)
                               AND e.metronome_customer_id = s.customer_id), [])
        FROM {scope.source} s
        WHERE s.value <> 0 AND s.customer_id NOT IN (SELECT customer_id FROM {scope.links})
        ORDER BY 1, 2"""
    ).fetchall()
    return [(customer, key, value, [(e["id"], e["status"], e["ended"]) for e in ents])
            for customer, key, value, ents in rows]


def multi_linked(scope: WindowScope) -> list[tuple[str, int, str]]:
    """(customer, entitlements, partners) of customers with a source value linked to more than one
    entitlement: in the amount modes each of them is sent the same invoice dollars."""
    return scope.conn.execute(
        f"""SELECT l.customer_id, count(DISTINCT l.entitlement_id),
                   string_agg(DISTINCT l.partner, ', ' ORDER BY l.partner)
        FROM {scope.links} l WHERE l.customer_id IN (SELECT customer_id FROM {scope.source} WHERE value <> 0)
        GROUP BY 1 HAVING count(DISTINCT l.entitlement_id) > 1 ORDER BY 1"""
    ).fetchall()
