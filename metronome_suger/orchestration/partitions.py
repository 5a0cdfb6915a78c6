"""The partitions of every windowed asset follow ``billing_mode``: hourly, or daily for ``amount_daily``."""

import dagster as dg

from metronome_suger.config import AppConfig
from metronome_suger.core.windows import Window, windows_in


def partitions_for(config: AppConfig) -> dg.TimeWindowPartitionsDefinition:
    if config.hourly:
        return dg.HourlyPartitionsDefinition(
            start_date=config.start.strftime("%Y-%m-%d-%H:%M"), timezone="UTC"
        )
    return dg.DailyPartitionsDefinition(start_date=config.start.strftime("%Y-%m-%d"), timezone="UTC")


def context_windows(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext, hourly: bool) -> list[Window]:
    """The windows of the run: one partition or a range (never read ``partition_key`` for a range)."""
    tw = context.partition_time_window
    return list(windows_in(tw.start, tw.end, hourly))
