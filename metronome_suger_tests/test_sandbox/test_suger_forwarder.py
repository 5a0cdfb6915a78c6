"""Suger's hourly forwarder and the marketplaces' own rules, over real HTTP on 127.0.0.1.

Each marketplace's deadline is checked at its exact boundary (accepted at the limit, refused one
minute after), at the run time Suger's hourly cadence gives a group; a refused group is REPORT_FAILED
and the marketplace's message is on its usage record report, as in production."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from suger_sdk_python.models import MeteringUsageRecordReport, MeteringUsageRecordReportInfo

from metronome_suger.sandbox.clock import SandboxClock
from metronome_suger.sandbox.constants import ORG_ID, SUGER_API_KEY
from metronome_suger.sandbox.server import Sandbox
from metronome_suger.sandbox.suger_forwarder import (
    INVOICED_AFTER,
    dimension_refusal,
    gcp_month_cutoff,
    marketplace_refusal,
)
from metronome_suger.sandbox.suger_state import SugerState

UTC = timezone.utc
NOW = datetime(2026, 11, 25, 13, 30, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
DIMS = [{"key": "cpu_hour", "name": "CPU hours", "rate": 0.25}]


def t(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


def z(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Org:
    state: SugerState
    clock: SandboxClock
    http: httpx.Client
    ents: dict[str, str]  # partner → entitlement id

    def report(self, partner: str, timestamp: datetime, group_id: str, qty: float = 1,
               records: dict[str, float] | None = None) -> dict[str, Any]:
        return self.report_to(self.ents[partner], timestamp, group_id, records or {"cpu_hour": qty})

    def report_to(self, ent: str, timestamp: datetime, group_id: str, records: dict[str, float]) -> dict[str, Any]:
        response = self.post_group(ent, timestamp, group_id, records)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def post_group(self, ent: str, timestamp: datetime, group_id: str, records: dict[str, float]) -> httpx.Response:
        body = {"id": group_id, "organizationID": ORG_ID, "entitlementID": ent,
                "records": records, "timestamp": z(timestamp)}
        return self.http.post(f"/org/{ORG_ID}/entitlement/{ent}/usageRecordGroup", json=body)

    def groups(self) -> dict[str, dict[str, Any]]:
        """Listed through the API: the request itself catches up Suger's hourly runs."""
        response = self.http.get(f"/org/{ORG_ID}/usageRecordGroup", params={"startDate": "2026-11-01"})
        assert response.status_code == 200, response.text
        return {g["id"]: g for g in response.json()["usageRecordGroups"]}

    def report_of(self, group_id: str) -> dict[str, Any]:
        [report] = [r for r in self.state.usage_record_reports()
                    if group_id in r["info"]["usageRecordGroupIds"]]
        return report


@pytest.fixture
def org() -> Iterator[Org]:
    with Sandbox(customers=0, now=NOW) as sandbox:
        state = sandbox.suger
        ents = {}
        for partner in ("AWS", "AZURE", "GCP"):
            buyer = state.add_buyer(f"{partner} buyer", partner=partner)["id"]
            ents[partner] = state.add_entitlement(buyer, partner=partner, dimensions=DIMS,
                                                  id=f"ent-{partner.lower()}")["id"]
        with httpx.Client(base_url=sandbox.suger_url, timeout=10,
                          headers={"Authorization": f"Key {SUGER_API_KEY}"}) as http:
            yield Org(state, sandbox.clock, http, ents)


# -- each marketplace's boundary, at the hourly run that forwards the group ----------------------------
@pytest.mark.parametrize(("partner", "in_time", "late", "needle"), [
    # AWS BatchMeterUsage: Timestamp at most 6 h before the call (the 14:00 run)
    ("AWS", t(25, 8), t(25, 7, 59), "TimestampOutOfBoundsException"),
    # Azure: effectiveStartTime at most 24 h old
    ("AZURE", t(24, 14), t(24, 13, 59), "Expired"),
    # GCP: within 1 h of the END of the usage hour: the 12:00 hour until 14:00, the 11:00 hour until 13:00
    ("GCP", t(25, 12, 59), t(25, 11, 59), "within 1 hour of its end"),
])
def test_the_hourly_run_applies_each_marketplace_deadline(
    org: Org, partner: str, in_time: datetime, late: datetime, needle: str,
) -> None:
    org.report(partner, in_time, "in-time")
    org.report(partner, late, "late")
    assert {g["status"] for g in org.groups().values()} == {"CREATED"}
    org.clock.set(t(25, 14))  # Suger's 14:00 run
    groups = org.groups()
    assert groups["in-time"]["status"] == "REPORTED" and groups["in-time"]["reportedTime"] == "2026-11-25T14:00:00Z"
    assert groups["late"]["status"] == "REPORT_FAILED" and groups["late"]["reportedTime"] is None
    refused, accepted = org.report_of("late"), org.report_of("in-time")
    assert refused["id"] != accepted["id"]  # accepted and refused groups are separate reports
    assert refused["info"]["status"] == "FAILED" and needle in refused["info"]["message"]
    assert accepted["info"]["status"] == "SUCCESS" and "message" not in accepted["info"]
    assert groups["late"]["usageRecordReportID"] == refused["id"]


@pytest.mark.parametrize(("partner", "timestamp", "limit"), [
    ("AWS", t(25, 8, 17), t(25, 14, 17)),
    ("AZURE", t(24, 9, 41), t(25, 9, 41)),
    ("GCP", t(25, 11, 59), t(25, 13)),  # the 11:00 hour ends at 12:00, + 1 h
])
def test_accepted_exactly_at_the_limit_refused_one_minute_after(
    org: Org, partner: str, timestamp: datetime, limit: datetime,
) -> None:
    org.clock.set(timestamp + MINUTE)
    org.report(partner, timestamp, "at-limit")
    assert org.state.run_forwarder(limit) == ["at-limit"]
    org.report(partner, timestamp, "after")
    assert org.state.run_forwarder(limit + MINUTE) == ["after"]
    statuses = {g["id"]: g["status"] for g in org.state.groups()}
    assert statuses == {"at-limit": "REPORTED", "after": "REPORT_FAILED"}


def test_the_marketplace_message_names_the_rule_and_the_times(org: Org) -> None:
    org.report("AWS", t(25, 7), "aws-late")
    org.clock.set(t(25, 14, 5))
    assert org.groups()["aws-late"]["status"] == "REPORT_FAILED"
    report = org.report_of("aws-late")
    assert report["info"]["message"] == (
        "AWS BatchMeterUsage: TimestampOutOfBoundsException: the usage record Timestamp "
        "2026-11-25T07:00:00Z is more than 6 hours before the call at 2026-11-25T14:00:00Z")
    assert report["entitlementID"] == org.ents["AWS"] and report["partner"] == "AWS"
    assert (report["info"]["startTime"], report["info"]["endTime"]) == ("2026-11-25T07:00:00Z", "2026-11-25T08:00:00Z")
    # the report is the SDK's MeteringUsageRecordReport, field for field
    known = set(MeteringUsageRecordReport.model_fields) | {
        f.alias for f in MeteringUsageRecordReport.model_fields.values() if f.alias}
    info_known = {f.alias or name for name, f in MeteringUsageRecordReportInfo.model_fields.items()}
    assert set(report) <= known and set(report["info"]) <= info_known
    parsed = MeteringUsageRecordReport.from_dict(report)
    assert parsed is not None and parsed.info is not None and parsed.info.status is not None
    assert parsed.info.status.value == "FAILED" and parsed.info.usage_record_group_ids == ["aws-late"]


def test_a_retried_group_meets_the_deadline_again_at_its_new_run(org: Org) -> None:
    org.state.fail_next_report(org.ents["GCP"])
    org.report("GCP", t(25, 12), "g")
    org.clock.set(t(25, 14, 5))
    assert org.groups()["g"]["status"] == "REPORT_FAILED"
    assert "fail_next_report" in org.report_of("g")["info"]["message"]
    assert org.http.post(f"/org/{ORG_ID}/usageRecordGroup/g/retry").status_code == 200
    org.clock.set(t(25, 15, 5))  # the 15:00 run: an hour past GCP's limit for the 12:00 hour
    assert org.groups()["g"]["status"] == "REPORT_FAILED"
    latest = [r for r in org.state.usage_record_reports() if "g" in r["info"]["usageRecordGroupIds"]][-1]
    assert "GCP services.report" in latest["info"]["message"]


# -- GCP month-end cutoff -------------------------------------------------------------------------------
def test_gcp_month_end_cutoff_is_0100_us_pacific_on_the_first() -> None:
    assert gcp_month_cutoff(datetime(2026, 11, 30, 20, tzinfo=UTC)) == datetime(2026, 12, 1, 9, tzinfo=UTC)  # PST
    assert gcp_month_cutoff(datetime(2026, 10, 31, 20, tzinfo=UTC)) == datetime(2026, 11, 1, 8, tzinfo=UTC)  # PDT
    # 2026-12-01 07:00Z is still 30 November in California: November's usage
    assert gcp_month_cutoff(datetime(2026, 12, 1, 7, tzinfo=UTC)) == datetime(2026, 12, 1, 9, tzinfo=UTC)
    assert gcp_month_cutoff(datetime(2026, 12, 1, 8, tzinfo=UTC)) == datetime(2027, 1, 1, 9, tzinfo=UTC)


def test_gcp_refuses_a_month_after_its_cutoff(org: Org) -> None:
    last_hour = datetime(2026, 12, 1, 7, 30, tzinfo=UTC)  # 23:30 on 30 November, US Pacific
    org.clock.set(last_hour)
    org.report("GCP", last_hour, "in-time")
    assert org.state.run_forwarder(datetime(2026, 12, 1, 9, tzinfo=UTC)) == ["in-time"]
    org.report("GCP", last_hour, "after-cutoff")
    org.state.run_forwarder(datetime(2026, 12, 1, 9, 1, tzinfo=UTC))
    assert org.state.group("in-time")["status"] == "REPORTED"
    assert org.state.group("after-cutoff")["status"] == "REPORT_FAILED"
    assert org.report_of("after-cutoff")["info"]["message"] == (
        "GCP services.report: usage of 2026-11 (US Pacific) had to be reported by 2026-12-01 01:00 "
        "US Pacific (2026-12-01T09:00:00Z); reported at 2026-12-01T09:01:00Z")


def test_marketplace_refusal_is_the_marketplaces_rule_alone() -> None:
    at = t(25, 14)
    assert marketplace_refusal("AWS", at - timedelta(hours=6), at) is None
    assert marketplace_refusal("AZURE", at - timedelta(hours=24), at) is None
    assert marketplace_refusal("GCP", t(25, 12), at) is None
    assert marketplace_refusal("GCP", t(25, 11, 59), at) is not None
    with pytest.raises(ValueError, match="IBM"):
        marketplace_refusal("IBM", at, at)
    assert dimension_refusal("AWS", ["cpu_hour", "CPU hours"], {"cpu_hour", "CPU hours"}, "p") is None
    assert dimension_refusal("AZURE", ["cpu_hour", "a", "b"], {"cpu_hour"}) == (
        "AZURE batchUsageEvent: InvalidDimension: the dimension a is not defined on the plan")
    with pytest.raises(ValueError, match="IBM"):
        dimension_refusal("IBM", ["x"], set())


# -- Suger's hourly cadence ------------------------------------------------------------------------------
def test_a_group_is_forwarded_by_the_first_hourly_run_after_it_was_handed_over(org: Org) -> None:
    org.clock.set(t(25, 10, 59))
    org.report("AWS", t(25, 9), "at-10-59")
    org.clock.set(t(25, 11, 1))
    org.report("AWS", t(25, 10), "at-11-01")
    first = org.groups()
    assert first["at-10-59"]["reportedTime"] == "2026-11-25T11:00:00Z"
    assert first["at-11-01"]["status"] == "CREATED"
    org.clock.set(t(25, 16, 30))  # one request catches up every run in between
    later = org.groups()
    assert later["at-11-01"]["reportedTime"] == "2026-11-25T12:00:00Z"
    assert later["at-11-01"]["status"] == "REPORTED"


def test_catching_up_applies_the_rules_at_each_groups_own_run(org: Org) -> None:
    """Hours later, a GCP group handed over in time is still judged at its own (12:00) run."""
    org.clock.set(t(25, 11, 5))
    org.report("GCP", t(25, 10), "on-time")
    org.clock.set(t(25, 12, 5))
    org.report("GCP", t(25, 10), "one-run-late", qty=2)
    org.clock.set(t(25, 18))
    groups = org.groups()
    assert groups["on-time"]["status"] == "REPORTED" and groups["on-time"]["reportedTime"] == "2026-11-25T12:00:00Z"
    assert groups["one-run-late"]["status"] == "REPORT_FAILED"
    assert "reported at 2026-11-25T13:00:00Z" in org.report_of("one-run-late")["info"]["message"]


# -- cancellation: AWS meters the remaining usage within 1 h of deprovisioning ------------------------------
def test_aws_takes_a_cancelled_subscriptions_last_usage_only_within_an_hour(org: Org) -> None:
    ent = org.ents["AWS"]
    org.clock.set(t(25, 10, 5))
    org.report("AWS", t(25, 9), "before-cancel")
    org.state.cancel_entitlement(ent, t(25, 10, 20))
    org.clock.set(t(25, 10, 30))
    org.report("AWS", t(25, 10), "forwarded-at-11")
    org.clock.set(t(25, 11, 5))
    org.report("AWS", t(25, 10, 15), "forwarded-at-12")
    org.clock.set(t(25, 12, 5))
    groups = org.groups()
    assert groups["before-cancel"]["status"] == groups["forwarded-at-11"]["status"] == "REPORTED"
    assert groups["forwarded-at-12"]["status"] == "REPORT_FAILED"
    assert "CustomerNotSubscribed" in org.report_of("forwarded-at-12")["info"]["message"]


# -- REPORT_PENDING and INVALID -------------------------------------------------------------------------
def test_held_report_leaves_groups_report_pending_until_released(org: Org) -> None:
    org.state.forwarder.hold_next_report(org.ents["AWS"])
    org.report("AWS", t(25, 13), "held")
    org.report("AZURE", t(25, 13), "free")
    org.clock.set(t(25, 14, 10))
    groups = org.groups()
    assert (groups["held"]["status"], groups["free"]["status"]) == ("REPORT_PENDING", "REPORTED")
    assert org.report_of("held")["info"]["status"] == "CREATED"  # the marketplace call is in flight
    assert org.http.delete(f"/org/{ORG_ID}/usageRecordGroup/held").status_code == 400
    org.clock.set(t(25, 15, 30))
    assert org.groups()["held"]["status"] == "REPORT_PENDING"  # later runs leave it alone
    assert org.state.forwarder.release() == ["held"]
    released = org.groups()["held"]
    assert released["status"] == "REPORTED" and released["reportedTime"] == "2026-11-25T15:30:00Z"
    assert org.report_of("held")["info"]["status"] == "SUCCESS"


def test_a_held_call_gets_the_verdict_of_its_own_run_time(org: Org) -> None:
    org.state.forwarder.hold_next_report(org.ents["GCP"])
    org.report("GCP", t(25, 12), "in-time-when-called")
    org.clock.set(t(25, 14, 10))
    assert org.groups()["in-time-when-called"]["status"] == "REPORT_PENDING"
    org.clock.set(t(25, 20))
    org.state.forwarder.release(org.ents["GCP"])
    assert org.groups()["in-time-when-called"]["status"] == "REPORTED"


def test_invalidate_next_accepts_with_200_then_marks_invalid_at_the_next_run(org: Org) -> None:
    org.state.forwarder.invalidate_next(org.ents["AWS"], "dimension cpu_hour is not priced on the offer")
    stored = org.report("AWS", t(25, 13), "invalid-later")
    assert stored["status"] == "CREATED"
    org.report("AWS", t(25, 13), "fine")
    org.clock.set(t(25, 14, 10))
    groups = org.groups()
    assert (groups["invalid-later"]["status"], groups["fine"]["status"]) == ("INVALID", "REPORTED")
    assert groups["invalid-later"]["usageRecordReportID"] is None
    assert org.state.forwarder.invalid_message("invalid-later") == "dimension cpu_hour is not priced on the offer"
    deleted = org.http.delete(f"/org/{ORG_ID}/usageRecordGroup/invalid-later")  # INVALID can be deleted
    assert deleted.status_code == 200 and deleted.json()["status"] == "DELETED"


# -- GET usageRecordReport and usageRecordReport/aggregate ----------------------------------------------
def _reports(org: Org, **params: Any) -> httpx.Response:
    return org.http.get(f"/org/{ORG_ID}/usageRecordReport", params=params)


def test_report_routes_filter_page_and_refuse_bad_parameters(org: Org) -> None:
    org.report("AWS", t(25, 12), "aws-1", qty=3)
    org.report("AZURE", t(25, 12), "azure-1", qty=2)
    org.report("GCP", t(25, 12, 30), "gcp-1", qty=5)
    org.clock.set(t(25, 14, 5))  # the 14:00 run reports all three
    assert _reports(org).json()["nextOffset"] == 0
    everything = _reports(org).json()["usageRecordReports"]
    assert {r["entitlementID"] for r in everything} == set(org.ents.values())
    for name, value in [("partner", "AZURE"), ("entitlementId", org.ents["GCP"]),
                        ("buyerId", everything[0]["buyerID"])]:
        found = _reports(org, **{name: value}).json()["usageRecordReports"]
        assert len(found) == 1 and value in (found[0]["partner"], found[0]["entitlementID"], found[0]["buyerID"])
    assert _reports(org, partner="AWS", entitlementId=org.ents["GCP"]).json()["usageRecordReports"] == []
    # dates select by the report's creationTime (UTC day), both ends inclusive
    assert len(_reports(org, startDate="2026-11-25", endDate="2026-11-25").json()["usageRecordReports"]) == 3
    assert _reports(org, startDate="2026-11-26", endDate="2026-11-30").json()["usageRecordReports"] == []
    assert _reports(org, endDate="2026-11-24").json()["usageRecordReports"] == []
    first = _reports(org, limit=2).json()
    rest = _reports(org, limit=2, offset=2).json()
    assert (len(first["usageRecordReports"]), first["nextOffset"]) == (2, 2)
    assert (len(rest["usageRecordReports"]), rest["nextOffset"]) == (1, 0)
    assert [r["id"] for r in first["usageRecordReports"] + rest["usageRecordReports"]] == [r["id"] for r in everything]
    assert len(_reports(org, limit=1000).json()["usageRecordReports"]) == 3
    for params, needle in [({"limit": 1001}, "limit must be between 1 and 1000"), ({"limit": 0}, "limit"),
                           ({"offset": "x"}, "offset must be an integer"), ({"partner": "IBM"}, "partner"),
                           ({"startDate": "2026-11-31"}, "startDate must be a date in YYYY-MM-DD"),
                           ({"endDate": "25/11/2026"}, "endDate must be a date in YYYY-MM-DD"),
                           ({"startDate": "2026-11-26", "endDate": "2026-11-25"}, "must not be after")]:
        refused = _reports(org, **params)
        assert refused.status_code == 400 and needle in refused.json(), (params, refused.text)


def test_aggregate_sums_billed_whole_units_by_day_and_dimension(org: Org) -> None:
    org.report("AWS", t(25, 12), "a", qty=3)
    org.report("AWS", t(25, 7), "late", qty=10)  # refused at the 14:00 run: FAILED, not billed
    org.report("AZURE", t(25, 12), "z", qty=2)
    org.clock.set(t(25, 14, 5))
    org.report("AWS", t(25, 14), "b", qty=4)
    org.clock.set(t(26, 1, 5))  # the 15:00 run reports b on the 25th
    org.report("AWS", t(26, 1), "c", qty=1)
    org.clock.set(t(26, 2, 5))  # the 02:00 run on the 26th
    assert org.report_of("late")["info"]["reportedRecords"] == {"cpu_hour": 10}  # what the refused call asked

    def aggregate(**params: str) -> httpx.Response:
        base = {"partner": "AWS", "granularity": "DAY", "startDate": "2026-11-25", "endDate": "2026-11-26"}
        return org.http.get(f"/org/{ORG_ID}/usageRecordReport/aggregate", params={**base, **params})

    assert aggregate().json() == [{"date": "2026-11-25", "dimensionKey": "cpu_hour", "quantity": 7},
                                  {"date": "2026-11-26", "dimensionKey": "cpu_hour", "quantity": 1}]
    assert aggregate(endDate="2026-11-25").json() == [{"date": "2026-11-25", "dimensionKey": "cpu_hour",
                                                       "quantity": 7}]
    assert aggregate(granularity="month").json() == [{"date": "2026-11", "dimensionKey": "cpu_hour", "quantity": 8}]
    assert aggregate(partner="AZURE").json() == [{"date": "2026-11-25", "dimensionKey": "cpu_hour", "quantity": 2}]
    for params, needle in [({"granularity": "WEEK"}, "granularity"), ({"partner": ""}, "partner"),
                           ({"startDate": ""}, "startDate and endDate are required"),
                           ({"endDate": "2026-02-30"}, "endDate must be a date")]:
        refused = aggregate(**params)
        assert refused.status_code == 400 and needle in refused.json(), (params, refused.text)


def test_a_failed_report_keeps_the_carry_and_names_its_prices_and_request(org: Org) -> None:
    """AWS and GCP take whole units: the fraction waits for the next SUCCESS report; a FAILED call
    moves nothing. Azure takes the decimals as they are."""
    for partner in ("AWS", "GCP", "AZURE"):
        org.report(partner, t(25, 12), f"{partner}-1", qty=1.5)
    org.state.fail_next_report(org.ents["AWS"])
    org.clock.set(t(25, 14, 5))
    for partner in ("AWS", "GCP", "AZURE"):
        org.report(partner, t(25, 13), f"{partner}-2", qty=1.75)
    org.clock.set(t(25, 15, 5))
    assert {g["status"] for g in org.groups().values()} == {"REPORTED", "REPORT_FAILED"}  # the 15:00 run
    info = {gid: org.report_of(gid)["info"] for gid in ("AWS-1", "AWS-2", "GCP-1", "GCP-2", "AZURE-2")}
    assert info["AWS-1"]["status"] == "FAILED" and info["AWS-1"]["reportedRecords"] == {"cpu_hour": 1}
    assert info["AWS-1"]["decimalParts"] == info["AWS-1"]["newDecimalParts"] == {"cpu_hour": 0}
    assert (info["AWS-2"]["reportedRecords"], info["AWS-2"]["newDecimalParts"]) == ({"cpu_hour": 1}, {"cpu_hour": 0.75})
    assert (info["GCP-1"]["reportedRecords"], info["GCP-1"]["newDecimalParts"]) == ({"cpu_hour": 1}, {"cpu_hour": 0.5})
    assert (info["GCP-2"]["reportedRecords"], info["GCP-2"]["decimalParts"], info["GCP-2"]["newDecimalParts"]) == (
        {"cpu_hour": 2}, {"cpu_hour": 0.5}, {"cpu_hour": 0.25})
    assert info["AZURE-2"]["reportedRecords"] == {"cpu_hour": 1.75} and "decimalParts" not in info["AZURE-2"]
    assert info["AWS-2"]["dimensionUnitPrice"] == {"cpu_hour": 0.25}
    [aws_record] = info["AWS-2"]["awsMeteringRequest"]["UsageRecords"]
    assert aws_record == {"CustomerIdentifier": org.report_of("AWS-2")["buyerID"], "Dimension": "cpu_hour",
                          "Quantity": 1, "Timestamp": "2026-11-25T13:00:00Z"}
    [metric_set] = info["GCP-2"]["gcpMeteringRequest"]["metricValueSets"]
    assert metric_set["metricValues"][0]["int64Value"] == "2"
    assert info["AZURE-2"]["azureMeteringRequest"]["request"][0]["effectiveStartTime"] == "2026-11-25T13:00:00Z"
    parsed = MeteringUsageRecordReport.from_dict(org.report_of("GCP-2"))
    assert parsed is not None and parsed.info is not None and parsed.info.gcp_metering_request is not None


# -- INVOICED a day after the report (usage_record_report_status.py) ----------------------------------------
def _statuses(org: Org) -> dict[str, str]:
    """Each report's status as ``GET usageRecordReport`` lists it, by its (only) group id."""
    listed = _reports(org, startDate="2026-11-25").json()["usageRecordReports"]
    return {r["info"]["usageRecordGroupIds"][0]: r["info"]["status"] for r in listed}


def _aggregate(org: Org, partner: str) -> Any:
    params = {"partner": partner, "granularity": "DAY", "startDate": "2026-11-25", "endDate": "2026-11-25"}
    return org.http.get(f"/org/{ORG_ID}/usageRecordReport/aggregate", params=params).json()


def test_a_success_report_is_invoiced_exactly_a_day_after_its_creation(org: Org) -> None:
    assert INVOICED_AFTER == timedelta(hours=24)
    org.report("AWS", t(25, 13), "billed", qty=2)
    org.clock.set(t(25, 14, 5))  # the 14:00 run: the report's creationTime is 14:00
    assert org.groups()["billed"]["status"] == "REPORTED"
    assert org.report_of("billed")["creationTime"] == "2026-11-25T14:00:00Z"
    org.clock.set(t(26, 14) - timedelta(seconds=1))  # 23:59:59 after creation
    assert _statuses(org) == {"billed": "SUCCESS"}
    org.clock.set(t(26, 14))  # 24:00:00 after creation
    assert _statuses(org) == {"billed": "INVOICED"}
    group = org.groups()["billed"]
    assert (group["status"], group["reportedTime"]) == ("REPORTED", "2026-11-25T14:00:00Z")
    assert _aggregate(org, "AWS") == [{"date": "2026-11-25", "dimensionKey": "cpu_hour", "quantity": 2}]
    org.clock.set(t(25, 15))  # the clock set back: an invoiced report stays INVOICED
    assert _statuses(org) == {"billed": "INVOICED"}
    assert org.state.usage_record_reports()[0]["info"]["status"] == "INVOICED"


def test_failed_and_in_flight_reports_never_turn_invoiced(org: Org) -> None:
    org.report("AWS", t(25, 7), "late")  # more than 6 h before the 14:00 run: refused
    org.state.fail_next_report(org.ents["AZURE"])
    org.report("AZURE", t(25, 13), "injected")
    org.state.forwarder.hold_next_report(org.ents["GCP"])
    org.report("GCP", t(25, 13), "in-flight")
    org.clock.set(t(25, 14, 5))
    assert {gid: g["status"] for gid, g in org.groups().items()} == {
        "late": "REPORT_FAILED", "injected": "REPORT_FAILED", "in-flight": "REPORT_PENDING"}
    org.clock.set(t(25, 14) + timedelta(days=7))
    assert _statuses(org) == {"late": "FAILED", "injected": "FAILED", "in-flight": "CREATED"}
    assert _aggregate(org, "AWS") == _aggregate(org, "AZURE") == _aggregate(org, "GCP") == []
    # Once the held call is answered (accepted, its own run's verdict) it is SUCCESS; its creationTime
    # is a week old, so the next read shows it INVOICED at once.
    assert org.state.forwarder.release(org.ents["GCP"]) == ["in-flight"]
    assert _statuses(org) == {"late": "FAILED", "injected": "FAILED", "in-flight": "INVOICED"}
    assert {gid: g["status"] for gid, g in org.groups().items()} == {
        "late": "REPORT_FAILED", "injected": "REPORT_FAILED", "in-flight": "REPORTED"}


# -- a dimension the marketplace no longer knows -------------------------------------------------------------
GPU = {"key": "gpu_hour", "name": "GPU hours", "rate": 2}


@pytest.mark.parametrize(("partner", "message"), [
    ("AWS", "AWS BatchMeterUsage: InvalidUsageDimensionException: the usage dimension gpu_hour does not "
            "match one of the UsageDimensions associated with the product product-aws"),
    ("AZURE", "AZURE batchUsageEvent: InvalidDimension: the dimension gpu_hour is not defined on the plan"),
    ("GCP", "GCP services.report: INVALID_ARGUMENT: unknown metric product-gcp/gpu_hour (dimension gpu_hour)"),
])
def test_a_dimension_gone_after_the_group_was_accepted_is_refused_by_the_marketplace(
    org: Org, partner: str, message: str,
) -> None:
    ent = org.ents[partner]
    org.state.set_dimensions(ent, [*DIMS, GPU])
    org.report(partner, t(25, 13), "gpu", records={"cpu_hour": 3, "gpu_hour": 1})
    org.report(partner, t(25, 13), "cpu", qty=2)
    org.state.set_dimensions(ent, DIMS)  # the offer drops gpu_hour before Suger's 14:00 run
    shown = org.http.get(f"/org/{ORG_ID}/entitlement/{ent}").json()["info"]["dimensions"]
    assert [d["key"] for d in shown] == ["cpu_hour"]
    again = org.post_group(ent, t(25, 13), "gpu-again", {"gpu_hour": 1})  # Suger itself refuses it now
    assert (again.status_code, again.json()) == (
        400, f"record key 'gpu_hour' is not a metering dimension key or name of entitlement {ent}")
    org.clock.set(t(25, 14, 5))
    groups = org.groups()
    assert (groups["gpu"]["status"], groups["gpu"]["reportedTime"]) == ("REPORT_FAILED", None)
    assert (groups["cpu"]["status"], groups["cpu"]["reportedTime"]) == ("REPORTED", "2026-11-25T14:00:00Z")
    refused, accepted = org.report_of("gpu"), org.report_of("cpu")
    assert (refused["info"]["status"], refused["info"]["message"]) == ("FAILED", message)
    assert refused["info"]["usageRecordGroupIds"] == ["gpu"] and groups["gpu"]["usageRecordReportID"] == refused["id"]
    assert (accepted["info"]["status"], accepted["info"]["usageRecordGroupIds"]) == ("SUCCESS", ["cpu"])
    assert "message" not in accepted["info"] and accepted["info"]["reportedRecords"] == {"cpu_hour": 2}
    assert groups["cpu"]["usageRecordReportID"] == accepted["id"]
    assert len(org.state.usage_record_reports()) == 2


def test_a_late_group_gets_the_deadline_refusal_before_the_dimension_one(org: Org) -> None:
    """Deadlines first; groups refused with the same message share one FAILED report."""
    ent = org.ents["AWS"]
    org.state.set_dimensions(ent, [*DIMS, GPU])
    org.report("AWS", t(25, 7), "late-gpu", records={"gpu_hour": 1})
    org.report("AWS", t(25, 9), "gpu-a", records={"gpu_hour": 1})
    org.report("AWS", t(25, 10), "gpu-b", records={"gpu_hour": 4})
    org.state.set_dimensions(ent, DIMS)
    org.clock.set(t(25, 14, 5))
    assert {g["status"] for g in org.groups().values()} == {"REPORT_FAILED"}
    late, gone = org.report_of("late-gpu"), org.report_of("gpu-a")
    assert late["info"]["message"] == (
        "AWS BatchMeterUsage: TimestampOutOfBoundsException: the usage record Timestamp "
        "2026-11-25T07:00:00Z is more than 6 hours before the call at 2026-11-25T14:00:00Z")
    assert gone["info"]["message"] == (
        "AWS BatchMeterUsage: InvalidUsageDimensionException: the usage dimension gpu_hour does not "
        "match one of the UsageDimensions associated with the product product-aws")
    assert (gone["info"]["status"], gone["info"]["usageRecordGroupIds"]) == ("FAILED", ["gpu-a", "gpu-b"])
    assert gone["info"]["reportedRecords"] == {"gpu_hour": 5}  # what the refused call asked
    assert [r["id"] for r in org.state.usage_record_reports()] == [late["id"], gone["id"]]


def test_the_marketplace_knows_the_dimensions_past_the_50_the_entitlement_shows(org: Org) -> None:
    buyer = org.state.get_entitlement(org.ents["AWS"])["buyerID"]
    dims = [{"key": f"d{n}", "name": f"D {n}", "rate": n} for n in range(60)]
    org.state.add_entitlement(buyer, partner="AWS", dimensions=dims, id="ent-big", product_id="prod-big")
    org.report_to("ent-big", t(25, 13), "d55", {"d55": 2})
    org.report_to("ent-big", t(25, 13), "by-name", {"D 3": 1})  # Suger takes a dimension's name as its key
    org.clock.set(t(25, 14, 5))
    groups = org.groups()
    assert (groups["d55"]["status"], groups["by-name"]["status"]) == ("REPORTED", "REPORTED")
    info = org.report_of("d55")["info"]
    assert (info["status"], info["usageRecordGroupIds"]) == ("SUCCESS", ["d55", "by-name"])
    assert info["reportedRecords"] == {"d55": 2, "D 3": 1}
