"""Asset checks on ``suger_usage_records``: mapping completeness (blocking) and customer linkage."""

import dagster as dg

from metronome_suger.config import AppConfig
from metronome_suger.core.conversion import mapping_rows
from metronome_suger.orchestration.partitions import context_windows, partitions_for
from metronome_suger.orchestration.records import SourceLoader, latest_metrics
from metronome_suger.orchestration.resources import SafeDuckDBResource
from metronome_suger.orchestration.snapshots import POOL
from metronome_suger.storage.gaps import mapping_gaps, multi_linked, unlinked_usage

RECORDS = dg.AssetKey("suger_usage_records")


def bullets(items: list[str], limit: int = 50) -> str:
    shown = [f"- {item}" for item in items[:limit]]
    if len(items) > limit:
        shown.append(f"- … and {len(items) - limit} more")
    return "\n".join(shown)


def build_checks(config: AppConfig, load_source: SourceLoader) -> list[dg.AssetChecksDefinition]:
    partitions = partitions_for(config)

    @dg.asset_check(asset=RECORDS, blocking=True, partitions_def=partitions, pool=POOL)
    def mapping_completeness(
        context: dg.AssetCheckExecutionContext, duckdb: SafeDuckDBResource
    ) -> dg.AssetCheckResult:
        """Every reportable source key is mapped for every partner in use, and every mapped
        dimension exists on the linked entitlement. Blocking: a failing window sends nothing."""
        gaps: list[str] = []
        with duckdb.get_connection() as conn:
            mapping = mapping_rows(config, latest_metrics(conn))
            for window in context_windows(context, config.hourly):
                gaps += [f"{window.partition_key}: {gap}" for gap in mapping_gaps(conn, window, mapping, config.amount_mode)]
        return dg.AssetCheckResult(
            passed=not gaps,
            severity=dg.AssetCheckSeverity.ERROR,
            description=(
                "all reportable source keys are mapped"
                if not gaps
                else f"{len(gaps)} mapping gap(s), nothing sent for the window: " + "; ".join(gaps[:20])
            ),
            metadata={"gaps": len(gaps), "details": dg.MetadataValue.md(bullets(gaps) or "none")},
        )

    @dg.asset_check(asset=RECORDS, partitions_def=partitions, pool=POOL)
    def customer_linkage(
        context: dg.AssetCheckExecutionContext, duckdb: SafeDuckDBResource
    ) -> dg.AssetCheckResult:
        """Usage of customers with no Suger entitlement for the window is not silently dropped."""
        found: list[str] = []
        doubled: list[str] = []
        customers: set[str] = set()
        with duckdb.get_connection() as conn:
            for window in context_windows(context, config.hourly):
                load_source(conn, window)
                for customer, key, value in unlinked_usage(conn, window):
                    customers.add(customer)
                    found.append(f"{window.partition_key}: customer {customer} '{key}' = {value}")
                if config.amount_mode:
                    for customer, count, partners in multi_linked(conn):
                        doubled.append(f"{window.partition_key}: customer {customer} is linked to {count} "
                                       f"entitlements ({partners}): each is sent the same invoice dollars")
        description = "every customer with usage is linked"
        if found:
            description = f"{len(customers)} customer(s) with usage but no link: not reported"
        if doubled:
            description += f"; {len(doubled)} customer-window(s) report one invoice to several entitlements"
        return dg.AssetCheckResult(
            passed=not (found or doubled),
            severity=dg.AssetCheckSeverity.WARN,
            description=description,
            metadata={
                "unlinked_customers": len(customers),
                "multi_linked": len(doubled),
                "details": dg.MetadataValue.md(bullets(found + doubled) or "none"),
            },
        )

    return [mapping_completeness, customer_linkage]
