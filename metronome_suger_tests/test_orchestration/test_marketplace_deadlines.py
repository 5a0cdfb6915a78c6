"""Marketplace deadlines end to end: our prediction (in time / at risk / expired) against what the Suger
emulator's marketplaces accept when its hourly forwarder hands them the groups (CONTRACT §5)."""

from dataclasses import dataclass
from datetime import datetime, timezone

import dagster as dg
import pytest

from metronome_suger.clients.suger import SugerClient
from metronome_suger.core.deadlines import Urgency
from metronome_suger.core.windows import window_for_key
from metronome_suger.sandbox.server import Sandbox
from metronome_suger.steps.report import payload
from metronome_suger.storage.db import connect
from metronome_suger.storage.ledger import groups_in_window
from metronome_suger_tests.conftest import AWS_DIMS, GCP_DIMS, Pipeline, failure_text

UTC = timezone.utc
AZURE_DIMS = [{"key": "compute", "name": "Compute", "rate": 0.2}]


def at(hour: int, minute: int = 0, day: int = 25) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


@dataclass
class World:
    cpu: str
    customers: dict[str, str]  # partner -> Metronome customer
    entitlements: dict[str, str]  # partner -> entitlement


def build_world(sb: Sandbox, pipeline: Pipeline, hours: list[int]) -> World:
    """One customer per marketplace, each with 1 cpu hour of usage in every given hour of Nov 25."""
    m, s = sb.metronome, sb.suger
    cpu = m.add_billable_metric("cpu_hours", aggregation_type="SUM")["id"]
    customers, entitlements = {}, {}
    for partner, dims in (("AWS", AWS_DIMS), ("AZURE", AZURE_DIMS), ("GCP", GCP_DIMS)):
        customers[partner] = m.add_customer(f"{partner} customer")["id"]
        buyer = s.add_buyer(f"{partner} buyer", partner=partner, metronome_customer_id=customers[partner])["id"]
        entitlements[partner] = s.add_entitlement(buyer, partner=partner, dimensions=dims)["id"]
        for hour in hours:
            m.set_usage(customers[partner], cpu, at(hour), 1)
    pipeline.settings["dimension_conversion"]["AZURE"] = {
        "cpu_hours": [{"dimension_key": "compute", "mapping_mode": "QUANTITY", "multiplier": 1}]}
    return World(cpu, customers, entitlements)


def deadline_check(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    return next(e for e in result.get_asset_check_evaluations() if e.check_name == "report_deadline")


def ledger(pipeline: Pipeline) -> dict[tuple[str, str], tuple[str, str, datetime | None]]:
    """(window, partner) -> (record group id, ledger status, handed over at)."""
    rows = pipeline.query("SELECT window_start, partner, record_group_id, status, sent_at FROM report_ledger")
    return {(f"{w.astimezone(UTC):%H:%M}", p): (g, s, sent) for w, p, g, s, sent in rows}


def test_prediction_matches_what_the_marketplaces_accept(sandbox: Sandbox, pipeline: Pipeline) -> None:
    build_world(sandbox, pipeline, [8, 10, 13])
    config = pipeline.config()
    rules = config.deadlines
    # Each window handed over at a chosen moment, in clock order.
    runs = [("2026-11-25-13:00", at(14, 5)), ("2026-11-25-10:00", at(15, 30)), ("2026-11-25-08:00", at(15, 40))]
    expected = {
        # 13:00 at 14:05: AWS due 19:00, Azure due 13:00 tomorrow, GCP due 15:00 (55 min left: at risk)
        ("13:00", "AWS"): Urgency.OK, ("13:00", "AZURE"): Urgency.OK, ("13:00", "GCP"): Urgency.AT_RISK,
        # 10:00 at 15:30: AWS due 16:00 (at risk), GCP was due 12:00 (expired)
        ("10:00", "AWS"): Urgency.AT_RISK, ("10:00", "AZURE"): Urgency.OK, ("10:00", "GCP"): Urgency.EXPIRED,
        # 08:00 at 15:40: AWS was due 14:00 (expired)
        ("08:00", "AWS"): Urgency.EXPIRED, ("08:00", "AZURE"): Urgency.OK, ("08:00", "GCP"): Urgency.EXPIRED,
    }
    results = {}
    key = sandbox.env()["SUGER_API_KEY"]
    for partition, when in runs:
        results[partition] = result = pipeline.run(partition, at=when)
        assert result.success, failure_text(result)
        # What Suger would have done with the groups we held back: hand them over anyway, by hand.
        window = window_for_key(partition, hourly=True)
        with connect(pipeline.database(), read_only=True) as conn:
            held_back = groups_in_window(conn, window, ("expired",))
        with SugerClient(sandbox.suger_url, sandbox.org_id, key) as suger:
            for group in held_back:
                assert suger.report_usage_record_group(payload(sandbox.org_id, group)).outcome == "created"

    held = ledger(pipeline)
    predicted = {k: rules.urgency(sent or at(15, 40), when_ts(k), k[1]) for k, (_, _, sent) in held.items()}
    assert predicted == expected
    assert {k for k, (_, status, _) in held.items() if status == "expired"} == {
        k for k, u in expected.items() if u is Urgency.EXPIRED}

    sandbox.clock.set(at(12, day=27))  # two days later: every hourly forwarder run has happened
    sandbox.suger.tick()
    at_suger = {g["id"]: g["status"] for g in sandbox.suger.groups()}
    for k, (gid, _, _) in held.items():
        accepted = at_suger[gid] == "REPORTED"
        assert accepted is (expected[k] is not Urgency.EXPIRED), (k, at_suger[gid])
    failed = [r["info"] for r in sandbox.suger.usage_record_reports() if r["info"]["status"] == "FAILED"]
    messages = {gid: info["message"] for info in failed for gid in info["usageRecordGroupIds"]}
    assert set(messages) == {held[k][0] for k, u in expected.items() if u is Urgency.EXPIRED}
    assert "TimestampOutOfBoundsException" in messages[held[("08:00", "AWS")][0]]
    assert "within 1 hour of its end" in messages[held[("10:00", "GCP")][0]]

    at_risk = deadline_check(results["2026-11-25-13:00"])
    assert not at_risk.passed and at_risk.severity == dg.AssetCheckSeverity.WARN
    assert at_risk.metadata["at_risk_dollars:GCP"].value == pytest.approx(0.2)  # 2 vCPU hours × $0.10
    lost = deadline_check(results["2026-11-25-08:00"])
    assert not lost.passed and lost.severity == dg.AssetCheckSeverity.ERROR
    assert lost.metadata["expired_groups"].value == 2
    assert lost.metadata["lost_dollars"].value == pytest.approx(0.32)  # AWS $0.12 + GCP $0.20
    assert "2 group(s) expired unsent: $0.32 of revenue lost (AWS 1 groups $0.12, GCP 1 groups $0.20)" \
        in lost.description


def when_ts(key: tuple[str, str]) -> datetime:
    hour, minute = (int(p) for p in key[0].split(":"))
    return at(hour, minute)


def test_at_risk_groups_are_sent_first(sandbox: Sandbox, pipeline: Pipeline) -> None:
    """Handed over at 15:30, one request at a time: in each window the at-risk group goes first, the others
    by deadline; the expired one is not sent."""
    world = build_world(sandbox, pipeline, [10, 14])
    pipeline.settings["max_concurrency"] = 1
    partner_of = {e: p for p, e in world.entitlements.items()}
    order = []
    for partition in ("2026-11-25-10:00", "2026-11-25-14:00"):
        sandbox.suger_log.clear()
        assert pipeline.run(partition, at=at(15, 30)).success
        order.append([partner_of[r.path.split("/")[4]] for r in sandbox.suger_log.find(method="POST")])
    # 10:00: AWS due 16:00 (at risk), Azure due tomorrow 10:00; GCP was due 12:00 (expired, not sent).
    # 14:00: GCP due 16:00 (at risk), then AWS due 20:00, then Azure due tomorrow 14:00.
    assert order == [["AWS", "AZURE"], ["GCP", "AWS", "AZURE"]]
    assert ledger(pipeline)[("10:00", "GCP")][1] == "expired"
