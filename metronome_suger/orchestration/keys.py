"""Every asset key and Dagster name of the code location, in one place. With ``key_prefix`` (two Suger
organizations, two config files, one code location) every key and name carries the prefix."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg

CUSTOMERS = "metronome_customers"
METRICS = "metronome_billable_metrics"
ENTITLEMENTS = "suger_entitlements"
USAGE = "metronome_usage"
INVOICES = "metronome_invoice_snapshots"
RECORDS = "suger_usage_records"
REPORT = "suger_usage_report"
REPORTS = "suger_usage_record_reports"

GROUP = "metronome_suger"
RECONCILIATION_GROUP = "metronome_suger_reconciliation"  # daily, whatever the billing mode
POOL = "metronome_suger_duckdb"  # the DuckDB-writing steps; one at a time per instance
JOB = "metronome_suger_job"
LATE_USAGE_SENSOR = "metronome_late_usage_sensor"
STATUS_SENSOR = "suger_status_sensor"

# Resource keys
METRONOME, SUGER, DUCKDB, CLOCK = "metronome", "suger", "duckdb", "clock"


@dataclass(frozen=True)
class Keys:
    prefix: tuple[str, ...] = ()

    @classmethod
    def of(cls, prefix: Sequence[str]) -> "Keys":
        return cls(tuple(prefix))

    def asset(self, name: str) -> dg.AssetKey:
        return dg.AssetKey([*self.prefix, name])

    def name(self, name: str) -> str:
        """A job, schedule, sensor, group or resource name (these are flat strings in Dagster)."""
        return "__".join([*self.prefix, name])

    def resources(self, *names: str) -> set[str]:
        return {self.name(n) for n in names}

    def resource(self, context: Any, name: str) -> Any:
        return getattr(context.resources, self.name(name))


NO_PREFIX = Keys()
