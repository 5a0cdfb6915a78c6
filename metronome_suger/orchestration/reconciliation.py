"""The daily ``suger_usage_record_reports`` asset (what each marketplace was told, mapped to our groups), its
``marketplace_reconciliation`` check, and the job and schedule that read a day once its reports are in."""

from datetime import date
from typing import Any

import dagster as dg

from metronome_suger.config import AppConfig
from metronome_suger.core.reconciliation import (
    MARKETPLACE_SIDE,
    PROBLEMS,
    UNBILLED,
    Reconciliation,
    describe,
    money,
    units,
)
from metronome_suger.orchestration.keys import CLOCK, DUCKDB, POOL, RECONCILIATION_GROUP, REPORTS, SUGER, Keys
from metronome_suger.orchestration.schemas import asset_options
from metronome_suger.steps.reconciliation import read_reports
from metronome_suger.storage.reconciliation import reconcile

RECONCILIATION_JOB = "suger_usage_record_reports_job"
READ_AT_HOUR = 8  # UTC: a day's last hour is reported by ~01:00 and has had the 6 h grace to show up
LIMIT = 50  # lines listed in metadata


def _partitions(config: AppConfig) -> dg.DailyPartitionsDefinition:
    """Every UTC day from the configuration's start, today's included (a partial day reconciles too)."""
    return dg.DailyPartitionsDefinition(start_date=config.start.strftime("%Y-%m-%d"), timezone="UTC", end_offset=1)


def _day(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> date:
    return context.partition_time_window.start.date()


def figures(result: Reconciliation) -> dict[str, Any]:
    """The day's totals as metadata: the floats Dagster plots per partition, and the exact texts."""
    billed, lost = result.total_dollars("billed_dollars"), result.total_dollars("lost_dollars")
    unexplained = sum((abs(line.unexplained) for line in result.lines), start=0)
    return {"billed_dollars": float(billed), "lost_dollars": float(lost), "unexplained_units": float(unexplained),
            "billed": money(billed), "lost": money(lost), "reports": result.reports,
            "foreign_groups": len(result.foreign_groups),
            **{f"units:{name}": float(result.total_cause(name)) for name in (*UNBILLED, *MARKETPLACE_SIDE)},
            "lines": dg.MetadataValue.md("\n".join(f"- {describe(line)}" for line in result.lines[:LIMIT])
                                         or "none")}


def build_reconciliation(config: AppConfig, keys: Keys) -> tuple[list[Any], list[Any], Any, Any]:
    """(assets, checks, job, schedule)."""
    partitions = _partitions(config)
    grace = config.reconciliation_grace

    @dg.asset(key=keys.asset(REPORTS), group_name=keys.name(RECONCILIATION_GROUP), kinds={"duckdb"}, pool=POOL,
              partitions_def=partitions, required_resource_keys=keys.resources(SUGER, DUCKDB, CLOCK),
              **asset_options(REPORTS, layer="reconciliation"))
    def suger_usage_record_reports(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        """Suger's usage record reports carrying the day's usage of our entitlements: what each marketplace
        was told and answered, mapped to our group ids (kept with status history)."""
        with keys.resource(context, SUGER).get_client() as client:
            out = read_reports(client, keys.resource(context, DUCKDB).get_connection, _day(context),
                               keys.resource(context, CLOCK).now(), grace, deadlines=config.deadlines)
        if out.foreign_groups:
            context.log.warning(f"{out.foreign_groups} group id(s) in the day's reports were sent by neither this "
                                "pipeline nor Suger's Metronome integration (listed by marketplace_reconciliation)")
        return dg.MaterializeResult(metadata={
            "dagster/row_count": out.reports, "changed": out.changed,
            **{f"status:{name}": count for name, count in out.statuses.items()}, **figures(out.reconciliation)})

    @dg.asset_check(asset=keys.asset(REPORTS), partitions_def=partitions, pool=POOL,
                    required_resource_keys=keys.resources(DUCKDB, CLOCK))
    def marketplace_reconciliation(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        """Metronome (as converted) vs the ledger vs what the marketplace was told, per entitlement × day ×
        dimension, each difference named; fails on any unexplained unit or a report missing past the grace."""
        with keys.resource(context, DUCKDB).get_connection(read_only=True) as conn:
            result = reconcile(conn, _day(context), keys.resource(context, CLOCK).now(), grace=grace,
                               deadlines=config.deadlines)
        problems = result.problems
        description = (f"{len(result.lines)} line(s) reconciled: told {units(result.total('told'))} units, "
                       f"{money(result.total_dollars('billed_dollars'))} billed, "
                       f"{money(result.total_dollars('lost_dollars'))} lost")
        if problems:
            description = (f"{len(problems)} line(s) with {' or '.join(PROBLEMS)}: "
                           + "; ".join(describe(line) for line in problems[:5]))
        return dg.AssetCheckResult(passed=not problems, description=description,
                                   metadata={**figures(result), "problem_lines": len(problems)})

    job = dg.define_asset_job(keys.name(RECONCILIATION_JOB), selection=dg.AssetSelection.assets(
        suger_usage_record_reports), partitions_def=partitions,
        description="Read what Suger told the marketplaces about a day and reconcile it")
    schedule = dg.build_schedule_from_partitioned_job(job, hour_of_day=READ_AT_HOUR, minute_of_hour=0,
                                                      default_status=dg.DefaultScheduleStatus.RUNNING)
    return [suger_usage_record_reports], [marketplace_reconciliation], job, schedule



