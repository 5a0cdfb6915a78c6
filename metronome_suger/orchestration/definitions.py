"""Assemble the Dagster definitions from the configuration (no network: nothing is called here)."""

import dagster as dg

from metronome_suger.config import AppConfig
from metronome_suger.orchestration.automation import build_job, build_schedule
from metronome_suger.orchestration.checks import build_checks
from metronome_suger.orchestration.report_checks import build_report_checks
from metronome_suger.orchestration.sensors import build_sensors
from metronome_suger.orchestration.records import build_records_asset, load_usage_source
from metronome_suger.orchestration.report import build_report_asset
from metronome_suger.orchestration.resources import (
    ClockResource,
    MetronomeResource,
    SafeDuckDBResource,
    SugerResource,
)
from metronome_suger.orchestration.snapshots import build_snapshot_assets
from metronome_suger.orchestration.usage import build_usage_asset


def build_resources(config: AppConfig) -> dict[str, dg.ConfigurableResource]:
    return {
        "metronome": MetronomeResource(
            base_url=config.metronome.base_url,
            api_token=dg.EnvVar(config.metronome.api_token_env),
            max_workers=config.max_concurrency,
        ),
        "suger": SugerResource(
            base_url=config.suger.base_url,
            org_id=config.suger.org_id,
            api_key=dg.EnvVar(config.suger.api_key_env),
            max_workers=config.max_concurrency,
        ),
        "duckdb": SafeDuckDBResource(database=str(config.duckdb_path)),
        "clock": ClockResource(),
    }


def build_definitions(config: AppConfig, *, resources: dict | None = None) -> dg.Definitions:
    """Everything of CONTRACT §6 for this configuration's billing mode."""
    if config.amount_mode:
        from metronome_suger.orchestration.invoices import build_invoice_asset, load_amount_source

        source = build_invoice_asset(config)
        loader = load_amount_source(config)
    else:
        source = build_usage_asset(config)
        loader = load_usage_source
    assets = [
        *build_snapshot_assets(config),
        source,
        build_records_asset(config, source.key.to_user_string(), loader),
        build_report_asset(config),
    ]
    job = build_job(config)
    return dg.Definitions(
        assets=assets,
        asset_checks=[*build_checks(config, loader), *build_report_checks(config, loader)],
        jobs=[job],
        schedules=[build_schedule(config, job)],
        sensors=build_sensors(config, job),
        resources={**build_resources(config), **(resources or {})},
    )
