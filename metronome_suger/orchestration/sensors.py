"""Sensors: late usage and Suger record statuses (being written)."""

from typing import Any

import dagster as dg

from metronome_suger.config import AppConfig


def build_sensors(config: AppConfig, job: Any) -> list[dg.SensorDefinition]:
    return []
