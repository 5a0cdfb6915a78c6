"""Sensors: re-read recent windows for late usage, and poll Suger's record-group statuses into the ledger.

A tick must end well inside Dagster's 60 s sensor timeout: each tick does a bounded amount of work (a
JSON cursor resumes where the last one stopped), and DuckDB is opened with a short lock wait, so a run
holding the file makes the tick skip instead of hang. Neither sensor sends usage itself: late usage
becomes a run of the window (which reports only the positive difference, under the next revision), and
the status sensor only calls Suger's retry endpoint, never when ``auto_report`` is off.
"""

import functools
import json
from datetime import timedelta
from typing import Any

import dagster as dg

from metronome_suger.config import AppConfig
from metronome_suger.core.ledger import MAX_STATUS_RETRIES
from metronome_suger.orchestration.keys import (
    CLOCK,
    DUCKDB,
    LATE_USAGE_SENSOR,
    METRONOME,
    NO_PREFIX,
    STATUS_SENSOR,
    SUGER,
    Keys,
)
from metronome_suger.steps.late_usage import Tick, amount_tick, quantity_tick
from metronome_suger.steps.status import poll_statuses
from metronome_suger.storage.db import is_lock_error

__all__ = ["BUSY", "LATE_USAGE_SENSOR", "MAX_STATUS_RETRIES", "STATUS_SENSOR", "TRIGGER_TAG",
           "build_late_usage_sensor", "build_sensors", "build_status_sensor"]

TICK_INTERVAL_SECONDS = 300
LOCK_TIMEOUT_SECONDS = 15.0
WINDOWS_PER_TICK = 24  # one usage read per tick covers at most this many hourly windows
REREAD_AFTER = timedelta(minutes=15)  # a day a run read more recently is not read again: its run compared it
CUSTOMERS_PER_TICK = 200  # amount modes: invoice listings per tick
RETRIES_PER_TICK = 50
TRIGGER_TAG = "metronome_suger/trigger"
BUSY = "the DuckDB file is locked by a run; trying again next tick"


def build_sensors(config: AppConfig, job: Any, keys: Keys = NO_PREFIX) -> list[dg.SensorDefinition]:
    return [build_late_usage_sensor(config, job, keys=keys), build_status_sensor(config, keys=keys)]


def _read_cursor(cursor: str | None) -> str | None:
    """The ``after`` position of a JSON cursor; anything unreadable restarts from the beginning."""
    try:
        after = json.loads(cursor or "{}").get("after")
    except (ValueError, AttributeError):
        return None
    return after if isinstance(after, str) else None


def _sensor_result(context: dg.SensorEvaluationContext, tick: Tick, note: str | None) -> Any:
    skip = f"{tick.skip}; {note}" if note else tick.skip
    if not tick.keep_cursor:
        return dg.SkipReason(skip)
    for rerun in tick.reruns:
        context.log.info(rerun.why)
    if note and tick.reruns:
        context.log.info(note)
    requests = [dg.RunRequest(run_key=r.run_key, partition_key=r.partition_key, tags={TRIGGER_TAG: r.trigger})
                for r in tick.reruns]
    cursor = json.dumps({"after": tick.after})
    if requests:
        return dg.SensorResult(run_requests=requests, cursor=cursor)
    return dg.SensorResult(skip_reason=skip, cursor=cursor)


def build_late_usage_sensor(
    config: AppConfig, job: Any, *, windows_per_tick: int = WINDOWS_PER_TICK, reread_after: timedelta = REREAD_AFTER,
    customers_per_tick: int = CUSTOMERS_PER_TICK, lock_timeout: float = LOCK_TIMEOUT_SECONDS, keys: Keys = NO_PREFIX,
) -> dg.SensorDefinition:
    @dg.sensor(
        name=keys.name(LATE_USAGE_SENSOR), job=job, minimum_interval_seconds=TICK_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING, required_resource_keys=keys.resources(METRONOME, DUCKDB, CLOCK),
        description="Re-reads Metronome for windows the marketplaces still accept and runs each window "
                    "whose values changed: a rise is reported as the next revision, a fall is recorded "
                    "as over-reported.",
    )
    def metronome_late_usage_sensor(context: dg.SensorEvaluationContext) -> Any:
        """Late usage: Metronome values can still change after a window ran."""
        duckdb, metronome = keys.resource(context, DUCKDB), keys.resource(context, METRONOME)
        if not duckdb.exists():
            return dg.SkipReason("no window has run yet: nothing to re-read")
        connect = functools.partial(duckdb.get_connection, lock_timeout=lock_timeout)
        now, after = keys.resource(context, CLOCK).now(), _read_cursor(context.cursor)
        try:
            if config.amount_mode:
                tick = amount_tick(metronome.get_client, connect, now, hourly=config.hourly,
                                   settle=timedelta(minutes=config.settle_minutes), policy=config.invoice_change_policy,
                                   deadlines=config.deadlines, after=after, per_tick=customers_per_tick)
            else:
                tick = quantity_tick(metronome.get_client, connect, now, start=config.start, deadlines=config.deadlines,
                                     after=after, per_tick=windows_per_tick, reread_after=reread_after)
        except Exception as exc:
            if not is_lock_error(exc):
                raise
            return dg.SkipReason(BUSY)
        note = None if config.auto_report else (
            "auto_report is off: runs requested here store new groups and send nothing")
        return _sensor_result(context, tick, note)

    return metronome_late_usage_sensor


def build_status_sensor(
    config: AppConfig, *, lock_timeout: float = LOCK_TIMEOUT_SECONDS, retries_per_tick: int = RETRIES_PER_TICK,
    keys: Keys = NO_PREFIX,
) -> dg.SensorDefinition:
    @dg.sensor(
        name=keys.name(STATUS_SENSOR), minimum_interval_seconds=TICK_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING, required_resource_keys=keys.resources(SUGER, DUCKDB, CLOCK),
        description="Polls Suger's status of every sent record group into the ledger: REPORTED → accepted, "
                    f"INVALID → rejected, REPORT_FAILED → retried (at most {MAX_STATUS_RETRIES} times, never "
                    "past the marketplace deadline, never with auto_report off).",
    )
    def suger_status_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        """Suger forwards groups hourly; only its status says whether usage reached the marketplace."""
        duckdb = keys.resource(context, DUCKDB)
        if not duckdb.exists():
            return dg.SkipReason("nothing sent yet: no ledger")
        no_retry = "auto_report is off" if not config.auto_report else "dry_run is on" if config.dry_run else None
        try:
            out = poll_statuses(keys.resource(context, SUGER).get_client,
                                functools.partial(duckdb.get_connection, lock_timeout=lock_timeout),
                                keys.resource(context, CLOCK).now(), config.deadlines,
                                no_retry=no_retry, retries_per_tick=retries_per_tick)
        except Exception as exc:
            if not is_lock_error(exc):
                raise
            return dg.SkipReason(BUSY)
        for warning in out.warnings:
            context.log.warning(warning)
        return dg.SkipReason(out.summary(no_retry))

    return suger_status_sensor
