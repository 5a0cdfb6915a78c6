"""Amount modes end to end: real Dagster runs against the emulators, window by window, asserting the
exact record groups Suger received for invoice-total timelines (growth, credits, void + re-issue,
month rollover, two marketplaces, daily windows, re-runs, non-USD invoices). Lineage and the
server-side invoice filters: ``test_invoice_lineage.py``."""

from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import dagster as dg
import pytest

from metronome_suger.clients.metronome_models import USD_CREDIT_TYPE_ID
from metronome_suger.core.ids import record_group_id
from metronome_suger.sandbox.server import Sandbox
from metronome_suger_tests.conftest import AWS_DIMS, Pipeline, failure_text, sent_groups

UTC = timezone.utc
OCT = datetime(2026, 10, 1, tzinfo=UTC)
NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)
AZURE_DIMS = [{"key": "usage_fee", "name": "Usage fee", "rate": "0.25"}]  # AMOUNT: dollars ÷ 0.25


def at(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def use_amount_mode(pipeline: Pipeline, mode: str = "amount_hourly", policy: str = "period") -> None:
    """AWS: QUANTITY × 100 onto ``usage_fee`` ($0.01 units); AZURE: AMOUNT ÷ the entitlement's rate."""
    pipeline.settings.update(
        billing_mode=mode,
        invoice_change_policy=policy,
        dimension_conversion={
            "AWS": {"metronome": [{"dimension_key": "usage_fee", "mapping_mode": "QUANTITY", "multiplier": 100}]},
            "AZURE": {"metronome": [{"dimension_key": "usage_fee", "mapping_mode": "AMOUNT"}]},
        },
    )


@dataclass
class Customer:
    id: str
    entitlement: str


def add_customer(sb: Sandbox, name: str, partner: str = "AWS") -> Customer:
    customer = sb.metronome.add_customer(name)["id"]
    buyer = sb.suger.add_buyer(f"{name} {partner}", partner=partner, metronome_customer_id=customer)["id"]
    dims = AWS_DIMS if partner == "AWS" else AZURE_DIMS
    return Customer(customer, sb.suger.add_entitlement(buyer, partner=partner, dimensions=dims)["id"])


def add_invoice(sb: Sandbox, customer: Customer, timeline: dict[datetime, int], *,
                start: datetime = NOV, end: datetime = DEC, **kwargs: Any) -> str:
    """A USAGE invoice whose total (cents) follows ``timeline``: each value holds from its instant on."""
    invoice_id = sb.metronome.add_invoice(customer.id, period_start=start, period_end=end, **kwargs)["id"]
    for effective_at, cents in timeline.items():
        sb.metronome.set_invoice_total(invoice_id, cents, effective_at=effective_at)
    return invoice_id


def run_ok(pipeline: Pipeline, key: str, **kwargs: Any) -> dg.ExecuteInProcessResult:
    result = pipeline.run(key, **kwargs)
    assert result.success, failure_text(result)
    return result


def received(sb: Sandbox) -> list[tuple[str, str, dict[str, Decimal]]]:
    """(entitlement, timestamp, records) of every group Suger stored, in arrival order."""
    return [(g["entitlementID"], g["metaInfo"]["timestamp"], g["records"]) for g in sent_groups(sb)]


def invoice_metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    [event] = result.asset_materializations_for_node("metronome_invoice_snapshots")
    return {k: v.value for k, v in event.metadata.items()}


def units(value: str) -> dict[str, Decimal]:
    return {"usage_fee": Decimal(value)}


# ---------------------------------------------------------------------------------------------------------


def test_growth_reports_each_windows_increase(sandbox: Sandbox, pipeline: Pipeline) -> None:
    """$100 → $120 → $120.50: each hour sends exactly its increase (× 100 on AWS)."""
    use_amount_mode(pipeline)
    alice = add_customer(sandbox, "Alice")
    add_invoice(sandbox, alice, {at(25, 10, 30): 10000, at(25, 11, 30): 12000, at(25, 12, 30): 12050})
    for hour in (10, 11, 12):
        result = run_ok(pipeline, f"2026-11-25-{hour}:00")
    assert received(sandbox) == [
        (alice.entitlement, "2026-11-25T10:00:00Z", units("10000")),
        (alice.entitlement, "2026-11-25T11:00:00Z", units("2000")),
        (alice.entitlement, "2026-11-25T12:00:00Z", units("50")),
    ]
    meta = invoice_metadata(result)
    assert (meta["increase_dollars"], meta["increase_dollars_exact"]) == (0.5, "$0.50")
    assert (meta["customers"], meta["invoices_tracked"]) == (1, 1)
    verdicts = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert {"mapping_completeness", "customer_linkage", "usage_verification"} <= set(verdicts)
    assert all(verdicts.values()), verdicts
    origin = pipeline.query("SELECT source_key, origin_quantity, quantity FROM usage_records ORDER BY window_start")
    assert origin == [("metronome", Decimal(100), Decimal(10000)), ("metronome", Decimal(20), Decimal(2000)),
                      ("metronome", Decimal("0.5"), Decimal(50))]


def test_credit_suspends_reporting_until_the_total_passes_the_old_maximum(
    sandbox: Sandbox, pipeline: Pipeline,
) -> None:
    """$100, then a $30 credit ($70), usage to $90 (still below): nothing; then $110: only $10."""
    use_amount_mode(pipeline)
    alice = add_customer(sandbox, "Alice")
    invoice = add_invoice(sandbox, alice, {at(25, 10, 30): 10000, at(25, 12, 30): 12000, at(25, 13, 30): 14000})
    sandbox.metronome.add_credit(alice.id, invoice, 3000, effective_at=at(25, 11, 30))
    for hour in (10, 11, 12, 13):
        run_ok(pipeline, f"2026-11-25-{hour}:00")
    assert received(sandbox) == [
        (alice.entitlement, "2026-11-25T10:00:00Z", units("10000")),
        (alice.entitlement, "2026-11-25T13:00:00Z", units("1000")),
    ]
    rows = pipeline.query(
        "SELECT hour(window_start), observed_cents, high_water_cents, increase_cents FROM invoice_high_water "
        "ORDER BY window_start")
    assert rows == [(10, 10000, 10000, 10000), (11, 7000, 10000, 0), (12, 9000, 10000, 0), (13, 11000, 11000, 1000)]


@pytest.mark.parametrize("policy, third_window", [("period", "1000"), ("invoice", "13000")])
def test_void_and_reissue(sandbox: Sandbox, pipeline: Pipeline, policy: str, third_window: str) -> None:
    """A at $100 → $120, VOID and re-issued as B ($120, then $130). ``period`` continues from $120 and
    sends $10; ``invoice`` starts B from zero and sends all $130 again (Suger's spike)."""
    use_amount_mode(pipeline, policy=policy)
    alice = add_customer(sandbox, "Alice")
    first = add_invoice(sandbox, alice, {at(25, 10, 30): 10000, at(25, 11, 30): 12000})
    reissued = sandbox.metronome.void_invoice(first, at=at(25, 12, 30))
    assert reissued is not None
    sandbox.metronome.set_invoice_total(reissued["id"], 13000, effective_at=at(25, 12, 45))
    for hour in (10, 11, 12):
        result = run_ok(pipeline, f"2026-11-25-{hour}:00")
    assert received(sandbox) == [
        (alice.entitlement, "2026-11-25T10:00:00Z", units("10000")),
        (alice.entitlement, "2026-11-25T11:00:00Z", units("2000")),
        (alice.entitlement, "2026-11-25T12:00:00Z", units(third_window)),
    ]
    assert invoice_metadata(result)["skipped:void"] == 1
    statuses = pipeline.query("SELECT invoice_id, status FROM invoice_snapshots WHERE hour(window_start) = 12 ORDER BY 2")
    assert statuses == [(reissued["id"], "DRAFT"), (first, "VOID")]


def test_month_rollover_keeps_the_previous_draft_until_finalized(sandbox: Sandbox, pipeline: Pipeline) -> None:
    """October's invoice stays DRAFT for 24 h after the month: late usage on it is still reported, once
    more when it is first seen FINALIZED, and never after; November's invoice starts its own history.
    (October → November because Dagster only knows partitions up to the real present.)"""
    use_amount_mode(pipeline)
    pipeline.settings["start"] = "2026-10-01T00:00:00Z"
    alice = add_customer(sandbox, "Alice")
    compute = sandbox.metronome.add_billable_metric("compute", unit_price_cents=100)["id"]  # $1 per unit
    late = lambda hour, units: sandbox.metronome.set_usage(alice.id, compute, at(31, hour, month=10), units)  # noqa: E731
    october = sandbox.metronome.add_invoice(alice.id, period_start=OCT, period_end=NOV)["id"]  # priced from usage
    late(22, 500)
    add_invoice(sandbox, alice, {at(1, 0, 30): 1000, at(1, 1, 30): 2500})
    run_ok(pipeline, "2026-10-31-23:00")  # $500; November's invoice exists but its period has not begun
    late(23, 5)
    run_ok(pipeline, "2026-11-01-00:00")  # +$5 late on October (DRAFT in grace), +$10 on November
    late(23, 7)
    run_ok(pipeline, "2026-11-01-01:00")  # +$2 on October, +$15 on November
    late(21, 3)
    finalized = run_ok(pipeline, "2026-11-02-00:00")  # October FINALIZED at 00:00: one last look, +$3
    late(20, 10)  # the emulator lets a FINALIZED total move; the pipeline no longer looks
    after = run_ok(pipeline, "2026-11-02-01:00")
    assert received(sandbox) == [
        (alice.entitlement, "2026-10-31T23:00:00Z", units("50000")),
        (alice.entitlement, "2026-11-01T00:00:00Z", units("1500")),
        (alice.entitlement, "2026-11-01T01:00:00Z", units("1700")),
        (alice.entitlement, "2026-11-02T00:00:00Z", units("300")),
    ]
    histories = pipeline.query(
        "SELECT month(period_start), count(DISTINCT history_key), sum(increase_cents) FROM invoice_high_water "
        "GROUP BY 1 ORDER BY 1")
    assert histories == [(10, 1, Decimal(51000)), (11, 1, Decimal(2500))]
    assert "skipped:finalized_earlier" not in invoice_metadata(finalized)
    # Listed while DRAFT; once FINALIZED it is read by id exactly once (the 2026-11-02 00:00 run), then never.
    reads = sandbox.metronome_log.find("GET", f"/v1/customers/{alice.id}/invoices/{october}")
    assert len(reads) == 1 and "skipped:finalized_earlier" not in invoice_metadata(after)
    seen = pipeline.query("SELECT day(window_start), hour(window_start), status, total_cents FROM invoice_snapshots "
                          "WHERE invoice_id = ? ORDER BY window_start", [october])
    assert seen == [(31, 23, "DRAFT", 50000), (1, 0, "DRAFT", 50500), (1, 1, "DRAFT", 50700),
                    (2, 0, "FINALIZED", 51000)]


def test_two_customers_on_different_marketplaces(sandbox: Sandbox, pipeline: Pipeline) -> None:
    """Alice on AWS (QUANTITY × 100), Bob on Azure (AMOUNT ÷ rate $0.25): same dollars, own units."""
    use_amount_mode(pipeline)
    alice = add_customer(sandbox, "Alice", "AWS")
    bob = add_customer(sandbox, "Bob", "AZURE")
    add_invoice(sandbox, alice, {at(25, 10, 30): 2050, at(25, 11, 30): 2100})
    add_invoice(sandbox, bob, {at(25, 10, 30): 1000, at(25, 11, 30): 1105})
    first = run_ok(pipeline, "2026-11-25-10:00")
    run_ok(pipeline, "2026-11-25-11:00")
    assert sorted(received(sandbox)) == sorted([
        (alice.entitlement, "2026-11-25T10:00:00Z", units("2050")),  # $20.50 × 100
        (bob.entitlement, "2026-11-25T10:00:00Z", units("40")),  # $10 ÷ 0.25
        (alice.entitlement, "2026-11-25T11:00:00Z", units("50")),  # $0.50 × 100
        (bob.entitlement, "2026-11-25T11:00:00Z", units("4.2")),  # $1.05 ÷ 0.25
    ])
    assert invoice_metadata(first)["increase_dollars_exact"] == "$30.50"
    partners = pipeline.query("SELECT DISTINCT partner, mapping_mode, rate FROM usage_records ORDER BY 1")
    assert partners == [("AWS", "QUANTITY", Decimal("0.01")), ("AZURE", "AMOUNT", Decimal("0.25"))]


def test_one_customer_on_two_marketplaces_is_flagged(sandbox: Sandbox, pipeline: Pipeline) -> None:
    """Both entitlements get their group (as in quantity mode), and customer_linkage warns that the
    same invoice dollars went to each."""
    use_amount_mode(pipeline)
    carol = add_customer(sandbox, "Carol", "AWS")
    buyer = sandbox.suger.add_buyer("Carol Azure", partner="AZURE", metronome_customer_id=carol.id)["id"]
    azure = sandbox.suger.add_entitlement(buyer, partner="AZURE", dimensions=AZURE_DIMS)["id"]
    add_invoice(sandbox, carol, {at(25, 10, 30): 1000})
    result = run_ok(pipeline, "2026-11-25-10:00")
    assert sorted(received(sandbox)) == sorted([
        (carol.entitlement, "2026-11-25T10:00:00Z", units("1000")),
        (azure, "2026-11-25T10:00:00Z", units("40")),
    ])
    linkage = next(e for e in result.get_asset_check_evaluations() if e.check_name == "customer_linkage")
    assert not linkage.passed and linkage.metadata["multi_linked"].value == 1
    assert f"customer {carol.id} is linked to 2 entitlements (AWS, AZURE)" in linkage.metadata["details"].value


def test_amount_daily_reports_each_days_increase_at_23h(sandbox: Sandbox, pipeline: Pipeline) -> None:
    use_amount_mode(pipeline, mode="amount_daily")
    alice = add_customer(sandbox, "Alice")
    add_invoice(sandbox, alice, {at(23, 5): 1000, at(23, 20): 3000, at(24, 10): 4500})
    run_ok(pipeline, "2026-11-23")
    run_ok(pipeline, "2026-11-24")
    assert received(sandbox) == [
        (alice.entitlement, "2026-11-23T23:00:00Z", units("3000")),
        (alice.entitlement, "2026-11-24T23:00:00Z", units("1500")),
    ]
    assert [g["id"] for g in sent_groups(sandbox)] == [
        record_group_id(sandbox.org_id, alice.entitlement, "amount_daily", at(day, 0), 0) for day in (23, 24)
    ]


def test_rerun_sends_nothing_new_and_later_growth_is_sent_once(sandbox: Sandbox, pipeline: Pipeline) -> None:
    """Re-running a window with an unchanged total posts nothing; a re-run that sees growth sends only
    that growth (next revision of the same window), and the next window does not send it again."""
    use_amount_mode(pipeline)
    alice = add_customer(sandbox, "Alice")
    add_invoice(sandbox, alice, {at(25, 10, 30): 10000, at(25, 11, 10): 10400, at(25, 11, 30): 10900})
    run_ok(pipeline, "2026-11-25-10:00")
    posts = len(sandbox.suger_log.find(method="POST"))
    again = run_ok(pipeline, "2026-11-25-10:00")
    assert len(sandbox.suger_log.find(method="POST")) == posts
    assert invoice_metadata(again)["new_increase_dollars"] == 0.0
    run_ok(pipeline, "2026-11-25-10:00", at=at(25, 11, 15))  # the late-usage sensor's re-read: +$4
    run_ok(pipeline, "2026-11-25-11:00")  # +$5 only
    assert received(sandbox) == [
        (alice.entitlement, "2026-11-25T10:00:00Z", units("10000")),
        (alice.entitlement, "2026-11-25T10:00:00Z", units("400")),
        (alice.entitlement, "2026-11-25T11:00:00Z", units("500")),
    ]
    assert [g["id"] for g in sent_groups(sandbox)][:2] == [
        record_group_id(sandbox.org_id, alice.entitlement, "amount_hourly", at(25, 10), revision) for revision in (0, 1)
    ]


def test_non_usd_and_scheduled_invoices_are_not_even_returned(sandbox: Sandbox, pipeline: Pipeline) -> None:
    """Metronome filters them out (``type=USAGE``, ``credit_type_id`` of USD cents): they are neither
    reported nor read, so nothing is skipped client-side and no non-USD warning is raised."""
    use_amount_mode(pipeline)
    alice = add_customer(sandbox, "Alice")
    add_invoice(sandbox, alice, {at(25, 10, 30): 2500})
    credits = {"id": "c0ffee00-0000-4000-8000-000000000001", "name": "AI credits"}
    add_invoice(sandbox, alice, {at(25, 10, 30): 999_999}, credit_type=credits)
    add_invoice(sandbox, alice, {NOV: 50_000}, type="SCHEDULED")
    result = run_ok(pipeline, "2026-11-25-10:00")
    assert received(sandbox) == [(alice.entitlement, "2026-11-25T10:00:00Z", units("2500"))]
    meta = invoice_metadata(result)
    assert (meta["dagster/row_count"], meta["skipped_non_usd"]) == (1, 0)
    assert not [k for k in meta if k.startswith("skipped:")]
    assert pipeline.query("SELECT credit_type_id, invoice_type FROM invoice_snapshots") == [
        (USD_CREDIT_TYPE_ID, "USAGE")]


def test_increase_before_the_entitlement_starts_is_named_not_sent(sandbox: Sandbox, pipeline: Pipeline) -> None:
    """The invoice is read for every customer with a usable entitlement; growth in a window the
    entitlement does not cover is flagged by ``customer_linkage`` instead of piling up into a spike."""
    use_amount_mode(pipeline)
    customer = sandbox.metronome.add_customer("Late starter")["id"]
    buyer = sandbox.suger.add_buyer("Late AWS", partner="AWS", metronome_customer_id=customer)["id"]
    entitlement = sandbox.suger.add_entitlement(buyer, partner="AWS", dimensions=AWS_DIMS,
                                                start_time=at(25, 11))["id"]
    add_invoice(sandbox, Customer(customer, entitlement), {at(25, 10, 30): 4000, at(25, 11, 30): 4600})
    early = run_ok(pipeline, "2026-11-25-10:00")
    run_ok(pipeline, "2026-11-25-11:00")
    assert received(sandbox) == [(entitlement, "2026-11-25T11:00:00Z", units("600"))]
    linkage = next(e for e in early.get_asset_check_evaluations() if e.check_name == "customer_linkage")
    details = str(linkage.metadata["details"].value)
    assert not linkage.passed and customer in details and "'metronome' = 40" in details
