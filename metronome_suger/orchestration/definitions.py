"""Assemble the Dagster definitions from the configuration (no network: nothing is called here)."""

from typing import Any

import dagster as dg

from metronome_suger.config import AppConfig
from metronome_suger.orchestration.alerts import Scope, build_alert_sensors
from metronome_suger.orchestration.assets import build_assets
from metronome_suger.orchestration.automation import build_job, build_schedule
from metronome_suger.orchestration.checks import build_checks
from metronome_suger.orchestration.keys import CLOCK, DUCKDB, METRONOME, RECONCILIATION_GROUP, SUGER, Keys
from metronome_suger.orchestration.reconciliation import build_reconciliation
from metronome_suger.orchestration.resources import (
    ClockResource,
    MetronomeResource,
    SafeDuckDBResource,
    SugerResource,
)
from metronome_suger.orchestration.sensors import build_sensors


def build_resources(config: AppConfig) -> dict[str, dg.ConfigurableResource]:
    return {
        METRONOME: MetronomeResource(base_url=config.metronome.base_url,
                                     api_token=dg.EnvVar(config.metronome.api_token_env),
                                     max_workers=config.max_concurrency, http=config.http.model_dump()),
        SUGER: SugerResource(base_url=config.suger.base_url, org_id=config.suger.org_id,
                             api_key=dg.EnvVar(config.suger.api_key_env), max_workers=config.max_concurrency,
                             http=config.http.model_dump()),
        DUCKDB: SafeDuckDBResource(database=config.storage.url, password=(
            dg.EnvVar(config.storage.password_env) if config.storage.is_postgres and config.storage.password_env
            else None)),
        CLOCK: ClockResource(),
    }


def build_definitions(config: AppConfig, *, resources: dict[str, Any] | None = None) -> dg.Definitions:
    """Every asset, check, job, schedule and sensor for this configuration's billing mode (with ``alerts``,
    the alert sensors too). ``resources`` replace the built ones by key (unprefixed names: ``clock``,
    ``duckdb``...)."""
    keys = Keys.of(config.key_prefix)
    job = build_job(config, keys)
    merged = {**build_resources(config), **(resources or {})}
    assets, checks = build_assets(config, keys), build_checks(config, keys)
    alerts = build_alert_sensors(config, Scope.of([job], assets, checks), keys)
    return dg.Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=[job],
        schedules=[build_schedule(config, job)],
        sensors=[*build_sensors(config, job, keys), *alerts],
        resources={keys.name(name): resource for name, resource in merged.items()},
    )


def build_reconciliation_definitions(config: AppConfig, *, resources: dict[str, Any] | None = None) -> dg.Definitions:
    """The daily ``suger_usage_record_reports`` asset, its ``marketplace_reconciliation`` check, job and schedule
    (with ``alerts``, their alert sensors too).

    A code location of its own (``metronome_suger.reconciliation_definitions``): Dagster runs ``--select '*'``
    only over assets sharing one partitions definition, and these are daily in every billing mode while the
    windows are hourly in two of them."""
    keys = Keys.of(config.key_prefix)
    merged = {**build_resources(config), **(resources or {})}
    assets, checks, job, schedule = build_reconciliation(config, keys)
    alerts = build_alert_sensors(config, Scope.of([job], assets, checks), keys,
                                 stem=RECONCILIATION_GROUP)
    return dg.Definitions(assets=assets, asset_checks=checks, jobs=[job], schedules=[schedule], sensors=alerts,
                          resources={keys.name(name): merged[name] for name in (SUGER, DUCKDB, CLOCK)})
