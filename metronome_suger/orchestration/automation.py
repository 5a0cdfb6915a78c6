"""The job that runs a window end to end, and its schedule: each window once it closed + settle time."""

from typing import Any

import dagster as dg

from metronome_suger.config import AppConfig
from metronome_suger.orchestration.keys import GROUP, JOB, NO_PREFIX, Keys


def build_job(config: AppConfig, keys: Keys = NO_PREFIX) -> Any:  # dagster does not export the unresolved job type
    return dg.define_asset_job(
        keys.name(JOB),
        selection=dg.AssetSelection.groups(keys.name(GROUP)),
        description=f"Read Metronome, convert and report one {'hour' if config.hourly else 'day'} to Suger",
    )


def build_schedule(config: AppConfig, job: Any) -> Any:  # an unresolved partitioned schedule
    """Dagster's partitioned schedule targets the last *closed* window at each tick."""
    minute = config.settle_minutes % 60
    if config.hourly:
        return dg.build_schedule_from_partitioned_job(
            job, minute_of_hour=minute, default_status=dg.DefaultScheduleStatus.RUNNING
        )
    return dg.build_schedule_from_partitioned_job(
        job, hour_of_day=config.settle_minutes // 60, minute_of_hour=minute,
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
