"""``metronome_usage``: hourly usage per customer × reportable metric, from one paginated ``POST /v1/usage``."""

from datetime import datetime, timezone

from typing import Any

import dagster as dg

from metronome_suger.config import AppConfig
from metronome_suger.core.windows import iso
from metronome_suger.orchestration.partitions import context_windows, partitions_for
from metronome_suger.orchestration.resources import MetronomeResource, SafeDuckDBResource
from metronome_suger.orchestration.snapshots import GROUP, POOL
from metronome_suger.storage.db import QTY, bulk_insert, table_markdown


def build_usage_asset(config: AppConfig) -> dg.AssetsDefinition:
    @dg.asset(
        group_name=GROUP,
        kinds={"duckdb"},
        pool=POOL,
        partitions_def=partitions_for(config),
        deps=["metronome_billable_metrics", "metronome_customers"],
    )
    def metronome_usage(
        context: dg.AssetExecutionContext, metronome: MetronomeResource, duckdb: SafeDuckDBResource
    ) -> dg.MaterializeResult:
        """Usage per customer × metric × window for the whitelisted (or all) billable metrics."""
        windows = context_windows(context, config.hourly)
        start, end = windows[0].start, windows[-1].end
        with duckdb.get_connection() as conn:
            known = dict(conn.execute(
                """SELECT metric_id, name FROM billable_metrics WHERE whitelisted
                AND snapshot_at = (SELECT max(snapshot_at) FROM billable_metrics)"""
            ).fetchall())
        if not known:
            raise dg.Failure(description="no reportable billable metric: materialize metronome_billable_metrics first, "
                                         "or check billable_metric_whitelist")
        # The client asks for whole UTC days (Metronome's rule for these bounds) and keeps our hours.
        with metronome.get_client() as client:
            rows = client.list_usage(
                starting_on=start, ending_before=end, window_size="HOUR", billable_metric_ids=sorted(known)
            )
        fetched = datetime.now(timezone.utc)
        unknown = sorted({f"{r.billable_metric_name} ({r.billable_metric_id})" for r in rows
                          if r.billable_metric_id not in known})
        with duckdb.get_connection() as conn:
            conn.execute("DELETE FROM usage WHERE window_start >= ? AND window_start < ?", [start, end])
            bulk_insert(
                conn,
                "usage",
                {"window_start": "TIMESTAMPTZ", "window_end": "TIMESTAMPTZ", "customer_id": "VARCHAR",
                 "metric_id": "VARCHAR", "metric_name": "VARCHAR", "value": QTY,
                 "value_was_null": "BOOLEAN", "fetched_at": "TIMESTAMPTZ"},
                [(r.start_timestamp, r.end_timestamp, r.customer_id, r.billable_metric_id,
                  r.billable_metric_name, 0 if r.value is None else r.value, r.value is None, fetched)
                 for r in rows],
            )
            totals = conn.execute(
                """SELECT metric_name, sum(value), count(*) FILTER (WHERE value <> 0)
                FROM usage WHERE window_start >= ? AND window_start < ? GROUP BY 1 ORDER BY 1""",
                [start, end],
            ).fetchall()
            preview = table_markdown(
                conn,
                "SELECT window_start, customer_id, metric_name, value, value_was_null FROM usage "
                "WHERE window_start >= ? AND window_start < ? AND value <> 0 ORDER BY 1, 2, 3",
                [start, end],
            )
        if unknown:
            context.log.warning(
                "usage returned for metrics absent from the billable metric list (not reported): "
                + ", ".join(unknown)
            )
        metadata: dict[str, Any] = {
            "dagster/row_count": len(rows),
            "window": f"{iso(start)}..{iso(end)}",
            "null_values": sum(1 for r in rows if r.value is None),
            "nonzero_rows": sum(int(n) for _, _, n in totals),
            "preview": dg.MetadataValue.md(preview),
        }
        for name, total, _ in totals:
            metadata[f"total:{name}"] = float(total)
        if unknown:
            metadata["unknown_metrics"] = ", ".join(unknown)
        return dg.MaterializeResult(metadata=metadata)

    return metronome_usage
