"""``key_prefix``: two Suger organizations (two configurations) in one code location, each with its own
asset keys, job, sensors and resources, and a window of one reported through the merged definitions."""

from pathlib import Path

import dagster as dg

from metronome_suger.config import parse_config_data
from metronome_suger.orchestration.definitions import build_definitions
from metronome_suger.orchestration.resources import ClockResource
from metronome_suger.sandbox.server import Sandbox
from metronome_suger_tests.conftest import Pipeline, failure_text, sent_groups
from metronome_suger_tests.test_orchestration.test_quantity_e2e import KEY, START, build_world


def test_two_prefixed_configurations_share_one_code_location(
    sandbox: Sandbox, pipeline: Pipeline, tmp_path: Path
) -> None:
    w = build_world(sandbox)
    acme = parse_config_data({**pipeline.settings, "key_prefix": ["acme"]})
    globex = parse_config_data({**pipeline.settings, "key_prefix": ["globex"], "suger": {"org_id": "org-globex"},
                                "storage": {"duckdb_path": str(tmp_path / "globex.duckdb")}})
    at = START.replace(hour=14, minute=5)
    clock = {"clock": ClockResource(frozen_at=at.isoformat())}
    defs = dg.Definitions.merge(build_definitions(acme, resources=clock), build_definitions(globex, resources=clock))
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"acme/suger_usage_report", "globex/suger_usage_report", "acme/metronome_usage"} <= keys
    assert not {k for k in keys if "/" not in k}
    assert {s.name for s in defs.sensors or []} == {
        "acme__metronome_late_usage_sensor", "acme__suger_status_sensor",
        "globex__metronome_late_usage_sensor", "globex__suger_status_sensor"}

    sandbox.clock.set(at)
    result = defs.resolve_job_def("acme__metronome_suger_job").execute_in_process(
        partition_key=KEY, instance=pipeline.instance, raise_on_error=False)
    assert result.success, failure_text(result)
    assert {g["entitlementID"] for g in sent_groups(sandbox)} == {w.alice_aws, w.bob_aws, w.bob_gcp}
    assert not (tmp_path / "globex.duckdb").exists()  # the other organization's run did not happen
    checks = {e.asset_check_key.asset_key.to_user_string() for e in result.get_asset_check_evaluations()}
    assert checks == {"acme/suger_usage_records", "acme/suger_usage_report"}
