"""Cancelled entitlements (CONTRACT §4): usage generated before the cancellation is still reported while the
marketplace accepts it; usage after it never is, and ``customer_linkage`` names it."""

from datetime import datetime, timezone

import dagster as dg

from metronome_suger.sandbox.server import Sandbox
from metronome_suger_tests.conftest import AWS_DIMS, Pipeline, failure_text

UTC = timezone.utc
AZURE_DIMS = [{"key": "compute", "name": "Compute", "rate": 0.2}]


def at(hour: int, minute: int = 0, day: int = 25) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


def world(sb: Sandbox, pipeline: Pipeline, partner: str, dims: list[dict]) -> tuple[str, str]:
    """One customer on one marketplace with 4 cpu hours of usage at 09:00, 10:00 and 11:00."""
    cpu = sb.metronome.add_billable_metric("cpu_hours", aggregation_type="SUM")["id"]
    customer = sb.metronome.add_customer("Dana")["id"]
    buyer = sb.suger.add_buyer("Dana", partner=partner, metronome_customer_id=customer)["id"]
    ent = sb.suger.add_entitlement(buyer, partner=partner, dimensions=dims)["id"]
    for hour in (9, 10, 11):
        sb.metronome.set_usage(customer, cpu, at(hour), 4)
    pipeline.settings["dimension_conversion"]["AZURE"] = {
        "cpu_hours": [{"dimension_key": "compute", "mapping_mode": "QUANTITY", "multiplier": 1}]}
    return customer, ent


def check(result: dg.ExecuteInProcessResult, name: str) -> dg.AssetCheckEvaluation:
    return next(e for e in result.get_asset_check_evaluations() if e.check_name == name)


def test_usage_before_a_cancellation_is_reported_and_after_it_is_named(sandbox: Sandbox, pipeline: Pipeline) -> None:
    customer, ent = world(sandbox, pipeline, "AZURE", AZURE_DIMS)
    assert pipeline.run("2026-11-25-09:00", at=at(10, 5)).success
    sandbox.clock.set(at(10, 20))
    sandbox.suger.cancel_entitlement(ent, at(10, 20))

    ten = pipeline.run("2026-11-25-10:00", at=at(11, 5))  # CANCELLED now, but its usage came before 10:20
    assert ten.success, failure_text(ten)
    assert check(ten, "customer_linkage").passed
    eleven = pipeline.run("2026-11-25-11:00", at=at(12, 5))
    assert eleven.success, failure_text(eleven)

    sent = sorted((g["metaInfo"]["timestamp"], g["records"]) for g in sandbox.suger.groups())
    assert sent == [("2026-11-25T09:00:00Z", {"compute": 4}), ("2026-11-25T10:00:00Z", {"compute": 4})]
    linkage = check(eleven, "customer_linkage")
    assert not linkage.passed
    details = linkage.metadata["details"].value
    assert f"2026-11-25-11:00: customer {customer} 'cpu_hours' = 4" in details
    assert f"no entitlement usable for this window ({ent} is CANCELLED, ended 2026-11-25T10:20:00Z)" in details
    assert pipeline.query("SELECT count(*) FROM report_ledger WHERE window_start = ?", [at(11)]) == [(0,)]

    sandbox.clock.set(at(14))
    sandbox.suger.tick()  # Azure takes usage generated before the cancellation for 24 h
    assert {g["status"] for g in sandbox.suger.groups()} == {"REPORTED"}


def test_aws_takes_the_remaining_usage_for_an_hour_after_deprovisioning(sandbox: Sandbox, pipeline: Pipeline) -> None:
    """AWS meters a cancelled subscription's remaining usage only within 1 h of deprovisioning: the 10:00
    window, handed over at 11:05 for an 11:20 deadline, is at risk, and Suger's 12:00 report is too late."""
    _, ent = world(sandbox, pipeline, "AWS", AWS_DIMS)
    assert pipeline.run("2026-11-25-09:00", at=at(10, 5)).success
    sandbox.clock.set(at(10, 20))
    sandbox.suger.cancel_entitlement(ent, at(10, 20))
    ten = pipeline.run("2026-11-25-10:00", at=at(11, 5))
    assert ten.success, failure_text(ten)
    deadline = check(ten, "report_deadline")
    assert not deadline.passed and deadline.severity == dg.AssetCheckSeverity.WARN
    assert deadline.metadata["at_risk_dollars:AWS"].value == 0.48  # 4 cpu hours × $0.12

    sandbox.clock.set(at(13))
    sandbox.suger.tick()
    status = {g["metaInfo"]["timestamp"]: g["status"] for g in sandbox.suger.groups()}
    assert status == {"2026-11-25T09:00:00Z": "REPORTED", "2026-11-25T10:00:00Z": "REPORT_FAILED"}

    late = pipeline.run("2026-11-25-11:00", at=at(13, 5))  # after 11:20: nothing more for this entitlement
    assert late.success
    assert len(sandbox.suger.groups()) == 2
