"""Quantity mode end to end: real Dagster runs against the emulators, exact groups Suger received."""

from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal

import dagster as dg
import pytest

from metronome_suger.core.ids import record_group_id
from metronome_suger.orchestration.definitions import build_definitions
from metronome_suger.orchestration.resources import ClockResource
from metronome_suger.sandbox.server import Sandbox
from metronome_suger_tests.conftest import AWS_DIMS, GCP_DIMS, Pipeline, failure_text, sent_groups

KEY = "2026-11-25-13:00"
START = datetime(2026, 11, 25, 13, tzinfo=timezone.utc)
TS = "2026-11-25T13:00:00Z"


@dataclass
class World:
    cpu: str
    api: str
    alice: str
    bob: str
    carol: str
    alice_aws: str
    bob_aws: str
    bob_gcp: str


def build_world(sb: Sandbox) -> World:
    """Alice on AWS; Bob on AWS and GCP (two buyers, one customer); Carol has usage but no link."""
    m, s = sb.metronome, sb.suger
    cpu = m.add_billable_metric("cpu_hours", aggregation_type="SUM")["id"]
    api = m.add_billable_metric("api_calls", aggregation_type="COUNT")["id"]
    alice = m.add_customer("Alice")["id"]
    bob = m.add_customer("Bob")["id"]
    carol = m.add_customer("Carol")["id"]
    a = s.add_buyer("Alice AWS", partner="AWS", metronome_customer_id=alice)["id"]
    b1 = s.add_buyer("Bob AWS", partner="AWS", metronome_customer_id=bob)["id"]
    b2 = s.add_buyer("Bob GCP", partner="GCP", metronome_customer_id=bob)["id"]
    w = World(
        cpu, api, alice, bob, carol,
        s.add_entitlement(a, partner="AWS", dimensions=AWS_DIMS)["id"],
        s.add_entitlement(b1, partner="AWS", dimensions=AWS_DIMS)["id"],
        s.add_entitlement(b2, partner="GCP", dimensions=GCP_DIMS)["id"],
    )
    usage = {(alice, cpu): 10, (alice, api): 2500, (bob, cpu): 3, (bob, api): 100, (carol, cpu): 7}
    for (customer, metric), value in usage.items():
        m.set_usage(customer, metric, START, value)
    return w


def by_entitlement(sb: Sandbox) -> dict[str, dict]:
    return {g["entitlementID"]: g for g in sent_groups(sb)}


def checks(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def test_window_reports_exact_groups_per_partner_and_rerun_adds_nothing(sandbox: Sandbox, pipeline: Pipeline) -> None:
    w = build_world(sandbox)
    result = pipeline.run(KEY)
    assert result.success, failure_text(result)
    groups = by_entitlement(sandbox)
    assert set(groups) == {w.alice_aws, w.bob_aws, w.bob_gcp}
    assert groups[w.alice_aws]["records"] == {"cpu_hour": Decimal(10), "api_request": Decimal("2.5")}
    assert groups[w.bob_aws]["records"] == {"cpu_hour": Decimal(3), "api_request": Decimal("0.1")}
    assert groups[w.bob_gcp]["records"] == {"vcpu_hours": Decimal(6), "requests": Decimal(100)}
    for ent, group in groups.items():
        assert group["metaInfo"]["timestamp"] == TS
        assert group["id"] == record_group_id(sandbox.org_id, ent, "quantity", START, 0)
    assert checks(result) == {
        "mapping_completeness": True, "customer_linkage": False,
        "usage_verification": True, "suger_record_status": True, "report_deadline": False,
    }
    # GCP wants usage within 1 h of the end of its hour: handed over at 14:05 for a 15:00 deadline, inside
    # Suger's 60 min forwarding lag. Sent (urgent first), and the check warns with its dollars.
    deadline = next(e for e in result.get_asset_check_evaluations() if e.check_name == "report_deadline")
    assert deadline.severity == dg.AssetCheckSeverity.WARN
    assert deadline.metadata["at_risk_groups"].value == 1 and deadline.metadata["expired_groups"].value == 0
    assert "at risk: $0.70 handed to Suger less than 60 min before the marketplace deadline (GCP 1 groups" \
        in deadline.description
    linkage = next(e for e in result.get_asset_check_evaluations() if e.check_name == "customer_linkage")
    assert w.carol in linkage.metadata["details"].value and "'cpu_hours' = 7" in linkage.metadata["details"].value
    assert pipeline.query("SELECT status, count(*) FROM report_ledger GROUP BY 1") == [("sent", 3)]
    # dollars at the entitlement's prices: 10 × $0.12 + 2.5 × $0.0005
    assert pipeline.query("SELECT dollars FROM report_ledger WHERE entitlement_id = ?", [w.alice_aws]) == [
        (Decimal("1.20125"),)
    ]

    # linkage costs one buyer listing and one entitlement listing, not a call per buyer
    listings = [e for e in sandbox.suger_log.find(method="GET") if "/entitlement" in e.path or "/buyer" in e.path]
    assert sorted(e.path.rsplit("/", 1)[1] for e in listings) == ["buyer", "entitlement"]
    posts_before = len(sandbox.suger_log.find(method="POST"))
    again = pipeline.run(KEY)
    assert again.success, failure_text(again)
    assert len(sent_groups(sandbox)) == 3
    assert len(sandbox.suger_log.find(method="POST")) == posts_before  # nothing even re-posted
    assert pipeline.query("SELECT count(*) FROM report_ledger") == [(3,)]


def test_origin_and_converted_records_are_kept_for_traceability(sandbox: Sandbox, pipeline: Pipeline) -> None:
    w = build_world(sandbox)
    assert pipeline.run(KEY).success
    rows = pipeline.query(
        """SELECT partner, source_key, origin_quantity, dimension_key, quantity FROM usage_records
        WHERE entitlement_id = ? ORDER BY source_key""", [w.bob_gcp])
    assert rows == [
        ("GCP", "api_calls", Decimal(100), "requests", Decimal(100)),
        ("GCP", "cpu_hours", Decimal(3), "vcpu_hours", Decimal(6)),
    ]
    usage = pipeline.query("SELECT customer_id, metric_name, value FROM usage WHERE value <> 0 ORDER BY 2, 3")
    assert (w.carol, "cpu_hours", Decimal(7)) in usage


def test_whitelist_limits_reported_metrics(sandbox: Sandbox, pipeline: Pipeline) -> None:
    w = build_world(sandbox)
    pipeline.settings["billable_metric_whitelist"] = {"enabled": True, "metrics": ["cpu_hours"]}
    result = pipeline.run(KEY)
    assert result.success, failure_text(result)
    groups = by_entitlement(sandbox)
    assert groups[w.alice_aws]["records"] == {"cpu_hour": Decimal(10)}
    assert groups[w.bob_gcp]["records"] == {"vcpu_hours": Decimal(6)}
    flags = dict(pipeline.query("SELECT name, whitelisted FROM billable_metrics"))
    assert flags == {"cpu_hours": True, "api_calls": False}


def test_zero_and_null_values_are_not_sent(sandbox: Sandbox, pipeline: Pipeline) -> None:
    w = build_world(sandbox)
    sandbox.metronome.set_usage(w.alice, w.cpu, START, None)
    sandbox.metronome.set_usage(w.alice, w.api, START, 0)
    sandbox.metronome.set_usage(w.bob, w.api, START, None)
    result = pipeline.run(KEY)
    assert result.success, failure_text(result)
    groups = by_entitlement(sandbox)
    assert w.alice_aws not in groups  # all zero: Suger would reject it
    assert groups[w.bob_aws]["records"] == {"cpu_hour": Decimal(3)}
    nulls = pipeline.query("SELECT count(*) FROM usage WHERE value_was_null AND value = 0")
    assert nulls == [(2,)]


def test_unmapped_metric_blocks_the_window_and_names_the_metric(sandbox: Sandbox, pipeline: Pipeline) -> None:
    w = build_world(sandbox)
    gpu = sandbox.metronome.add_billable_metric("gpu_minutes")["id"]
    sandbox.metronome.set_usage(w.alice, gpu, START, 5)
    result = pipeline.run(KEY)
    assert not result.success
    assert sent_groups(sandbox) == []
    evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == "mapping_completeness")
    assert not evaluation.passed
    assert "AWS: source key 'gpu_minutes' is not mapped" in evaluation.description
    assert "GCP: source key 'gpu_minutes' is not mapped" in evaluation.description
    assert pipeline.query("SELECT count(*) FROM report_ledger WHERE status <> 'pending'") == [(0,)]


def test_mapped_dimension_missing_on_entitlement_blocks_the_window(sandbox: Sandbox, pipeline: Pipeline) -> None:
    build_world(sandbox)
    pipeline.settings["dimension_conversion"]["AWS"]["cpu_hours"] = [
        {"dimension_key": "cpu_minutes", "mapping_mode": "QUANTITY", "multiplier": 60}
    ]
    result = pipeline.run(KEY)
    assert not result.success
    assert sent_groups(sandbox) == []
    evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == "mapping_completeness")
    assert "maps to dimension 'cpu_minutes', which does not exist" in evaluation.description


def test_negative_value_fails_naming_customer_metric_window(sandbox: Sandbox, pipeline: Pipeline) -> None:
    w = build_world(sandbox)
    sandbox.metronome.set_usage(w.bob, w.api, START, -4)
    result = pipeline.run(KEY)
    assert not result.success
    text = failure_text(result)
    assert f"customer {w.bob} metric 'api_calls'" in text and "2026-11-25T13:00:00Z" in text
    assert sent_groups(sandbox) == []
    assert pipeline.query("SELECT value FROM usage WHERE customer_id = ? AND metric_id = ?", [w.bob, w.api]) == [
        (Decimal(-4),)
    ]  # what was fetched is kept


def test_inactive_entitlement_is_not_reported(sandbox: Sandbox, pipeline: Pipeline) -> None:
    w = build_world(sandbox)
    sandbox.suger.set_entitlement_status(w.bob_gcp, "PENDING_START")
    result = pipeline.run(KEY)
    assert result.success, failure_text(result)
    assert set(by_entitlement(sandbox)) == {w.alice_aws, w.bob_aws}


def test_archived_metric_with_usage_is_still_reported(sandbox: Sandbox, pipeline: Pipeline) -> None:
    w = build_world(sandbox)
    legacy = sandbox.metronome.add_billable_metric("legacy_jobs", archived=True)["id"]
    sandbox.metronome.add_billable_metric("retired_unmapped", archived=True)
    sandbox.metronome.set_usage(w.alice, legacy, START, 4)
    pipeline.settings["dimension_conversion"]["AWS"]["legacy_jobs"] = [{"dimension_key": "cpu_hour"}]
    pipeline.settings["dimension_conversion"]["GCP"]["legacy_jobs"] = [{"dimension_key": "vcpu_hours"}]
    result = pipeline.run(KEY)
    assert result.success, failure_text(result)
    assert by_entitlement(sandbox)[w.alice_aws]["records"]["cpu_hour"] == Decimal(14)


def test_suger_rejection_is_recorded_and_rerun_resends_only_it(sandbox: Sandbox, pipeline: Pipeline) -> None:
    w = build_world(sandbox)
    sandbox.suger.reject_next(w.bob_aws, "dimension cpu_hour is not priced on this offer")
    result = pipeline.run(KEY)
    assert not result.success
    assert "dimension cpu_hour is not priced on this offer" in failure_text(result)
    assert set(by_entitlement(sandbox)) == {w.alice_aws, w.bob_gcp}
    ledger = dict(pipeline.query("SELECT entitlement_id, status FROM report_ledger"))
    assert ledger == {w.alice_aws: "sent", w.bob_aws: "rejected", w.bob_gcp: "sent"}
    message = pipeline.query("SELECT message FROM report_ledger WHERE entitlement_id = ?", [w.bob_aws])
    assert message == [("dimension cpu_hour is not priced on this offer",)]

    sandbox.suger_log.clear()
    again = pipeline.run(KEY)
    assert again.success, failure_text(again)
    posted = [e.path for e in sandbox.suger_log.find(method="POST")]
    assert posted == [f"/org/{sandbox.org_id}/entitlement/{w.bob_aws}/usageRecordGroup"]
    assert set(by_entitlement(sandbox)) == {w.alice_aws, w.bob_aws, w.bob_gcp}


def test_late_increase_sends_one_revision_and_decrease_sends_none(sandbox: Sandbox, pipeline: Pipeline) -> None:
    w = build_world(sandbox)
    assert pipeline.run(KEY).success
    sandbox.metronome.set_usage(w.alice, w.cpu, START, 12)
    assert pipeline.run(KEY, at=START.replace(hour=15)).success
    alice = [g for g in sent_groups(sandbox) if g["entitlementID"] == w.alice_aws]
    assert [g["records"] for g in alice] == [
        {"cpu_hour": Decimal(10), "api_request": Decimal("2.5")},
        {"cpu_hour": Decimal(2)},
    ]
    assert alice[1]["id"] == record_group_id(sandbox.org_id, w.alice_aws, "quantity", START, 1)
    assert alice[1]["metaInfo"]["timestamp"] == TS

    sandbox.metronome.set_usage(w.alice, w.cpu, START, 9)
    result = pipeline.run(KEY, at=START.replace(hour=16))
    assert result.success
    assert len(sent_groups(sandbox)) == 4
    assert pipeline.query("SELECT dimension_key, reported, current FROM over_reported") == [
        ("cpu_hour", Decimal(12), Decimal(9))
    ]
    verification = next(e for e in result.get_asset_check_evaluations() if e.check_name == "usage_verification")
    assert not verification.passed
    assert "over-reported 3 cpu_hour ($0.36)" in verification.metadata["details"].value
    assert verification.metadata["over_reported_dollars"].value == pytest.approx(0.36)


def test_window_past_its_deadline_is_never_sent_and_the_loss_is_reported(sandbox: Sandbox, pipeline: Pipeline) -> None:
    build_world(sandbox)
    result = pipeline.run(KEY, at=START.replace(hour=21))  # 8 h later: past AWS (6 h) and GCP (1 h)
    assert result.success, failure_text(result)
    assert sent_groups(sandbox) == []
    assert sandbox.suger_log.find(method="POST") == []
    assert pipeline.query("SELECT status, count(*) FROM report_ledger GROUP BY 1") == [("expired", 3)]
    deadline = next(e for e in result.get_asset_check_evaluations() if e.check_name == "report_deadline")
    assert not deadline.passed
    # Alice 10×0.12 + 2.5×0.0005, Bob AWS 3×0.12 + 0.1×0.0005, Bob GCP 6×0.1 + 100×0.001
    lost = Decimal("1.20125") + Decimal("0.36005") + Decimal("0.7")
    assert deadline.metadata["lost_dollars"].value == pytest.approx(float(lost))
    assert "3 group(s) expired unsent: $2.26 of revenue lost" in deadline.description
    verification = next(e for e in result.get_asset_check_evaluations() if e.check_name == "usage_verification")
    assert "under-reported 10 cpu_hour ($1.2)" in verification.metadata["details"].value


def test_only_the_strict_marketplace_expires(sandbox: Sandbox, pipeline: Pipeline) -> None:
    w = build_world(sandbox)
    result = pipeline.run(KEY, at=START.replace(hour=16))  # 3 h later: GCP expired, AWS still open
    assert result.success, failure_text(result)
    assert set(by_entitlement(sandbox)) == {w.alice_aws, w.bob_aws}
    assert dict(pipeline.query("SELECT entitlement_id, status FROM report_ledger"))[w.bob_gcp] == "expired"


def test_auto_report_off_computes_but_never_sends(sandbox: Sandbox, pipeline: Pipeline) -> None:
    build_world(sandbox)
    pipeline.settings["auto_report"] = False
    result = pipeline.run(KEY)
    assert result.success, failure_text(result)
    assert sent_groups(sandbox) == []
    assert sandbox.suger_log.find(method="POST") == []
    assert pipeline.query("SELECT status, count(*) FROM report_ledger GROUP BY 1") == [("pending", 3)]


def test_dry_run_validates_with_suger_and_sends_nothing(sandbox: Sandbox, pipeline: Pipeline) -> None:
    build_world(sandbox)
    pipeline.settings["dry_run"] = True
    result = pipeline.run(KEY)
    assert result.success, failure_text(result)
    assert sent_groups(sandbox) == []
    posts = [e.path for e in sandbox.suger_log.find(method="POST")]
    assert posts == [f"/org/{sandbox.org_id}/batchValidateUsageRecordGroups"]
    assert pipeline.query("SELECT status, count(*) FROM report_ledger GROUP BY 1") == [("pending", 3)]



def test_no_token_reaches_duckdb_metadata_or_logs(sandbox: Sandbox, pipeline: Pipeline, caplog) -> None:
    w = build_world(sandbox)
    sandbox.suger.reject_next(w.bob_aws, "refused")  # an error path too
    sandbox.metronome_faults.inject("429", retry_after=0)
    result = pipeline.run(KEY)
    secrets = list(sandbox.env().values())
    events = "\n".join(str(e) for e in result.all_events)
    records = "\n".join(str(r.__dict__) for r in caplog.records)
    stored = pipeline.stored_text()
    if pipeline.backend == "postgres":
        secrets.append(pipeline.database().password.get_secret_value())  # type: ignore[union-attr]
    for secret in secrets:
        assert secret not in events and secret not in records
        assert secret.encode() not in stored
    assert "refused" in failure_text(result)  # the events do carry the run's own story


def test_dg_materialize_of_the_definitions_reports_the_window(sandbox: Sandbox, pipeline: Pipeline) -> None:
    """The same window through ``dg.materialize`` (what a notebook or a test harness would call)."""
    w = build_world(sandbox)
    at = START.replace(hour=14, minute=5)
    defs = build_definitions(pipeline.config(), resources={"clock": ClockResource(frozen_at=at.isoformat())})
    result = dg.materialize([*defs.assets, *defs.asset_checks], partition_key=KEY, resources=defs.resources,
                            instance=pipeline.instance)
    assert result.success
    assert set(by_entitlement(sandbox)) == {w.alice_aws, w.bob_aws, w.bob_gcp}
    assert {e.check_name for e in result.get_asset_check_evaluations()} >= {"mapping_completeness", "report_deadline"}
