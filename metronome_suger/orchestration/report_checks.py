"""Checks on ``suger_usage_report`` (being written)."""

import dagster as dg

from metronome_suger.config import AppConfig


def build_report_checks(config: AppConfig) -> list[dg.AssetChecksDefinition]:
    return []
