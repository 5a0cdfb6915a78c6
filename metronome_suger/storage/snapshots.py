"""Snapshot tables (history kept: one row set per ``snapshot_at``): customers, billable metrics,
customer → entitlement links and the entitlements' dimensions."""

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

import duckdb

from metronome_suger.storage.db import QTY, bulk_insert, transaction

# Each (entitlement, dimension)'s rate in the latest entitlement snapshot: what a unit of it is worth now.
LATEST_RATES_SQL = """SELECT entitlement_id, dimension_key, max(rate) AS rate FROM entitlement_dimensions
    WHERE snapshot_at = (SELECT max(snapshot_at) FROM entitlement_dimensions) GROUP BY ALL"""

def store_customers(
    conn: duckdb.DuckDBPyConnection, at: datetime, rows: Sequence[tuple[str, str | None, str | None, bool]]
) -> int:
    """(customer id, name, external id, archived) rows."""
    return bulk_insert(conn, "customers",
                       {"snapshot_at": "TIMESTAMPTZ", "customer_id": "VARCHAR", "name": "VARCHAR",
                        "external_id": "VARCHAR", "archived": "BOOLEAN"},
                       [(at, *row) for row in rows])


def store_metrics(
    conn: duckdb.DuckDBPyConnection, at: datetime, rows: Sequence[tuple[str, str, str | None, bool, bool]]
) -> int:
    """(metric id, name, aggregation type, archived, whitelisted) rows."""
    return bulk_insert(conn, "billable_metrics",
                       {"snapshot_at": "TIMESTAMPTZ", "metric_id": "VARCHAR", "name": "VARCHAR",
                        "aggregation_type": "VARCHAR", "archived": "BOOLEAN", "whitelisted": "BOOLEAN"},
                       [(at, *row) for row in rows])


LinkRow = tuple[str, str | None, str, str | None, str | None, datetime | None, datetime | None, str | None, str,
                str | None]
DimensionRow = tuple[str, str, str | None, Decimal | None]


def store_links(
    conn: duckdb.DuckDBPyConnection, at: datetime, links: Sequence[LinkRow], dimensions: Sequence[DimensionRow]
) -> None:
    """Links (customer, buyer, entitlement, partner, status, start, end, term, source, dimensions
    problem) and the dimensions (entitlement, key, name, rate) of the linked entitlements. A
    dimensions problem says why an entitlement's dimension list is incomplete (mapping_completeness
    then blocks its windows)."""
    with transaction(conn):  # one snapshot, seen whole: a concurrent reader never finds entitlements without dimensions
        bulk_insert(conn, "entitlements",
                    {"snapshot_at": "TIMESTAMPTZ", "metronome_customer_id": "VARCHAR", "buyer_id": "VARCHAR",
                     "entitlement_id": "VARCHAR", "partner": "VARCHAR", "status": "VARCHAR",
                     "start_time": "TIMESTAMPTZ", "end_time": "TIMESTAMPTZ", "term_id": "VARCHAR",
                     "link_source": "VARCHAR", "dimensions_problem": "VARCHAR"},
                    [(at, *row) for row in links])
        bulk_insert(conn, "entitlement_dimensions",
                    {"snapshot_at": "TIMESTAMPTZ", "entitlement_id": "VARCHAR", "dimension_key": "VARCHAR",
                     "dimension_name": "VARCHAR", "rate": QTY},
                    [(at, *row) for row in dimensions])
