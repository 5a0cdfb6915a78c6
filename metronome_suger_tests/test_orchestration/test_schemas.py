"""What the Dagster UI shows of each asset: its table's column schema (checked against the real table), owners,
tags, and the numeric metadata it plots across partitions."""

from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import dagster as dg

from metronome_suger.orchestration.definitions import build_definitions, build_reconciliation_definitions
from metronome_suger.orchestration.schemas import ASSET_TABLES, TABLES
from metronome_suger.sandbox.server import Sandbox
from metronome_suger.storage.db import connect
from metronome_suger_tests.conftest import AWS_DIMS, Pipeline, failure_text


def test_every_described_column_is_the_tables_column_in_order(tmp_path: Path) -> None:
    with connect(tmp_path / "x.duckdb") as conn:
        for table, columns in TABLES.items():
            actual = [(name, kind) for name, kind, *_ in conn.execute(f"DESCRIBE {table}").fetchall()]
            assert [(name, kind) for name, kind, _ in columns] == actual, table
            assert all(text for _, _, text in columns), table


def test_every_asset_has_its_table_schema_owners_and_tags(pipeline: Pipeline) -> None:
    config = pipeline.config()
    specs = [*build_definitions(config).resolve_all_asset_specs(),
             *build_reconciliation_definitions(config).resolve_all_asset_specs()]
    assert {spec.key.to_user_string() for spec in specs} == set(ASSET_TABLES) - {"metronome_invoice_snapshots"}
    for spec in specs:
        table = ASSET_TABLES[spec.key.to_user_string()]
        assert spec.metadata["dagster/table_name"] == table
        schema = spec.metadata["dagster/column_schema"]
        assert [c.name for c in schema.columns] == [name for name, _, _ in TABLES[table]]
        assert spec.owners == ["team:billing"] and spec.tags["layer"] and spec.description


def test_the_report_plots_groups_units_dollars_and_delay(sandbox: Sandbox, pipeline: Pipeline) -> None:
    cpu = sandbox.metronome.add_billable_metric("cpu_hours")["id"]
    customer = sandbox.metronome.add_customer("Ann")["id"]
    buyer = sandbox.suger.add_buyer("Ann", partner="AWS", metronome_customer_id=customer)["id"]
    sandbox.suger.add_entitlement(buyer, partner="AWS", dimensions=AWS_DIMS)
    sandbox.metronome.set_usage(customer, cpu, datetime(2026, 11, 25, 13, tzinfo=timezone.utc), Decimal("2.5"))
    result = pipeline.run("2026-11-25-13:00")  # at 14:05, the schedule's tick
    assert result.success, failure_text(result)
    [report] = [m for m in result.get_asset_materialization_events()
                if m.asset_key.to_user_string() == "suger_usage_report"]
    metadata = {k: v.value for k, v in report.materialization.metadata.items()}
    assert {k: metadata[k] for k in ("groups", "groups_sent", "dollars_sent", "units:cpu_hour", "dollars_at_risk",
                                     "dollars_expired", "units_over_reported", "dollars_over_reported", "requests",
                                     "delay_minutes")} == {
        "groups": 1, "groups_sent": 1, "dollars_sent": 0.3, "units:cpu_hour": 2.5, "dollars_at_risk": 0.0,
        "dollars_expired": 0.0, "units_over_reported": 0.0, "dollars_over_reported": 0.0, "requests": 1,
        "delay_minutes": 5.0}
    assert isinstance(report.materialization.metadata["dollars_sent"], dg.FloatMetadataValue)

    # Metronome's value falls after it was reported: the re-run plots what was over-reported, never sends it.
    sandbox.metronome.set_usage(customer, cpu, datetime(2026, 11, 25, 13, tzinfo=timezone.utc), Decimal("1.5"))
    again = pipeline.run("2026-11-25-13:00", at=datetime(2026, 11, 25, 14, 20, tzinfo=timezone.utc))
    assert again.success, failure_text(again)
    [rerun] = [m for m in again.get_asset_materialization_events()
               if m.asset_key.to_user_string() == "suger_usage_report"]
    figures = {k: v.value for k, v in rerun.materialization.metadata.items()}
    assert (figures["units_over_reported"], figures["dollars_over_reported"], figures["requests"]) == (1.0, 0.12, 0)
