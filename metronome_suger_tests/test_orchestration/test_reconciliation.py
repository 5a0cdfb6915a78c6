"""Three-way reconciliation end to end (issue 13): real runs of the windows, the Suger emulator's hourly
forwarder reporting to its marketplaces, then ``suger_usage_record_reports`` and ``marketplace_reconciliation``
for the day, with exact figures."""

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import dagster as dg

from metronome_suger.core.reconciliation import Line
from metronome_suger.sandbox.server import Sandbox
from metronome_suger.storage.db import connect
from metronome_suger.storage.reconciliation import reconcile
from metronome_suger_tests.conftest import AWS_DIMS, GCP_DIMS, Pipeline, failure_text

UTC = timezone.utc
DAY = "2026-11-25"


def at(hour: int, minute: int = 0, day: int = 25) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


def key(hour: int) -> str:
    return f"{DAY}-{hour:02d}:00"


def world(sb: Sandbox, usage: dict[str, list[tuple[int, str]]]) -> dict[str, str]:
    """One customer per marketplace named in ``usage`` (AWS, GCP), cpu hours per hour of the day."""
    cpu = sb.metronome.add_billable_metric("cpu_hours")["id"]
    ents = {}
    for partner, values in usage.items():
        customer = sb.metronome.add_customer(f"{partner} customer")["id"]
        buyer = sb.suger.add_buyer(f"{partner} buyer", partner=partner, metronome_customer_id=customer)["id"]
        ents[partner] = sb.suger.add_entitlement(buyer, partner=partner,
                                                 dimensions=AWS_DIMS if partner == "AWS" else GCP_DIMS)["id"]
        for hour, value in values:
            sb.metronome.set_usage(customer, cpu, at(hour), Decimal(value))
    return ents


def run_hours(pipeline: Pipeline, hours: list[int]) -> None:
    for hour in hours:
        result = pipeline.run(key(hour))
        assert result.success, failure_text(result)


def check(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == "marketplace_reconciliation"]
    return evaluation


def lines(pipeline: Pipeline, now: datetime) -> dict[tuple[str, str], Line]:
    with connect(pipeline.database(), read_only=True) as conn:
        found = reconcile(conn, datetime.fromisoformat(DAY).date(), now)
    return {(line.partner, line.dimension_key): line for line in found.lines}


def figures(line: Line) -> dict[str, Any]:
    return {"converted": line.converted, "sent": line.sent, "told": line.told, **line.differences()}


def test_a_normal_day_with_decimal_carry_reconciles_to_zero_unexplained(sandbox: Sandbox, pipeline: Pipeline) -> None:
    """AWS takes whole units: 0.4 cpu hour in each of 4 hours is told as 0, 0, 1, 0 with the carry 0.6 left;
    GCP (2 vCPU per cpu hour) as whole units too. Everything converted is billed but the carry."""
    ents = world(sandbox, {"AWS": [(h, "0.4") for h in range(4)], "GCP": [(h, "1.25") for h in range(4)]})
    run_hours(pipeline, list(range(4)))
    result = pipeline.reconcile(DAY, at=at(8, day=26))
    assert result.success, failure_text(result)
    evaluation = check(result)
    assert evaluation.passed, evaluation.description
    found = lines(pipeline, at(8, day=26))
    assert figures(found[("AWS", "cpu_hour")]) == {
        "converted": Decimal("1.6"), "sent": Decimal("1.6"), "told": Decimal(1), "carry": Decimal("-0.6")}
    assert figures(found[("GCP", "vcpu_hours")]) == {
        "converted": Decimal(10), "sent": Decimal(10), "told": Decimal(10)}
    assert found[("AWS", "cpu_hour")].billed_dollars == Decimal("0.12")
    assert found[("GCP", "vcpu_hours")].billed_dollars == Decimal("1.0")
    assert evaluation.metadata["unexplained_units"].value == 0
    assert evaluation.metadata["billed_dollars"].value == 1.12
    ledger = pipeline.query("SELECT DISTINCT entitlement_id, marketplace_status FROM report_ledger ORDER BY 1")
    assert sorted(ledger) == sorted([(ents["AWS"], "billed"), (ents["GCP"], "billed")])


def test_a_report_carrying_two_days_tells_each_day_its_own_groups(sandbox: Sandbox, pipeline: Pipeline) -> None:
    """23:00's window runs late, after the next day's first: Suger's 02:00 run reports both groups in one
    report (5 whole units). Each day is told the quantity of its own groups; neither has anything unexplained."""
    world(sandbox, {"AWS": [(23, "2")]})
    customer = sandbox.metronome.customers()[0]["id"]
    cpu = sandbox.metronome.metrics()[0]["id"]
    sandbox.metronome.set_usage(customer, cpu, at(0, day=26), Decimal(3))
    for partition, when in (("2026-11-26-00:00", at(1, 5, day=26)), (key(23), at(1, 10, day=26))):
        result = pipeline.run(partition, at=when)
        assert result.success, failure_text(result)
    first = pipeline.reconcile(DAY, at=at(9, day=26))
    second = pipeline.reconcile("2026-11-26", at=at(9, day=26))
    assert check(first).passed and check(second).passed, (check(first).description, check(second).description)
    [report] = sandbox.suger.usage_record_reports()
    assert report["info"]["reportedRecords"] == {"cpu_hour": 5}
    assert figures(lines(pipeline, at(9, day=26))[("AWS", "cpu_hour")]) == {
        "converted": Decimal(2), "sent": Decimal(2), "told": Decimal(2)}
    with connect(pipeline.database(), read_only=True) as conn:
        [next_day] = reconcile(conn, datetime(2026, 11, 26).date(), at(9, day=26)).lines
    assert figures(next_day) == {"converted": Decimal(3), "sent": Decimal(3), "told": Decimal(3)}


def test_pending_units_near_their_deadline_are_at_risk(sandbox: Sandbox, pipeline: Pipeline) -> None:
    """auto_report off keeps every group pending. At 05:30 hour 0's AWS group has 30 min left before its 6 h
    deadline, inside Suger's 60 min forwarding lag: at risk; hour 4's is merely pending."""
    world(sandbox, {"AWS": [(0, "1"), (4, "2")]})
    pipeline.settings["auto_report"] = False
    for hour in (0, 4):
        result = pipeline.run(key(hour), at=at(5, 10))
        assert result.success, failure_text(result)
    result = pipeline.reconcile(DAY, at=at(5, 30))
    assert result.success, failure_text(result)
    assert check(result).passed and check(result).metadata["units:at_risk"].value == 1
    with connect(pipeline.database(), read_only=True) as conn:
        [line] = reconcile(conn, datetime(2026, 11, 25).date(), at(5, 30), deadlines=pipeline.config().deadlines).lines
    assert figures(line) == {"converted": Decimal(3), "sent": Decimal(0), "told": Decimal(0),
                             "pending": Decimal(2), "at_risk": Decimal(1)}
