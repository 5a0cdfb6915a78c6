"""Reported vs Metronome, per customer × entitlement × dimension of a window (``usage_verification``)."""

from dataclasses import dataclass
from decimal import Decimal

from metronome_suger.storage.window import WindowScope


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


def discrepancies(scope: WindowScope) -> list[Discrepancy]:
    """Diff the scope's converted source with what the ledger holds as sent or accepted."""
    rows = scope.conn.execute(
        f"""WITH target AS (
            SELECT entitlement_id, dimension_key, string_agg(DISTINCT customer_id, ',') AS customer_id,
                   sum(quantity) AS total
            FROM {scope.converted} WHERE quantity IS NOT NULL GROUP BY ALL
        ), reported AS (
            SELECT g.entitlement_id, l.dimension_key, string_agg(DISTINCT g.customer_id, ',') AS customer_id,
                   sum(l.quantity) AS total
            FROM report_ledger g JOIN report_lines l USING (record_group_id)
            WHERE g.window_start = ? AND g.status IN ('sent', 'accepted') GROUP BY ALL
        )
        SELECT coalesce(t.customer_id, r.customer_id), coalesce(t.entitlement_id, r.entitlement_id) AS ent,
               coalesce(t.dimension_key, r.dimension_key) AS dim, coalesce(t.total, 0), coalesce(r.total, 0),
               m.rate
        FROM target t FULL JOIN reported r USING (entitlement_id, dimension_key)
        LEFT JOIN {scope.matches} m
          ON m.entitlement_id = coalesce(t.entitlement_id, r.entitlement_id)
         AND m.target = coalesce(t.dimension_key, r.dimension_key)
        WHERE coalesce(t.total, 0) <> coalesce(r.total, 0)
        ORDER BY 1, 2, 3""",
        [scope.window.start],
    ).fetchall()
    return [Discrepancy(*row) for row in rows]
