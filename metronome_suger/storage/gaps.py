"""What ``mapping_completeness`` enforces, read from DuckDB for one window (also re-checked before sending)."""

from collections.abc import Sequence
from decimal import Decimal

import duckdb

from metronome_suger.config import AMOUNT_SOURCE_KEY
from metronome_suger.core.conversion import LinkedEntitlement, MappingGap, MappingRow, find_gaps
from metronome_suger.core.windows import Window
from metronome_suger.storage.records import load_links


def mapping_gaps(
    conn: duckdb.DuckDBPyConnection, window: Window, mapping: Sequence[MappingRow], amount_mode: bool
) -> list[MappingGap]:
    """Unmapped source keys × partners in use, and mapped dimensions missing from entitlements."""
    load_links(conn, window)
    partners = [r[0] for r in conn.execute("SELECT DISTINCT partner FROM _links ORDER BY 1").fetchall()]
    if amount_mode:
        keys = [(AMOUNT_SOURCE_KEY, "the amount modes report under this key")]
    else:
        keys = conn.execute(
            """SELECT name, 'reportable billable metric' FROM billable_metrics
            WHERE snapshot_at = (SELECT max(snapshot_at) FROM billable_metrics) AND whitelisted AND NOT archived
            UNION
            SELECT m.name, 'has usage in ' || ? FROM usage u
            JOIN billable_metrics m ON m.metric_id = u.metric_id
                AND m.snapshot_at = (SELECT max(snapshot_at) FROM billable_metrics) AND m.whitelisted
            JOIN _links l ON l.customer_id = u.customer_id
            WHERE u.window_start = ? AND u.value <> 0""",
            [str(window), window.start],
        ).fetchall()
    reasons: dict[str, str] = {}
    for key, why in keys:  # a key with usage is the stronger reason to name
        if key not in reasons or why.startswith("has usage"):
            reasons[key] = why
    required = [(p, k, why) for p in partners for k, why in reasons.items()]
    partner_of = dict(conn.execute("SELECT DISTINCT entitlement_id, partner FROM _links").fetchall())
    dims: dict[str, list[tuple[str, str | None, Decimal | None]]] = {e: [] for e in partner_of}
    for ent_id, key, name, rate in conn.execute(
        """SELECT entitlement_id, dimension_key, dimension_name, rate FROM _dims
        WHERE entitlement_id IN (SELECT entitlement_id FROM _links)"""
    ).fetchall():
        dims[ent_id].append((key, name, rate))
    ents = [LinkedEntitlement.of(e, partner_of[e], d) for e, d in dims.items()]
    return find_gaps(required, mapping, ents)


def unlinked_usage(conn: duckdb.DuckDBPyConnection, window: Window) -> list[tuple[str, str, Decimal]]:
    """(customer, source key, quantity) of ``_source`` rows whose customer has no usable link."""
    load_links(conn, window)
    return conn.execute(
        """SELECT s.customer_id, s.source_key, s.value FROM _source s
        WHERE s.value <> 0 AND s.customer_id NOT IN (SELECT customer_id FROM _links)
        ORDER BY 1, 2"""
    ).fetchall()


def multi_linked(conn: duckdb.DuckDBPyConnection) -> list[tuple[str, int, str]]:
    """(customer, entitlements, partners) of ``_source`` customers linked to more than one entitlement:
    in the amount modes each of them is sent the same invoice dollars. Call after ``unlinked_usage``."""
    return conn.execute(
        """SELECT l.customer_id, count(DISTINCT l.entitlement_id), string_agg(DISTINCT l.partner, ', ' ORDER BY l.partner)
        FROM _links l WHERE l.customer_id IN (SELECT customer_id FROM _source WHERE value <> 0)
        GROUP BY 1 HAVING count(DISTINCT l.entitlement_id) > 1 ORDER BY 1"""
    ).fetchall()
