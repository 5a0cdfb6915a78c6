"""Unpartitioned snapshot assets: Metronome customers and metrics, Suger entitlement links.

Each run appends a snapshot (history kept); partitioned assets read the latest one. Linkage is
re-resolved on every run because renewals, upsells and plan changes create new terms and entitlements.
"""

from datetime import datetime, timezone

import dagster as dg

from metronome_suger.config import AppConfig, ConfigError
from metronome_suger.core.conversion import Metric, UnknownMetricError, whitelisted_ids
from metronome_suger.linkage import resolve_links
from metronome_suger.orchestration.resources import (
    MetronomeResource,
    SafeDuckDBResource,
    SugerResource,
)
from metronome_suger.storage.db import QTY, bulk_insert, table_markdown

POOL = "metronome_suger_duckdb"
GROUP = "metronome_suger"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def build_snapshot_assets(config: AppConfig) -> list[dg.AssetsDefinition]:
    @dg.asset(group_name=GROUP, kinds={"duckdb"}, pool=POOL)
    def metronome_customers(
        metronome: MetronomeResource, duckdb: SafeDuckDBResource
    ) -> dg.MaterializeResult:
        """Metronome customers (active and archived), one snapshot per run."""
        with metronome.get_client() as client:
            customers = client.list_customers(include_archived=True)
        now = _now()
        with duckdb.get_connection() as conn:
            bulk_insert(
                conn,
                "customers",
                {"snapshot_at": "TIMESTAMPTZ", "customer_id": "VARCHAR", "name": "VARCHAR",
                 "external_id": "VARCHAR", "archived": "BOOLEAN"},
                [(now, c.id, c.name, c.external_id, c.archived) for c in customers],
            )
            preview = table_markdown(
                conn, "SELECT customer_id, name, archived FROM customers WHERE snapshot_at = ?", [now]
            )
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(customers),
                "archived": sum(1 for c in customers if c.archived),
                "preview": dg.MetadataValue.md(preview),
            }
        )

    @dg.asset(group_name=GROUP, kinds={"duckdb"}, pool=POOL)
    def metronome_billable_metrics(
        context: dg.AssetExecutionContext, metronome: MetronomeResource, duckdb: SafeDuckDBResource
    ) -> dg.MaterializeResult:
        """Suger's "Billable Metric Full List", archived included, with the whitelist flag."""
        with metronome.get_client() as client:
            metrics = client.list_billable_metrics(include_archived=True)
        plain = [Metric(m.id, m.name, m.archived) for m in metrics]
        try:
            chosen = whitelisted_ids(config, plain)
            problem = None
        except UnknownMetricError as exc:
            chosen, problem = set(), str(exc)
        now = _now()
        with duckdb.get_connection() as conn:
            bulk_insert(
                conn,
                "billable_metrics",
                {"snapshot_at": "TIMESTAMPTZ", "metric_id": "VARCHAR", "name": "VARCHAR",
                 "aggregation_type": "VARCHAR", "archived": "BOOLEAN", "whitelisted": "BOOLEAN"},
                [(now, m.id, m.name, m.aggregation_type, m.archived, m.id in chosen) for m in metrics],
            )
            preview = table_markdown(
                conn,
                "SELECT name, metric_id, aggregation_type, archived, whitelisted FROM billable_metrics "
                "WHERE snapshot_at = ? ORDER BY name",
                [now],
            )
        if problem:  # the snapshot is stored first: nothing fetched is lost
            raise dg.Failure(description=problem)
        context.log.info(f"{len(chosen)} of {len(metrics)} billable metrics are reportable")
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(metrics),
                "whitelisted": len(chosen),
                "archived": sum(1 for m in metrics if m.archived),
                "whitelist_enabled": config.billable_metric_whitelist.enabled,
                "preview": dg.MetadataValue.md(preview),
            }
        )

    @dg.asset(group_name=GROUP, kinds={"duckdb"}, pool=POOL)
    def suger_entitlements(
        context: dg.AssetExecutionContext, suger: SugerResource, duckdb: SafeDuckDBResource
    ) -> dg.MaterializeResult:
        """Metronome customer → Suger entitlement links, as Suger resolves them (CONTRACT §4)."""
        with suger.get_client() as client:
            try:
                links = resolve_links(client, config)
            except ConfigError as exc:
                raise dg.Failure(description=str(exc)) from None
        now = _now()
        with duckdb.get_connection() as conn:
            bulk_insert(
                conn,
                "entitlements",
                {"snapshot_at": "TIMESTAMPTZ", "metronome_customer_id": "VARCHAR",
                 "buyer_id": "VARCHAR", "entitlement_id": "VARCHAR", "partner": "VARCHAR",
                 "status": "VARCHAR", "start_time": "TIMESTAMPTZ", "end_time": "TIMESTAMPTZ",
                 "term_id": "VARCHAR", "link_source": "VARCHAR"},
                [(now, link.metronome_customer_id, link.buyer_id, link.entitlement.id,
                  link.entitlement.partner, link.entitlement.status, link.entitlement.startTime,
                  link.entitlement.endTime, link.entitlement.entitlementTermID, link.source)
                 for link in links],
            )
            seen = {link.entitlement.id: link.entitlement for link in links}
            bulk_insert(
                conn,
                "entitlement_dimensions",
                {"snapshot_at": "TIMESTAMPTZ", "entitlement_id": "VARCHAR",
                 "dimension_key": "VARCHAR", "dimension_name": "VARCHAR", "rate": QTY},
                [(now, e.id, d.key, d.name, d.rate)
                 for e in seen.values() for d in (e.info.dimensions if e.info else [])],
            )
            preview = table_markdown(
                conn,
                "SELECT metronome_customer_id, entitlement_id, partner, status, term_id, link_source "
                "FROM entitlements WHERE snapshot_at = ? ORDER BY 1, 3",
                [now],
            )
        partners = sorted({e.partner for e in seen.values()})
        context.log.info(f"{len(links)} links to {len(seen)} entitlements on {', '.join(partners) or 'no partner'}")
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(links),
                "linked_customers": len({link.metronome_customer_id for link in links}),
                "entitlements": len(seen),
                "partners": ", ".join(partners),
                "preview": dg.MetadataValue.md(preview),
            }
        )

    return [metronome_customers, metronome_billable_metrics, suger_entitlements]
