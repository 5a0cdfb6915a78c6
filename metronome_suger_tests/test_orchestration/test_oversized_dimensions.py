"""Entitlements with more than 50 dimensions, end to end: Suger keeps 50 on the entitlement and sets
``info.dimensionsOversized``; the rest are read from the product's dimension list, so a mapping to the
55th dimension is sent, priced at that dimension's rate."""

from datetime import datetime, timezone
from decimal import Decimal

import dagster as dg

from metronome_suger.sandbox.server import Sandbox
from metronome_suger_tests.conftest import Pipeline, failure_text, sent_groups

UTC = timezone.utc
KEY = "2026-11-25-10:00"
PRODUCT = "prod-sixty"


def sixty_dimensions() -> list[dict[str, str]]:
    """dim_01 … dim_60 at $1, except dim_10 ($0.50 on this entitlement) and dim_55 ($0.25)."""
    rates = {10: "0.5", 55: "0.25"}
    return [{"key": f"dim_{n:02d}", "name": f"Dimension {n}", "rate": rates.get(n, "1")} for n in range(1, 61)]


def world(sb: Sandbox, pipeline: Pipeline) -> str:
    """One AWS customer whose invoice reaches $100 in the 10:00 hour; the mapping sends its dollars to
    dim_55 (past the 50th) and dim_10 (listed on the entitlement) in AMOUNT mode."""
    customer = sb.metronome.add_customer("Sixty")["id"]
    invoice = sb.metronome.add_invoice(customer, period_start=datetime(2026, 11, 1, tzinfo=UTC),
                                       period_end=datetime(2026, 12, 1, tzinfo=UTC))["id"]
    sb.metronome.set_invoice_total(invoice, 10000, effective_at=datetime(2026, 11, 25, 10, 30, tzinfo=UTC))
    # Another entitlement of the product lists dim_10 first, at $9: the product's list says $9.
    other = sb.suger.add_buyer("Other", partner="AWS")["id"]
    sb.suger.add_entitlement(other, partner="AWS", dimensions=[{"key": "dim_10", "rate": "9"}], product_id=PRODUCT)
    buyer = sb.suger.add_buyer("Sixty AWS", partner="AWS", metronome_customer_id=customer)["id"]
    ent = sb.suger.add_entitlement(buyer, partner="AWS", dimensions=sixty_dimensions(), product_id=PRODUCT)["id"]
    pipeline.settings.update(billing_mode="amount_hourly", dimension_conversion={"AWS": {"metronome": [
        {"dimension_key": "dim_55", "mapping_mode": "AMOUNT"},
        {"dimension_key": "dim_10", "mapping_mode": "AMOUNT"},
    ]}})
    return str(ent)


def checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def test_a_dimension_past_the_50th_is_reported_at_its_rate(sandbox: Sandbox, pipeline: Pipeline) -> None:
    ent = world(sandbox, pipeline)
    entitlement = sandbox.suger.get_entitlement(ent)
    assert len(entitlement["info"]["dimensions"]) == 50 and entitlement["info"]["dimensionsOversized"]

    result = pipeline.run(KEY)
    assert result.success, failure_text(result)
    assert checks(result)["mapping_completeness"]
    [group] = sent_groups(sandbox)
    # $100 ÷ $0.25 onto dim_55 (from the product), $100 ÷ $0.50 onto dim_10 (the entitlement's own rate)
    assert group["entitlementID"] == ent
    assert group["records"] == {"dim_55": Decimal(400), "dim_10": Decimal(200)}
    stored = pipeline.query("SELECT count(*), count(DISTINCT dimension_key) FROM entitlement_dimensions "
                            "WHERE entitlement_id = ?", [ent])
    assert stored == [(60, 60)]
    assert pipeline.query("SELECT dimensions_problem FROM entitlements WHERE entitlement_id = ?", [ent]) == [(None,)]
    product_reads = sandbox.suger_log.find("GET", f"/org/{sandbox.org_id}/product/{PRODUCT}/dimension")
    assert len(product_reads) == 1  # once per product, not per entitlement or per window


def test_a_failing_product_listing_blocks_the_window_and_sends_nothing(sandbox: Sandbox, pipeline: Pipeline) -> None:
    """The listing fails (404 here, so the client does not spend its retries): the snapshot still
    succeeds with the entitlement's 50, the problem is stored, and the window sends nothing."""
    ent = world(sandbox, pipeline)
    sandbox.suger.fail_product_dimensions(PRODUCT, status=404, message=f"product {PRODUCT} not found", times=5)
    result = pipeline.run(KEY)
    assert not checks(result)["mapping_completeness"]
    assert sent_groups(sandbox) == []
    [(problem,)] = pipeline.query("SELECT dimensions_problem FROM entitlements WHERE entitlement_id = ?", [ent])
    assert problem.startswith(f"entitlement {ent} has more than 50 dimensions and the dimension list of its "
                              f"product {PRODUCT} could not be read: Suger GET ")
    assert problem.endswith(f"-> 404: product {PRODUCT} not found")
    stored = pipeline.query("SELECT count(*) FROM entitlement_dimensions WHERE entitlement_id = ?", [ent])
    assert stored == [(50,)]  # the entitlement's own 50, not a partial list passed off as complete
