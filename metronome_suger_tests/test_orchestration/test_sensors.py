"""Sensors and the schedule through Dagster's context builders, against the emulators at a frozen time:
real runs first, then a tick, then the run it requested, then exactly what Suger received and what the
ledger says."""

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import dagster as dg
import pytest

from metronome_suger.core.ids import record_group_id
from metronome_suger.orchestration.automation import build_job
from metronome_suger.orchestration.definitions import build_definitions
from metronome_suger.orchestration.resources import ClockResource
from metronome_suger.orchestration.sensors import (
    BUSY,
    LATE_USAGE_SENSOR,
    MAX_STATUS_RETRIES,
    STATUS_SENSOR,
    TRIGGER_TAG,
    build_late_usage_sensor,
    build_status_sensor,
)
from metronome_suger.sandbox.server import Sandbox
from metronome_suger_tests.conftest import AWS_DIMS, GCP_DIMS, Pipeline, failure_text, sent_groups

UTC = timezone.utc
KEY = "2026-11-25-13:00"
START = datetime(2026, 11, 25, 13, tzinfo=UTC)
TS = "2026-11-25T13:00:00Z"


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, 25, hour, minute, tzinfo=UTC)


@dataclass
class World:
    cpu: str
    api: str
    alice: str
    bob: str
    alice_aws: str
    bob_gcp: str


def build_world(sb: Sandbox) -> World:
    """Alice on AWS (6 h deadline), Bob on GCP (1 h); both used cpu and api in the 13:00 hour."""
    m, s = sb.metronome, sb.suger
    cpu = m.add_billable_metric("cpu_hours", aggregation_type="SUM")["id"]
    api = m.add_billable_metric("api_calls", aggregation_type="COUNT")["id"]
    alice, bob = m.add_customer("Alice")["id"], m.add_customer("Bob")["id"]
    a = s.add_buyer("Alice AWS", partner="AWS", metronome_customer_id=alice)["id"]
    b = s.add_buyer("Bob GCP", partner="GCP", metronome_customer_id=bob)["id"]
    w = World(cpu, api, alice, bob, s.add_entitlement(a, partner="AWS", dimensions=AWS_DIMS)["id"],
              s.add_entitlement(b, partner="GCP", dimensions=GCP_DIMS)["id"])
    for (customer, metric), value in {(alice, cpu): 10, (alice, api): 2500, (bob, cpu): 3}.items():
        m.set_usage(customer, metric, START, value)
    return w


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


def tick(pipeline: Pipeline, instance: dg.DagsterInstance, name: str, when: datetime,
         cursor: str | None = None, sensor: dg.SensorDefinition | None = None) -> Any:
    """One evaluation of a sensor of the user's definitions (or ``sensor``) at ``when``."""
    pipeline.sandbox.clock.set(when)
    defs = build_definitions(pipeline.config(), resources={"clock": ClockResource(frozen_at=when.isoformat())})
    sensor_def = sensor or defs.resolve_sensor_def(name)
    # As the daemon does: the sensor gets the top-level resources of the definitions it belongs to.
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, resources=defs.resources)
    return sensor_def.evaluate_tick(context)


def run_ok(pipeline: Pipeline, key: str, when: datetime | None = None) -> None:
    result = pipeline.run(key, at=when)
    assert result.success, failure_text(result)


def ledger(pipeline: Pipeline, entitlement_id: str) -> list[tuple]:
    return pipeline.query(
        """SELECT revision, status, suger_status, retries, message FROM report_ledger
        WHERE entitlement_id = ? ORDER BY revision""", [entitlement_id])


def usage_posts(sb: Sandbox) -> list[dict[str, Any]]:
    return [e.body for e in sb.metronome_log.find(method="POST", path_prefix="/v1/usage")]


def retry_posts(sb: Sandbox) -> list[str]:
    return [e.path for e in sb.suger_log.find(method="POST") if e.path.endswith("/retry")]


# -- late usage --------------------------------------------------------------------------------------------

ALWAYS = timedelta(0)  # the sensor reads every day again, as if no run had read it lately


def rereading(pipeline: Pipeline) -> dg.SensorDefinition:
    """The late-usage sensor of the user's configuration, reading every window from Metronome on each tick."""
    config = pipeline.config()
    return build_late_usage_sensor(config, build_job(config), reread_after=ALWAYS)



def test_late_increase_requests_one_run_that_sends_exactly_the_difference(
    sandbox: Sandbox, pipeline: Pipeline, instance: dg.DagsterInstance,
) -> None:
    w = build_world(sandbox)
    run_ok(pipeline, KEY)
    quiet = tick(pipeline, instance, LATE_USAGE_SENSOR, at(14, 10), sensor=rereading(pipeline))
    assert quiet.run_requests == []
    assert quiet.skip_message == "re-read 1 window(s) 2026-11-25T13:00:00Z..2026-11-25T14:00:00Z: no usage value changed"

    sandbox.metronome.set_usage(w.alice, w.cpu, START, 12)
    sandbox.metronome_log.clear()
    data = tick(pipeline, instance, LATE_USAGE_SENSOR, at(14, 30), sensor=rereading(pipeline))
    [request] = data.run_requests
    assert request.partition_key == KEY and request.tags[TRIGGER_TAG] == "late_usage"
    assert request.run_key.startswith(f"late-usage:{KEY}:")
    [body] = usage_posts(sandbox)  # one POST /v1/usage for the whole look-back, hourly, the stored metrics
    assert body["window_size"] == "HOUR" and {m["id"] for m in body["billable_metrics"]} == {w.cpu, w.api}

    run_ok(pipeline, request.partition_key, at(14, 30))
    groups = sent_groups(sandbox)
    assert len(groups) == 3  # Alice revision 0, Bob revision 0, Alice revision 1
    extra = groups[-1]
    assert extra["entitlementID"] == w.alice_aws and extra["records"] == {"cpu_hour": Decimal(2)}
    assert extra["id"] == record_group_id(sandbox.org_id, w.alice_aws, "quantity", START, 1)
    assert extra["metaInfo"]["timestamp"] == TS

    again = tick(pipeline, instance, LATE_USAGE_SENSOR, at(14, 35), sensor=rereading(pipeline))
    assert again.run_requests == [] and "no usage value changed" in again.skip_message


def test_late_decrease_is_recorded_as_over_reported_and_sends_nothing(
    sandbox: Sandbox, pipeline: Pipeline, instance: dg.DagsterInstance,
) -> None:
    w = build_world(sandbox)
    run_ok(pipeline, KEY)
    sandbox.metronome.set_usage(w.bob, w.cpu, START, 1)
    [request] = tick(pipeline, instance, LATE_USAGE_SENSOR, at(14, 20), sensor=rereading(pipeline)).run_requests
    assert request.partition_key == KEY
    run_ok(pipeline, KEY, at(14, 20))
    assert len(sent_groups(sandbox)) == 2
    assert pipeline.query("SELECT entitlement_id, dimension_key, reported, current FROM over_reported") == [
        (w.bob_gcp, "vcpu_hours", Decimal(6), Decimal(2))
    ]
    assert tick(pipeline, instance, LATE_USAGE_SENSOR, at(14, 25), sensor=rereading(pipeline)).run_requests == []


def test_window_past_every_deadline_in_use_is_not_reread(
    sandbox: Sandbox, pipeline: Pipeline, instance: dg.DagsterInstance,
) -> None:
    """AWS (6 h after the group's timestamp) is the widest deadline in use: 13:00 is re-read until 19:00."""
    w = build_world(sandbox)
    run_ok(pipeline, KEY)
    sandbox.metronome.set_usage(w.alice, w.cpu, START, 12)
    assert [r.partition_key for r in tick(pipeline, instance, LATE_USAGE_SENSOR, at(18, 59), sensor=rereading(pipeline)).run_requests] == [KEY]

    sandbox.metronome_log.clear()
    late = tick(pipeline, instance, LATE_USAGE_SENSOR, at(19, 0), sensor=rereading(pipeline))
    assert late.run_requests == []
    assert "widest deadline in use, the AWS deadline (6 h after the group's timestamp)" in late.skip_message
    assert usage_posts(sandbox) == []  # not even asked


def test_cursor_spreads_windows_across_ticks_and_run_keys_are_stable(
    sandbox: Sandbox, pipeline: Pipeline, instance: dg.DagsterInstance,
) -> None:
    w = build_world(sandbox)
    hours = (11, 12, 13)
    for hour in hours:
        sandbox.metronome.set_usage(w.alice, w.cpu, at(hour), 10)
        run_ok(pipeline, f"2026-11-25-{hour}:00")
    sandbox.metronome.set_usage(w.alice, w.cpu, at(11), 15)
    sandbox.metronome.set_usage(w.alice, w.cpu, at(13), 11)
    config = pipeline.config()
    sensor = build_late_usage_sensor(config, build_job(config), windows_per_tick=2, reread_after=ALWAYS)
    sandbox.metronome_log.clear()

    first = tick(pipeline, instance, LATE_USAGE_SENSOR, at(14, 30), sensor=sensor)
    assert [r.partition_key for r in first.run_requests] == ["2026-11-25-11:00"]
    assert json.loads(first.cursor) == {"after": "2026-11-25T12:00:00Z"}
    second = tick(pipeline, instance, LATE_USAGE_SENSOR, at(14, 35), cursor=first.cursor, sensor=sensor)
    assert [r.partition_key for r in second.run_requests] == [KEY]
    assert json.loads(second.cursor) == {"after": None}  # next tick starts over from the oldest window
    assert len(usage_posts(sandbox)) == 2  # one per tick

    third = tick(pipeline, instance, LATE_USAGE_SENSOR, at(14, 40), cursor=second.cursor, sensor=sensor)
    assert [r.run_key for r in third.run_requests] == [first.run_requests[0].run_key]  # Dagster dedups it


def test_a_run_compares_the_earlier_hours_of_its_day_so_the_sensor_does_not_read_them_again(
    sandbox: Sandbox, pipeline: Pipeline, instance: dg.DagsterInstance,
) -> None:
    """Metronome answers whole UTC days: the 13:00 run's read holds 11:00 and 12:00 too. It compares them with
    what their runs stored, and the sensor (default: a day a run read less than 15 min ago is not read again; the 13:00 run read it at 14:05)
    requests the rerun from that, without a POST /v1/usage of its own."""
    w = build_world(sandbox)
    for hour in (11, 12):
        sandbox.metronome.set_usage(w.alice, w.cpu, at(hour), 10)
        run_ok(pipeline, f"2026-11-25-{hour}:00")
    sandbox.metronome.set_usage(w.alice, w.cpu, at(11), 15)  # late usage in 11:00, after its run
    run_ok(pipeline, KEY)
    assert pipeline.query("SELECT window_start, rose, fell FROM late_usage_observed ORDER BY 1") == [
        (at(11), 1, 0), (at(12), 0, 0)]

    sandbox.metronome_log.clear()
    [request] = tick(pipeline, instance, LATE_USAGE_SENSOR, at(14, 15)).run_requests
    assert usage_posts(sandbox) == []  # taken from the 13:00 run's read
    assert request.partition_key == "2026-11-25-11:00" and request.tags[TRIGGER_TAG] == "late_usage"
    [reread] = tick(pipeline, instance, LATE_USAGE_SENSOR, at(14, 15), sensor=rereading(pipeline)).run_requests
    assert reread.run_key == request.run_key  # the same change, read again: the same run key (Dagster dedups it)

    run_ok(pipeline, request.partition_key, at(14, 15))
    assert [g["records"] for g in sent_groups(sandbox) if g["metaInfo"]["timestamp"] == "2026-11-25T11:00:00Z"] == [
        {"cpu_hour": Decimal(10)}, {"cpu_hour": Decimal(5)}]  # revision 1: exactly the difference
    sandbox.metronome_log.clear()
    after = tick(pipeline, instance, LATE_USAGE_SENSOR, at(14, 18))
    assert after.run_requests == [] and usage_posts(sandbox) == [], after.skip_message  # the rerun took it


def test_windows_of_days_no_run_read_lately_are_read_by_the_sensor_spread_over_ticks(
    sandbox: Sandbox, pipeline: Pipeline, instance: dg.DagsterInstance,
) -> None:
    """Windows of two UTC days that no run read in the last 15 min: the sensor reads them, one window per tick
    here, each read asking Metronome for that window's whole day (the only bounds it accepts)."""
    w = build_world(sandbox)
    late_evening = datetime(2026, 11, 24, 23, tzinfo=UTC)
    sandbox.metronome.set_usage(w.alice, w.cpu, late_evening, 4)
    run_ok(pipeline, "2026-11-24-23:00")
    run_ok(pipeline, "2026-11-25-01:00")
    sandbox.metronome.set_usage(w.alice, w.cpu, late_evening, 6)
    sandbox.metronome_log.clear()
    config = pipeline.config()
    sensor = build_late_usage_sensor(config, build_job(config), windows_per_tick=1)

    first = tick(pipeline, instance, LATE_USAGE_SENSOR, at(2, 30), sensor=sensor)
    assert [r.partition_key for r in first.run_requests] == ["2026-11-24-23:00"]
    assert json.loads(first.cursor) == {"after": "2026-11-24T23:00:00Z"}
    second = tick(pipeline, instance, LATE_USAGE_SENSOR, at(2, 35), cursor=first.cursor, sensor=sensor)
    assert second.run_requests == [] and json.loads(second.cursor) == {"after": None}
    assert [p["starting_on"] for p in usage_posts(sandbox)] == ["2026-11-24T00:00:00Z", "2026-11-25T00:00:00Z"]


def test_auto_report_off_still_requests_runs_that_send_nothing(
    sandbox: Sandbox, pipeline: Pipeline, instance: dg.DagsterInstance,
) -> None:
    w = build_world(sandbox)
    pipeline.settings["auto_report"] = False
    run_ok(pipeline, KEY)
    quiet = tick(pipeline, instance, LATE_USAGE_SENSOR, at(14, 10), sensor=rereading(pipeline))
    assert quiet.skip_message.endswith("auto_report is off: runs requested here store new groups and send nothing")
    sandbox.metronome.set_usage(w.alice, w.cpu, START, 12)
    [request] = tick(pipeline, instance, LATE_USAGE_SENSOR, at(14, 20), sensor=rereading(pipeline)).run_requests
    run_ok(pipeline, request.partition_key, at(14, 20))
    assert sent_groups(sandbox) == []
    assert pipeline.query("SELECT status, count(*) FROM report_ledger GROUP BY 1") == [("pending", 2)]


# -- amount modes ------------------------------------------------------------------------------------------


def amount_world(sandbox: Sandbox, pipeline: Pipeline) -> tuple[str, str]:
    """Alice on AWS in amount_hourly mode, invoice total $100 from 13:30; returns (invoice, entitlement)."""
    pipeline.settings.update(billing_mode="amount_hourly", dimension_conversion={
        "AWS": {"metronome": [{"dimension_key": "usage_fee", "mapping_mode": "QUANTITY", "multiplier": 100}]}})
    alice = sandbox.metronome.add_customer("Alice")["id"]
    buyer = sandbox.suger.add_buyer("Alice AWS", partner="AWS", metronome_customer_id=alice)["id"]
    entitlement = sandbox.suger.add_entitlement(buyer, partner="AWS", dimensions=AWS_DIMS)["id"]
    invoice = sandbox.metronome.add_invoice(alice, period_start=datetime(2026, 11, 1, tzinfo=UTC),
                                            period_end=datetime(2026, 12, 1, tzinfo=UTC))["id"]
    sandbox.metronome.set_invoice_total(invoice, 10000, effective_at=at(13, 30))
    return invoice, entitlement


def test_amount_increase_after_the_run_reruns_the_latest_closed_window(
    sandbox: Sandbox, pipeline: Pipeline, instance: dg.DagsterInstance,
) -> None:
    invoice, entitlement = amount_world(sandbox, pipeline)
    run_ok(pipeline, KEY, at(14, 15))
    assert tick(pipeline, instance, LATE_USAGE_SENSOR, at(14, 20)).run_requests == []

    sandbox.metronome.set_invoice_total(invoice, 12500, effective_at=at(14, 25))
    [request] = tick(pipeline, instance, LATE_USAGE_SENSOR, at(14, 30)).run_requests
    assert request.partition_key == KEY and request.tags[TRIGGER_TAG] == "late_invoice_total"
    run_ok(pipeline, KEY, at(14, 30))
    assert [(g["entitlementID"], g["metaInfo"]["timestamp"], g["records"]) for g in sent_groups(sandbox)] == [
        (entitlement, TS, {"usage_fee": Decimal(10000)}),
        (entitlement, TS, {"usage_fee": Decimal(2500)}),  # the $25 increase, next revision
    ]
    assert tick(pipeline, instance, LATE_USAGE_SENSOR, at(14, 35)).run_requests == []


def test_amount_increase_is_left_to_the_next_window_when_the_latest_is_past_its_deadline(
    sandbox: Sandbox, pipeline: Pipeline, instance: dg.DagsterInstance,
) -> None:
    invoice, _ = amount_world(sandbox, pipeline)
    pipeline.settings["marketplace_deadline_hours"] = {"AWS": "1.25"}  # 13:00 + 1.25 h: closes for AWS at 14:15
    run_ok(pipeline, KEY, at(14, 5))
    sandbox.metronome.set_invoice_total(invoice, 12500, effective_at=at(14, 10))
    data = tick(pipeline, instance, LATE_USAGE_SENSOR, at(14, 20))
    assert data.run_requests == []
    assert "past the AWS deadline: the next window's run reports the increase" in data.skip_message


# -- Suger statuses ----------------------------------------------------------------------------------------


def test_reported_groups_become_accepted(sandbox: Sandbox, pipeline: Pipeline, instance: dg.DagsterInstance) -> None:
    w = build_world(sandbox)
    run_ok(pipeline, KEY)  # at 14:05: Suger forwards the groups in its 15:00 run
    waiting = tick(pipeline, instance, STATUS_SENSOR, at(14, 10))
    assert waiting.skip_message == "0 accepted, 0 retried, 0 rejected, 0 expired, 2 in progress at Suger"
    assert ledger(pipeline, w.alice_aws) == [(0, "sent", "CREATED", 0, None)]

    done = tick(pipeline, instance, STATUS_SENSOR, at(15, 10))
    assert done.skip_message == "2 accepted, 0 retried, 0 rejected, 0 expired, 0 in progress at Suger"
    assert pipeline.query("SELECT status, suger_status, updated_at FROM report_ledger ORDER BY 1") == [
        ("accepted", "REPORTED", at(15, 10)), ("accepted", "REPORTED", at(15, 10))
    ]
    assert tick(pipeline, instance, STATUS_SENSOR, at(15, 15)).skip_message == "no sent group awaits Suger's status"


def test_report_failed_is_retried_then_accepted(
    sandbox: Sandbox, pipeline: Pipeline, instance: dg.DagsterInstance,
) -> None:
    w = build_world(sandbox)
    run_ok(pipeline, KEY)
    sandbox.suger.fail_next_report(w.alice_aws)
    first = tick(pipeline, instance, STATUS_SENSOR, at(15, 10))
    assert first.skip_message == "1 accepted, 1 retried, 0 rejected, 0 expired, 0 in progress at Suger"
    group_id = record_group_id(sandbox.org_id, w.alice_aws, "quantity", START, 0)
    assert retry_posts(sandbox) == [f"/org/{sandbox.org_id}/usageRecordGroup/{group_id}/retry"]
    [(_, status, suger_status, retries, message)] = ledger(pipeline, w.alice_aws)
    assert (status, suger_status, retries) == ("sent", "CREATED", 1)
    assert message.endswith(f"retry 1 of {MAX_STATUS_RETRIES} requested")

    tick(pipeline, instance, STATUS_SENSOR, at(16, 10))  # Suger's 16:00 run reported it
    assert ledger(pipeline, w.alice_aws) == [(0, "accepted", "REPORTED", 1, "reported by Suger after 1 retry")]
    assert sandbox.suger.group(group_id)["status"] == "REPORTED"
    assert len(retry_posts(sandbox)) == 1


def test_retries_are_bounded_then_the_group_is_rejected(
    sandbox: Sandbox, pipeline: Pipeline, instance: dg.DagsterInstance,
) -> None:
    w = build_world(sandbox)
    run_ok(pipeline, KEY)
    sandbox.suger.fail_next_report(w.alice_aws, times=MAX_STATUS_RETRIES + 1)
    for hour in range(15, 15 + MAX_STATUS_RETRIES):
        tick(pipeline, instance, STATUS_SENSOR, at(hour, 10))
    assert len(retry_posts(sandbox)) == MAX_STATUS_RETRIES
    last = tick(pipeline, instance, STATUS_SENSOR, at(18, 10))
    assert "1 rejected" in last.skip_message
    [(_, status, suger_status, retries, message)] = ledger(pipeline, w.alice_aws)
    assert (status, suger_status, retries) == ("rejected", "REPORT_FAILED", MAX_STATUS_RETRIES)
    assert message.endswith(f"again after {MAX_STATUS_RETRIES} retries: given up")
    tick(pipeline, instance, STATUS_SENSOR, at(19, 10))
    assert len(retry_posts(sandbox)) == MAX_STATUS_RETRIES  # never again


def test_report_failed_past_the_deadline_is_expired_not_retried(
    sandbox: Sandbox, pipeline: Pipeline, instance: dg.DagsterInstance,
) -> None:
    w = build_world(sandbox)
    run_ok(pipeline, KEY)
    sandbox.suger.fail_next_report(w.bob_gcp)
    data = tick(pipeline, instance, STATUS_SENSOR, at(15, 10))  # GCP: 1 h after the 13:00 hour = 15:00
    assert data.skip_message == "1 accepted, 0 retried, 0 rejected, 1 expired, 0 in progress at Suger"
    assert retry_posts(sandbox) == []
    [(_, status, suger_status, _, message)] = ledger(pipeline, w.bob_gcp)
    assert (status, suger_status) == ("expired", "REPORT_FAILED")
    assert "past the GCP deadline (1 h after the end of its usage hour" in message


def test_invalid_group_becomes_rejected(sandbox: Sandbox, pipeline: Pipeline, instance: dg.DagsterInstance) -> None:
    w = build_world(sandbox)
    run_ok(pipeline, KEY)
    sandbox.suger.set_group_status(record_group_id(sandbox.org_id, w.alice_aws, "quantity", START, 0), "INVALID")
    data = tick(pipeline, instance, STATUS_SENSOR, at(14, 10))
    assert data.skip_message.startswith("0 accepted, 0 retried, 1 rejected")
    assert ledger(pipeline, w.alice_aws) == [(0, "rejected", "INVALID", 0, "Suger marked the group INVALID")]
    assert ledger(pipeline, w.bob_gcp)[0][1:3] == ("sent", "CREATED")
    # Suger holds that group: a re-run neither re-posts it under the same id nor re-sends its usage
    sandbox.suger_log.clear()
    run_ok(pipeline, KEY, at(14, 20))
    assert sandbox.suger_log.find(method="POST") == []
    assert ledger(pipeline, w.alice_aws) == [(0, "rejected", "INVALID", 0, "Suger marked the group INVALID")]


def test_auto_report_off_never_calls_the_retry_endpoint(
    sandbox: Sandbox, pipeline: Pipeline, instance: dg.DagsterInstance,
) -> None:
    w = build_world(sandbox)
    run_ok(pipeline, KEY)
    pipeline.settings["auto_report"] = False  # switched off after the groups were sent
    sandbox.suger.fail_next_report(w.alice_aws)
    data = tick(pipeline, instance, STATUS_SENSOR, at(15, 10))
    assert data.skip_message.endswith("1 REPORT_FAILED not retried: auto_report is off")
    tick(pipeline, instance, STATUS_SENSOR, at(16, 10))
    assert retry_posts(sandbox) == []
    [(_, status, suger_status, retries, message)] = ledger(pipeline, w.alice_aws)
    assert (status, suger_status, retries) == ("sent", "REPORT_FAILED", 0)
    assert message.endswith("not retried: auto_report is off")


# -- DuckDB lock, empty state --------------------------------------------------------------------------------


def test_sensors_skip_while_another_process_holds_the_duckdb_lock(
    sandbox: Sandbox, pipeline: Pipeline, instance: dg.DagsterInstance,
) -> None:
    if pipeline.backend != "duckdb":
        pytest.skip("a DuckDB file lock only exists on the DuckDB backend (PostgreSQL conflicts: test_postgres_ledger)")
    build_world(sandbox)
    run_ok(pipeline, KEY)
    config = pipeline.config()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('locked', flush=True); "
                               "sys.stdin.read()", str(pipeline.db_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        late = build_late_usage_sensor(config, build_job(config), lock_timeout=0.2)
        status = build_status_sensor(config, lock_timeout=0.2)
        assert tick(pipeline, instance, LATE_USAGE_SENSOR, at(14, 10), sensor=late).skip_message == BUSY
        assert tick(pipeline, instance, STATUS_SENSOR, at(15, 10), sensor=status).skip_message == BUSY
    finally:
        holder.communicate(input="", timeout=30)
    assert sandbox.suger_log.find(method="GET", path_prefix=f"/org/{sandbox.org_id}/usageRecordGroup") == []
    assert pipeline.query("SELECT DISTINCT status FROM report_ledger") == [("sent",)]


def test_sensors_skip_before_anything_ran(sandbox: Sandbox, pipeline: Pipeline, instance: dg.DagsterInstance) -> None:
    late = tick(pipeline, instance, LATE_USAGE_SENSOR, at(14, 10))
    assert late.skip_message == "no window has run yet: nothing to re-read"
    assert tick(pipeline, instance, STATUS_SENSOR, at(14, 10)).skip_message == "nothing sent yet: no ledger"
    assert sandbox.metronome_log.entries() == [] and sandbox.suger_log.entries() == []


# -- schedule ----------------------------------------------------------------------------------------------


def test_schedule_runs_the_hour_that_closed_after_the_settle_time(pipeline: Pipeline) -> None:
    defs = build_definitions(pipeline.config())
    schedule = defs.resolve_schedule_def("metronome_suger_job_schedule")
    assert schedule.cron_schedule == "15 * * * *"
    data = schedule.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=at(14, 15)))
    assert [r.partition_key for r in data.run_requests] == [KEY]
