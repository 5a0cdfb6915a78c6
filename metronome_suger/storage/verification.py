"""Reported vs Metronome, per customer × entitlement × dimension of a window (``usage_verification``)."""

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import duckdb

from metronome_suger.core.conversion import MappingRow
from metronome_suger.core.windows import Window
from metronome_suger.storage.records import CONVERT_SQL, load_links, load_mapping


@dataclass(frozen=True)
class Discrepancy:
    customer_id: str
    entitlement_id: str
    dimension_key: str
    metronome: Decimal  # what Metronome's current value converts to
    reported: Decimal  # what Suger holds (sent or accepted)
    rate: Decimal | None

    @property
    def difference(self) -> Decimal:
        return self.reported - self.metronome

    @property
    def dollars(self) -> Decimal | None:
        return None if self.rate is None else self.difference * self.rate

    def __str__(self) -> str:
        kind = "over" if self.difference > 0 else "under"
        money = "" if self.dollars is None else f" (${abs(self.dollars).normalize():f})"
        return (
            f"{kind}-reported {abs(self.difference).normalize():f} {self.dimension_key}{money}: customer "
            f"{self.customer_id}, entitlement {self.entitlement_id}, Metronome "
            f"{self.metronome.normalize():f}, reported {self.reported.normalize():f}"
        )


def discrepancies(
    conn: duckdb.DuckDBPyConnection, window: Window, mapping: Sequence[MappingRow]
) -> list[Discrepancy]:
    """Convert the window's ``_source`` (filled by the caller) and diff it with the ledger."""
    load_links(conn, window)
    load_mapping(conn, mapping)
    conn.execute(CONVERT_SQL)
    rows = conn.execute(
        """WITH target AS (
            SELECT entitlement_id, dimension_key, string_agg(DISTINCT customer_id, ',') AS customer_id,
                   sum(quantity) AS total, max(rate) AS rate
            FROM _converted WHERE quantity IS NOT NULL GROUP BY ALL
        ), reported AS (
            SELECT g.entitlement_id, l.dimension_key, string_agg(DISTINCT g.customer_id, ',') AS customer_id,
                   sum(l.quantity) AS total
            FROM report_ledger g JOIN report_lines l USING (record_group_id)
            WHERE g.window_start = ? AND g.status IN ('sent', 'accepted') GROUP BY ALL
        )
        SELECT coalesce(t.customer_id, r.customer_id), coalesce(t.entitlement_id, r.entitlement_id),
               coalesce(t.dimension_key, r.dimension_key), coalesce(t.total, 0), coalesce(r.total, 0),
               coalesce(t.rate, (SELECT max(rate) FROM _dims d WHERE d.entitlement_id = r.entitlement_id
                                 AND (d.dimension_key = r.dimension_key OR d.dimension_name = r.dimension_key)))
        FROM target t FULL JOIN reported r USING (entitlement_id, dimension_key)
        WHERE coalesce(t.total, 0) <> coalesce(r.total, 0)
        ORDER BY 1, 2, 3""",
        [window.start],
    ).fetchall()
    return [Discrepancy(*row) for row in rows]
