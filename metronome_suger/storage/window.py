"""The temp tables of one window's work, owned by one object and reached only through it.

``MappingTables`` loads, once per run, the mapping rows and the dimension matches of every mapped
target (decided by ``core.conversion.match_dimension``, so SQL never re-derives the rule). ``WindowScope``
adds, for one window, the customer → entitlement links usable in it and, when given, the window's source
(customer, source key, value) converted through them. The set-based SQL of records, gaps and
verification takes the relation names from these objects.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import duckdb

from metronome_suger.core.conversion import Dimension, LinkedEntitlement, MappingRow, dimension_matches
from metronome_suger.core.linkage import ENDED_STATUSES, USABLE_STATUSES
from metronome_suger.core.windows import Window
from metronome_suger.storage.db import QTY, bulk_insert, json_param, json_rows, sql_list

# ``core.linkage.reports_usage`` in SQL, over an ``entitlements`` row. Usage is reported to a link only for
# windows that start before its end time (and end after its start): see ``WindowScope``.
USABLE_LINK_SQL = (f"(status IN {sql_list(USABLE_STATUSES)} "
                   f"OR (status IN {sql_list(ENDED_STATUSES)} AND end_time IS NOT NULL))")


@dataclass(frozen=True)
class Source:
    """A relation of (customer_id, source_key, value) for one window, and the problems that forbid
    sending anything for it (each names the customer, the key and the window)."""

    relation: str
    problems: list[str] = field(default_factory=list)


CONVERT_SQL = """
SELECT l.entitlement_id, l.partner, s.customer_id, s.source_key,
       CAST(s.value AS {qty}) AS origin_quantity, m.dimension_key, m.mapping_mode,
       m.multiplier, d.rate,
       CASE WHEN m.mapping_mode = 'QUANTITY' THEN CAST(s.value * m.multiplier AS {qty})
            WHEN d.rate > 0 THEN exact_div(s.value, d.rate) END AS quantity
FROM {source} s
JOIN {links} l ON l.customer_id = s.customer_id
JOIN {mapping} m ON m.partner = l.partner AND m.source_key = s.source_key
LEFT JOIN {matches} d ON d.entitlement_id = l.entitlement_id AND d.target = m.dimension_key
WHERE s.value <> 0
"""


# A match of one dimension list, by the first entitlement having it (``first``).
_SHARED_MATCH = {"first": "VARCHAR", "target": "VARCHAR", "dimension_key": "VARCHAR", "rate": QTY}


class MappingTables:
    """The mapping rows and the dimension matches of every mapped target. They depend on the latest
    entitlement snapshot and the configuration, not on the window: loaded once per run, shared by its
    windows' scopes."""

    mapping_table = "_mapping"
    matches = "_matches"

    def __init__(self, conn: duckdb.DuckDBPyConnection, mapping: Sequence[MappingRow]) -> None:
        self.conn, self.mapping = conn, list(mapping)
        conn.execute(f"CREATE OR REPLACE TEMP TABLE {self.mapping_table} (partner VARCHAR, source_key VARCHAR, "
                     f"dimension_key VARCHAR, mapping_mode VARCHAR, multiplier {QTY})")
        bulk_insert(conn, self.mapping_table,
                    {"partner": "VARCHAR", "source_key": "VARCHAR", "dimension_key": "VARCHAR",
                     "mapping_mode": "VARCHAR", "multiplier": QTY},
                    [(r.partner, r.source_key, r.dimension_key, r.mapping_mode, r.multiplier) for r in mapping])
        self.entitlements = self._entitlements()
        # Matched once per shared dimension list (the first entitlement of each stands for it), then spread in SQL.
        first = {ids[0] for ids in self._sharing.values()}
        matched = dimension_matches([e for e in self.entitlements if e.entitlement_id in first], self.mapping)
        conn.execute(
            f"""CREATE OR REPLACE TEMP TABLE {self.matches} AS
            SELECT s.entitlement_id, m.target, m.dimension_key, m.rate
            FROM {json_rows(_SHARED_MATCH)} m
            JOIN {self._SETS} f ON f.entitlement_id = m.first JOIN {self._SETS} s ON s.set_id = f.set_id""",
            [json_param(_SHARED_MATCH, [(m.entitlement_id, m.target, m.dimension_key, m.rate) for m in matched])],
        )

    _SETS = "_dimension_sets"  # entitlement -> the id of its (partner, dimension list, problem)

    def _entitlements(self) -> list[LinkedEntitlement]:
        """Every entitlement of the latest snapshot with its dimensions (linked for a window or not:
        groups already in the ledger are priced and verified even after their link ended). Entitlements of
        one product share one dimension tuple (read once per distinct list, not once per entitlement)."""
        self.conn.execute(
            f"""CREATE OR REPLACE TEMP TABLE {self._SETS} AS
            WITH per_entitlement AS (
                SELECT e.entitlement_id, any_value(e.partner) AS partner, any_value(e.dimensions_problem) AS problem,
                       list(DISTINCT struct_pack(k := d.dimension_key, n := d.dimension_name, r := d.rate))
                           FILTER (WHERE d.dimension_key IS NOT NULL) AS dims
                FROM entitlements e LEFT JOIN entitlement_dimensions d
                  ON d.entitlement_id = e.entitlement_id AND d.snapshot_at = e.snapshot_at
                WHERE e.snapshot_at = (SELECT max(snapshot_at) FROM entitlements)
                GROUP BY e.entitlement_id)
            SELECT entitlement_id, partner, problem, list_sort(coalesce(dims, [])) AS dims,
                   dense_rank() OVER (ORDER BY partner, problem, list_sort(coalesce(dims, []))) AS set_id
            FROM per_entitlement"""
        )
        shared: dict[int, tuple[Dimension, ...]] = {}
        for set_id, dims in self.conn.execute(f"SELECT DISTINCT set_id, dims FROM {self._SETS}").fetchall():
            shared[set_id] = tuple(Dimension(d["k"], d["n"], None if d["r"] is None else Decimal(d["r"]))
                                   for d in dims)
        out: list[LinkedEntitlement] = []
        self._sharing: dict[int, list[str]] = {}
        for ent_id, partner, problem, set_id in self.conn.execute(
                f"SELECT entitlement_id, partner, problem, set_id FROM {self._SETS} ORDER BY 1").fetchall():
            out.append(LinkedEntitlement(ent_id, partner, shared[set_id], problem))
            self._sharing.setdefault(set_id, []).append(ent_id)
        return out


class WindowScope:
    """One window's links (and, given a source, its converted relation) over the run's mapping tables.
    The relations are temp tables of the connection: one scope is in use per connection at a time."""

    links = "_links"

    def __init__(self, tables: MappingTables, window: Window, source: Source | None = None) -> None:
        self.conn, self.window, self._source = tables.conn, window, source
        self.mapping, self.matches, self.entitlements = tables.mapping, tables.matches, tables.entitlements
        self.conn.execute(
            f"""CREATE OR REPLACE TEMP TABLE {self.links} AS
            SELECT DISTINCT metronome_customer_id AS customer_id, entitlement_id, partner
            FROM entitlements
            WHERE snapshot_at = (SELECT max(snapshot_at) FROM entitlements) AND {USABLE_LINK_SQL}
              AND (start_time IS NULL OR start_time < ?)
              AND (end_time IS NULL OR end_time > ?)""",
            [window.end, window.start],
        )
        if source is not None:
            self.conn.execute("CREATE OR REPLACE TEMP TABLE _converted AS "
                              + CONVERT_SQL.format(qty=QTY, source=source.relation, links=self.links,
                                                   mapping=tables.mapping_table, matches=self.matches))

    @property
    def source(self) -> str:
        return self._loaded().relation

    @property
    def converted(self) -> str:
        """The source joined with links, mapping and matches (one row per source row × target)."""
        self._loaded()
        return "_converted"

    def _loaded(self) -> Source:
        if self._source is None:
            raise ValueError(f"window {self.window}: this step needs the window's source, none was loaded")
        return self._source

    def linked_entitlements(self) -> list[LinkedEntitlement]:
        usable = {r[0] for r in self.conn.execute(f"SELECT DISTINCT entitlement_id FROM {self.links}").fetchall()}
        return [e for e in self.entitlements if e.entitlement_id in usable]
