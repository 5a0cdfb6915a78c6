"""``suger_usage_records``: converted record groups per window, with origin and converted lines kept."""

from collections.abc import Callable
from datetime import datetime, timezone

from typing import Any

import dagster as dg
import duckdb

from metronome_suger.config import AppConfig
from metronome_suger.core.conversion import Metric, mapping_rows
from metronome_suger.core.windows import Window
from metronome_suger.orchestration.partitions import context_windows, partitions_for
from metronome_suger.orchestration.resources import SafeDuckDBResource
from metronome_suger.orchestration.snapshots import GROUP, POOL
from metronome_suger.storage.db import table_markdown
from metronome_suger.storage.records import convert

# Fills the temp table ``_source(customer_id, source_key, value)`` for a window; returns problems
# (each names the customer, the key and the window) that forbid sending anything for that window.
SourceLoader = Callable[[duckdb.DuckDBPyConnection, Window], list[str]]


def latest_metrics(conn: duckdb.DuckDBPyConnection) -> list[Metric]:
    return [Metric(*row) for row in conn.execute(
        """SELECT metric_id, name, archived FROM billable_metrics
        WHERE snapshot_at = (SELECT max(snapshot_at) FROM billable_metrics)"""
    ).fetchall()]


def load_usage_source(conn: duckdb.DuckDBPyConnection, window: Window) -> list[str]:
    """Quantity mode: the window's usage of reportable metrics, keyed by metric name."""
    conn.execute(
        """CREATE OR REPLACE TEMP TABLE _source AS
        SELECT u.customer_id, m.name AS source_key, u.value
        FROM usage u JOIN billable_metrics m ON m.metric_id = u.metric_id
        WHERE m.snapshot_at = (SELECT max(snapshot_at) FROM billable_metrics) AND m.whitelisted
          AND u.window_start = ?""",
        [window.start],
    )
    negatives = conn.execute(
        "SELECT customer_id, source_key, value FROM _source WHERE value < 0 ORDER BY 1, 2"
    ).fetchall()
    return [
        f"negative usage {value} for customer {customer} metric '{metric}' in window {window}"
        for customer, metric, value in negatives
    ]


def build_records_asset(config: AppConfig, source_asset: str, load_source: SourceLoader) -> dg.AssetsDefinition:
    @dg.asset(
        group_name=GROUP,
        kinds={"duckdb"},
        pool=POOL,
        partitions_def=partitions_for(config),
        deps=[source_asset, "suger_entitlements", "metronome_billable_metrics"],
    )
    def suger_usage_records(
        context: dg.AssetExecutionContext, duckdb: SafeDuckDBResource
    ) -> dg.MaterializeResult:
        """Record groups per (entitlement, window, revision): only what is not yet at Suger."""
        problems: list[str] = []
        groups = lines = over = 0
        totals: dict[str, float] = {}
        now = datetime.now(timezone.utc)
        windows = context_windows(context, config.hourly)
        with duckdb.get_connection() as conn:
            mapping = mapping_rows(config, latest_metrics(conn))
            for window in windows:
                found = load_source(conn, window)
                if found:
                    problems += found
                    continue
                result = convert(conn, window=window, mapping=mapping, org_id=config.suger.org_id,
                                 billing_mode=config.billing_mode, now=now)
                groups += len(result.groups)
                lines += result.lines
                over += len(result.over_reported)
                for group in result.groups:
                    for dim, qty in group.records.items():
                        totals[dim] = totals.get(dim, 0.0) + float(qty)
                for ent, dim, reported, current in result.over_reported:
                    context.log.warning(
                        f"over-reported: entitlement {ent} dimension {dim} in {window}: "
                        f"{reported} reported, Metronome now gives {current} (not sent as a negative)"
                    )
            preview = table_markdown(
                conn,
                """SELECT record_group_id, revision, entitlement_id, partner, customer_id, source_key,
                          origin_quantity, dimension_key, mapping_mode, quantity
                FROM usage_records WHERE window_start >= ? AND window_start < ? AND computed_at = ?
                ORDER BY entitlement_id, source_key""",
                [windows[0].start, windows[-1].end, now],
            )
        if problems:
            raise dg.Failure(
                description="nothing is sent for these windows: " + "; ".join(problems),
                metadata={"problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems))},
            )
        metadata: dict[str, Any] = {
            "dagster/row_count": lines,
            "record_groups": groups,
            "over_reported_dimensions": over,
            "preview": dg.MetadataValue.md(preview),
        }
        for dim, total in sorted(totals.items()):
            metadata[f"quantity:{dim}"] = total
        return dg.MaterializeResult(metadata=metadata)

    return suger_usage_records
