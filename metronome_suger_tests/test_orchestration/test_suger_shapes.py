"""Suger's real shapes end to end (issue 9, item 6): JSON-string error bodies and validation answers,
the REPORT_PENDING and DELETED statuses, a group accepted with 200 and marked INVALID later, statuses
Suger may add, and the ``source`` our status poll lists. Real Dagster runs and sensor ticks against the
emulators at a frozen time."""

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import dagster as dg
import httpx
import pytest

from metronome_suger.core.ids import record_group_id
from metronome_suger.orchestration.definitions import build_definitions
from metronome_suger.orchestration.resources import ClockResource
from metronome_suger.orchestration.sensors import STATUS_SENSOR
from metronome_suger.sandbox.server import Sandbox
from metronome_suger_tests.conftest import AWS_DIMS, Pipeline, failure_text, sent_groups

UTC = timezone.utc
KEY = "2026-11-25-13:00"
START = datetime(2026, 11, 25, 13, tzinfo=UTC)


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, 25, hour, minute, tzinfo=UTC)


def world(sb: Sandbox) -> str:
    """Alice on AWS (6 h deadline: every status below is decided well inside it)."""
    cpu = sb.metronome.add_billable_metric("cpu_hours", aggregation_type="SUM")["id"]
    alice = sb.metronome.add_customer("Alice")["id"]
    buyer = sb.suger.add_buyer("Alice AWS", partner="AWS", metronome_customer_id=alice)["id"]
    ent = sb.suger.add_entitlement(buyer, partner="AWS", dimensions=AWS_DIMS)["id"]
    sb.metronome.set_usage(alice, cpu, START, 10)
    return str(ent)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


def poll(pipeline: Pipeline, instance: dg.DagsterInstance, when: datetime) -> Any:
    """One tick of the status sensor at ``when``, with the resources the daemon would give it."""
    pipeline.sandbox.clock.set(when)
    defs = build_definitions(pipeline.config(), resources={"clock": ClockResource(frozen_at=when.isoformat())})
    context = dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources)
    return defs.resolve_sensor_def(STATUS_SENSOR).evaluate_tick(context)


def ledger(pipeline: Pipeline) -> list[tuple]:
    return pipeline.query("SELECT status, suger_status FROM report_ledger ORDER BY record_group_id")


def run_ok(pipeline: Pipeline) -> None:
    result = pipeline.run(KEY)  # at 14:05: Suger forwards the group in its 15:00 run
    assert result.success, failure_text(result)


# -- batchValidateUsageRecordGroups ------------------------------------------------------------------------
def test_dry_run_takes_any_200_as_valid(sandbox: Sandbox, pipeline: Pipeline) -> None:
    """The spec types the 200 as a string ("Empty string if validation is successful"): a non-empty one
    is still a 200, not a problem."""
    ent = world(sandbox)
    pipeline.settings["dry_run"] = True
    sandbox.suger.validation_ok_body = "success"
    item = {"entitlementID": ent, "records": {"cpu_hour": 1}}
    with httpx.Client(base_url=sandbox.suger_url, headers={"Authorization": f"Key {sandbox.suger_api_key}"}) as http:
        assert http.post(f"/org/{sandbox.org_id}/batchValidateUsageRecordGroups", json=[item]).json() == "success"
    sandbox.suger_log.clear()
    result = pipeline.run(KEY)
    assert result.success, failure_text(result)
    assert sent_groups(sandbox) == []
    assert [e.status for e in sandbox.suger_log.find(method="POST")] == [200]


def test_dry_run_reports_the_400s_json_string_unquoted(sandbox: Sandbox, pipeline: Pipeline) -> None:
    ent = world(sandbox)
    pipeline.settings["dry_run"] = True
    # Suger's own mapping (switched on by mistake) turns cpu_hour into a dimension the offer lacks.
    sandbox.suger.set_metering_config({"partnerUsageMeteringConfigs": [{
        "partner": "AWS", "enableDimensionMapping": True,
        "dimensionMappingV2": {"cpu_hour": [{"dimensionKey": "gpu_hour"}]}}]})
    result = pipeline.run(KEY)
    assert not result.success
    text = failure_text(result)
    assert (f"Suger validation failed: record key 'gpu_hour' is not a metering dimension key or name of "
            f"entitlement {ent}") in text
    assert "\"record key" not in text  # the JSON string's text, not its quoted JSON


# -- a refused POST: the message kept is the JSON string's text ---------------------------------------------
def test_a_refused_group_keeps_sugers_message_verbatim(sandbox: Sandbox, pipeline: Pipeline) -> None:
    ent = world(sandbox)
    sandbox.suger.reject_next(ent, "dimension cpu_hour is not active on the offer")
    assert not pipeline.run(KEY).success
    [(status, message)] = pipeline.query("SELECT status, message FROM report_ledger")
    assert (status, message) == ("rejected", "dimension cpu_hour is not active on the offer")


# -- statuses ------------------------------------------------------------------------------------------------
def test_report_pending_waits_then_the_released_call_is_accepted(
    sandbox: Sandbox, pipeline: Pipeline, instance: dg.DagsterInstance,
) -> None:
    ent = world(sandbox)
    sandbox.suger.forwarder.hold_next_report(ent)
    run_ok(pipeline)
    pending = poll(pipeline, instance, at(15, 10))  # Suger's 15:00 run called AWS; no answer yet
    assert "1 in progress at Suger" in pending.skip_message
    assert ledger(pipeline) == [("sent", "REPORT_PENDING")]
    sandbox.suger.forwarder.release(ent)
    done = poll(pipeline, instance, at(15, 20))
    assert done.skip_message.startswith("1 accepted")
    assert ledger(pipeline) == [("accepted", "REPORTED")]


def test_accepted_with_200_then_invalid_is_rejected(
    sandbox: Sandbox, pipeline: Pipeline, instance: dg.DagsterInstance,
) -> None:
    ent = world(sandbox)
    sandbox.suger.forwarder.invalidate_next(ent, "cpu_hour is not priced on the buyer's offer")
    run_ok(pipeline)
    assert ledger(pipeline) == [("sent", "CREATED")]  # Suger answered 200
    data = poll(pipeline, instance, at(15, 10))
    assert "1 rejected" in data.skip_message
    assert pipeline.query("SELECT status, suger_status, message FROM report_ledger") == [
        ("rejected", "INVALID", "Suger marked the group INVALID")]


def test_a_deleted_group_is_rejected(sandbox: Sandbox, pipeline: Pipeline, instance: dg.DagsterInstance) -> None:
    ent = world(sandbox)
    run_ok(pipeline)
    group_id = record_group_id(sandbox.org_id, ent, "quantity", START, 0)
    sandbox.suger.delete_group(group_id)  # someone deleted it in Suger's console before the 15:00 run
    poll(pipeline, instance, at(14, 30))
    assert ledger(pipeline) == [("rejected", "DELETED")]


def test_an_unknown_status_is_kept_verbatim_and_never_taken_for_success(
    sandbox: Sandbox, pipeline: Pipeline, instance: dg.DagsterInstance,
) -> None:
    ent = world(sandbox)
    run_ok(pipeline)
    sandbox.suger.set_group_status(record_group_id(sandbox.org_id, ent, "quantity", START, 0), "REPORT_QUEUED",
                                   unknown=True)
    poll(pipeline, instance, at(14, 30))
    assert ledger(pipeline) == [("sent", "REPORT_QUEUED")]
    # The next run of the window sends nothing new, and suger_record_status names the group.
    again = pipeline.run(KEY, at=at(14, 35))
    flagged = next(e for e in again.get_asset_check_evaluations() if e.check_name == "suger_record_status")
    assert not flagged.passed
    assert "REPORT_QUEUED a Suger status this version does not know" in flagged.metadata["details"].value


def test_the_status_poll_lists_only_our_own_groups(
    sandbox: Sandbox, pipeline: Pipeline, instance: dg.DagsterInstance,
) -> None:
    """Suger's own Metronome integration stores groups (source METRONOME) for the same entitlement: the
    poll asks for ``source=API`` and never reads theirs."""
    ent = world(sandbox)
    run_ok(pipeline)
    sandbox.suger.add_foreign_group(ent, {"cpu_hour": 10}, source="METRONOME")
    sandbox.suger_log.clear()
    poll(pipeline, instance, at(15, 10))
    [listing] = sandbox.suger_log.find(method="GET", path_prefix=f"/org/{sandbox.org_id}/usageRecordGroup")
    assert "source=API" in listing.query
    assert ledger(pipeline) == [("accepted", "REPORTED")]
