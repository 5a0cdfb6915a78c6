"""Invoices read as Metronome's API allows, end to end (real Dagster runs, emulators over HTTP): the
server-side filters of the per-customer listing, the one extra read of an invoice that left DRAFT, and
the ``period`` policy following ``regenerated_from_invoice_id`` before the billing period."""

import logging
from datetime import datetime, timedelta
from decimal import Decimal
from urllib.parse import parse_qs

import pytest

from metronome_suger.clients.metronome_models import USD_CREDIT_TYPE_ID
from metronome_suger.sandbox.server import Sandbox
from metronome_suger_tests.conftest import Pipeline
from metronome_suger_tests.test_orchestration.test_amount_modes import (
    DEC,
    NOV,
    Customer,
    add_customer,
    add_invoice,
    at,
    invoice_metadata,
    received,
    run_ok,
    units,
    use_amount_mode,
)

MOVED = NOV + timedelta(days=9)  # a contract edit moves the billing period's start to 2026-11-10


def reissue_with_moved_period(sb: Sandbox, customer: Customer, parent: str, timeline: dict[datetime, int], *,
                              void_at: datetime) -> str:
    """Void ``parent`` and re-issue it for a period that starts later (what Metronome renders as a
    regenerated invoice: ``regenerated_from_invoice_id`` = parent)."""
    sb.metronome.void_invoice(parent, at=void_at, reissue=False)
    return add_invoice(sb, customer, timeline, start=MOVED, end=DEC, created_at=void_at, regenerated_from=parent)


@pytest.mark.parametrize("policy, third_window", [("period", "1000"), ("invoice", "13000")])
def test_a_reissue_that_moves_the_period_start_is_not_reported_twice(
    sandbox: Sandbox, pipeline: Pipeline, policy: str, third_window: str,
) -> None:
    """A reaches $120; it is voided and re-issued as B from 2026-11-10 (B starts at A's $120, grows to
    $130). ``period`` follows the lineage (B continues A's history): $10. ``invoice`` is Suger's rule:
    B starts from zero and its whole $130 is sent again."""
    use_amount_mode(pipeline, policy=policy)
    alice = add_customer(sandbox, "Alice")
    first = add_invoice(sandbox, alice, {at(25, 10, 30): 10000, at(25, 11, 30): 12000})
    second = reissue_with_moved_period(sandbox, alice, first, {at(25, 12, 30): 12000, at(25, 12, 45): 13000},
                                       void_at=at(25, 12, 30))
    for hour in (10, 11, 12):
        run_ok(pipeline, f"2026-11-25-{hour}:00")
    assert received(sandbox) == [
        (alice.entitlement, "2026-11-25T10:00:00Z", units("10000")),
        (alice.entitlement, "2026-11-25T11:00:00Z", units("2000")),
        (alice.entitlement, "2026-11-25T12:00:00Z", units(third_window)),
    ]
    filed = dict(pipeline.query(
        "SELECT invoice_id, history_key FROM invoice_snapshots WHERE hour(window_start) = 12 AND history_key IS NOT NULL"))
    lineage = pipeline.query("SELECT DISTINCT regenerated_from_invoice_id FROM invoice_snapshots WHERE invoice_id = ?",
                             [second])
    assert lineage == [(first,)]
    if policy == "period":
        assert filed == {second: f"period:{alice.id}:{USD_CREDIT_TYPE_ID}:2026-11-01T00:00:00Z"}
    else:
        assert filed == {second: f"invoice:{second}"}


def test_an_orphan_reissue_starts_its_own_history_with_a_logged_note(
    sandbox: Sandbox, pipeline: Pipeline, caplog: pytest.LogCaptureFixture,
) -> None:
    """B is regenerated from A, which was voided before the pipeline ever ran: A's total was never
    this pipeline's, so B starts its own history (its whole total is new) and a note names both."""
    use_amount_mode(pipeline)
    alice = add_customer(sandbox, "Alice")
    first = add_invoice(sandbox, alice, {at(25, 8, 30): 4000})
    second = reissue_with_moved_period(sandbox, alice, first, {at(25, 9, 30): 5000}, void_at=at(25, 9, 30))
    with caplog.at_level(logging.WARNING, logger="metronome_suger.steps.invoices"):
        run_ok(pipeline, "2026-11-25-10:00")
        run_ok(pipeline, "2026-11-25-11:00")  # noted once, when B is first filed
    assert received(sandbox) == [(alice.entitlement, "2026-11-25T10:00:00Z", units("5000"))]
    notes = [r.getMessage() for r in caplog.records if r.name == "metronome_suger.steps.invoices"]
    assert len(notes) == 1
    assert f"invoice {second}" in notes[0] and f"regenerated from invoice {first}" in notes[0]
    own = f"period:{alice.id}:{USD_CREDIT_TYPE_ID}:2026-11-10T00:00:00Z"
    assert own in notes[0]
    assert pipeline.query("SELECT DISTINCT history_key FROM invoice_snapshots WHERE invoice_id = ?", [second]) == [
        (own,)]


def test_the_listing_is_filtered_by_metronome_one_call_per_linked_customer(
    sandbox: Sandbox, pipeline: Pipeline,
) -> None:
    """``type=USAGE``, USD cents, ``status=DRAFT``, ``skip_zero_qty_line_items``, on each linked customer's
    listing (no listing for a customer without a link): the emulator applies them, so a non-USD, a
    SCHEDULED and a FINALIZED invoice are not even returned."""
    use_amount_mode(pipeline)
    alice, bob = add_customer(sandbox, "Alice"), add_customer(sandbox, "Bob", "AZURE")
    sandbox.metronome.add_customer("Not linked")
    compute = sandbox.metronome.add_billable_metric("compute", unit_price_cents=100)["id"]
    sandbox.metronome.set_usage(alice.id, compute, at(25, 10), 25)
    sandbox.metronome.add_invoice(alice.id, period_start=NOV, period_end=DEC)  # priced from usage: $25
    add_invoice(sandbox, alice, {at(25, 10, 30): 999_999},
                credit_type={"id": "c0ffee00-0000-4000-8000-000000000001", "name": "AI credits"})
    add_invoice(sandbox, alice, {NOV: 50_000}, type="SCHEDULED")
    add_invoice(sandbox, alice, {at(24, 0): 7_000}, start=NOV - timedelta(days=31), end=NOV)  # FINALIZED
    add_invoice(sandbox, bob, {at(25, 10, 30): 1000})
    sandbox.metronome_log.clear()
    result = run_ok(pipeline, "2026-11-25-10:00")
    listings = [e for e in sandbox.metronome_log.find("GET", "/v1/customers/") if e.path.endswith("/invoices")]
    assert sorted(e.path for e in listings) == sorted(f"/v1/customers/{c.id}/invoices" for c in (alice, bob))
    for entry in listings:
        query = parse_qs(entry.query)
        assert {k: query[k] for k in ("type", "credit_type_id", "status", "skip_zero_qty_line_items")} == {
            "type": ["USAGE"], "credit_type_id": [USD_CREDIT_TYPE_ID], "status": ["DRAFT"],
            "skip_zero_qty_line_items": ["true"],
        }
    assert invoice_metadata(result)["dagster/row_count"] == 2  # Alice's usage DRAFT and Bob's
    snapshots = pipeline.query("SELECT customer_id, status, total_cents FROM invoice_snapshots ORDER BY total_cents")
    assert snapshots == [(bob.id, "DRAFT", Decimal(1000)), (alice.id, "DRAFT", Decimal(2500))]
    assert sorted(received(sandbox)) == sorted([
        (alice.entitlement, "2026-11-25T10:00:00Z", units("2500")),
        (bob.entitlement, "2026-11-25T10:00:00Z", units("40")),
    ])


def test_a_draft_that_finalizes_is_read_once_more_for_its_final_total(sandbox: Sandbox, pipeline: Pipeline) -> None:
    """The period ends at 11:00 and the invoice finalizes at 12:00; $5 of usage of its 09:00 hour arrives
    late, during the grace. The DRAFT-only listing no longer returns it once FINALIZED, so the 11:00
    window reads it by id once: its final total is observed and only the increase is sent; later
    windows neither read nor report it."""
    use_amount_mode(pipeline)
    alice = add_customer(sandbox, "Alice")
    compute = sandbox.metronome.add_billable_metric("compute", unit_price_cents=100)["id"]  # $1 per unit
    sandbox.metronome.set_usage(alice.id, compute, at(25, 10), 100)
    invoice = sandbox.metronome.add_invoice(alice.id, period_start=NOV, period_end=at(25, 11),
                                            grace=timedelta(hours=1))["id"]
    reads = lambda: sandbox.metronome_log.find("GET", f"/v1/customers/{alice.id}/invoices/{invoice}")  # noqa: E731
    run_ok(pipeline, "2026-11-25-10:00")
    assert reads() == []  # still DRAFT: listed
    sandbox.metronome.set_usage(alice.id, compute, at(25, 9), 5)  # late usage, inside the period
    finalized = run_ok(pipeline, "2026-11-25-11:00")
    assert [e.status for e in reads()] == [200]
    run_ok(pipeline, "2026-11-25-12:00")
    assert len(reads()) == 1
    assert received(sandbox) == [
        (alice.entitlement, "2026-11-25T10:00:00Z", units("10000")),
        (alice.entitlement, "2026-11-25T11:00:00Z", units("500")),
    ]
    assert invoice_metadata(finalized)["invoices_tracked"] == 1
    seen = pipeline.query("SELECT hour(window_start), status, total_cents FROM invoice_snapshots WHERE invoice_id = ? "
                          "ORDER BY window_start", [invoice])
    assert seen == [(10, "DRAFT", Decimal(10000)), (11, "FINALIZED", Decimal(10500))]
