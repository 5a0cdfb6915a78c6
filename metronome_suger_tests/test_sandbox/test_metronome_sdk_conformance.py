"""The official Metronome SDK as an oracle: if it can read the emulator, the shapes are right."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal

import metronome
import pytest
from metronome import Metronome

from metronome_suger.sandbox.constants import METRONOME_TOKEN
from metronome_suger.sandbox.server import Sandbox


@pytest.fixture
def client(shared_sandbox: Sandbox) -> Iterator[Metronome]:
    sdk = Metronome(
        bearer_token=METRONOME_TOKEN, base_url=shared_sandbox.metronome_url, max_retries=0
    )
    yield sdk
    sdk.close()


def test_customers_auto_page_through_the_empty_page(
    client: Metronome, shared_sandbox: Sandbox
) -> None:
    customers = list(client.v1.customers.list(limit=2))
    assert [c.id for c in customers] == shared_sandbox.scenario.customer_ids
    assert [c.name for c in customers] == [c["name"] for c in shared_sandbox.metronome.customers()]
    assert len(shared_sandbox.metronome_log.find("GET", "/v1/customers")) == 4  # 2 + empty + 2 + 2
    one = client.v1.customers.retrieve(customer_id=customers[0].id).data
    assert one.ingest_aliases == customers[0].ingest_aliases and one.created_at.tzinfo is not None


def test_billable_metrics(client: Metronome, shared_sandbox: Sandbox) -> None:
    metrics = list(client.v1.billable_metrics.list(limit=1))
    assert {m.name: m.aggregation_type for m in metrics} == {
        "cpu_hours": "SUM",
        "api_calls": "COUNT",
        "peak_storage_gb": "MAX",
    }
    archived = list(client.v1.billable_metrics.list(include_archived=True))
    assert len(archived) == 4
    retrieved = client.v1.billable_metrics.retrieve(
        billable_metric_id=shared_sandbox.scenario.metric_ids["legacy_jobs"]
    )
    assert retrieved.data.archived_at is not None
    customer = shared_sandbox.scenario.customer_ids[0]
    per_customer = list(client.v1.customers.list_billable_metrics(customer_id=customer))
    assert {m.name for m in per_customer} == {m.name for m in metrics}


def test_hourly_usage_matches_state(client: Metronome, shared_sandbox: Sandbox) -> None:
    info, state = shared_sandbox.scenario, shared_sandbox.metronome
    rows = list(
        client.v1.usage.list(
            starting_on=datetime(2026, 11, 24, tzinfo=timezone.utc),
            ending_before=datetime(2026, 11, 25, tzinfo=timezone.utc),
            window_size="HOUR",
        )
    )
    assert len(rows) == len(info.customer_ids) * 3 * 24  # several pages, one of them empty
    assert (
        len(shared_sandbox.metronome_log.find("POST", "/v1/usage")) == 5 + 1
    )  # 432 rows: 4 x 100 + 32, one empty
    for row in rows:
        expected = state.usage_value(row.customer_id, row.billable_metric_id, row.start_timestamp)
        assert row.value == (None if expected is None else float(expected))
    assert any(row.value is None for row in rows)
    daily = list(
        client.v1.usage.list(
            starting_on="2026-11-24T00:00:00Z",
            ending_before="2026-11-25T00:00:00Z",
            window_size="DAY",
            customer_ids=[info.role("aws")],
            billable_metrics=[{"id": info.metric_ids["peak_storage_gb"]}],
        )
    )
    hourly = [
        r.value
        for r in rows
        if r.customer_id == info.role("aws")
        and r.billable_metric_id == info.metric_ids["peak_storage_gb"]
    ]
    assert [d.value for d in daily] == [max(v for v in hourly if v is not None)]


def test_invoices_and_breakdowns(client: Metronome, shared_sandbox: Sandbox) -> None:
    info, state = shared_sandbox.scenario, shared_sandbox.metronome
    customer = info.role("void")
    invoices = list(
        client.v1.customers.invoices.list(customer_id=customer, limit=1, sort="date_asc")
    )
    assert sorted(i.id for i in invoices) == sorted(info.invoice_ids[customer])
    for invoice in invoices:
        assert Decimal(str(invoice.total)) == state.invoice_total(invoice.id)
        assert invoice.credit_type.name == "USD (cents)"
    assert {i.status for i in invoices} == {"FINALIZED", "VOID", "DRAFT"}
    reissued = client.v1.customers.invoices.retrieve(
        customer_id=customer, invoice_id=str(info.reissued_invoice_id)
    )
    assert reissued.data.regenerated_from_invoice_id == info.voided_invoice_id
    assert reissued.data.correction_record is None and reissued.data.created_at is None
    drafts = list(
        client.v1.customers.invoices.list(
            customer_id=customer, status="DRAFT", type="USAGE", skip_zero_qty_line_items=True,
            credit_type_id="2714e483-4ff1-48e4-9e25-ac732e8f24f2", sort="date_asc",
        )
    )
    assert [i.id for i in drafts] == [info.reissued_invoice_id]
    breakdowns = list(
        client.v1.customers.invoices.list_breakdowns(
            customer_id=customer,
            starting_on="2026-11-25T00:00:00Z",
            ending_before="2026-11-25T12:00:00Z",
            window_size="HOUR",
        )
    )
    assert len(breakdowns) == 12 and {b.id for b in breakdowns} == {info.reissued_invoice_id}
    assert breakdowns[0].breakdown_start_timestamp == datetime(2026, 11, 25, tzinfo=timezone.utc)


def test_ingest_and_errors(client: Metronome, shared_sandbox: Sandbox) -> None:
    client.v1.usage.ingest(
        usage=[
            {
                # unmatched customer: accepted and stored, changes no usage in the shared sandbox
                "transaction_id": "sdk-1",
                "customer_id": "not-a-customer",
                "event_type": "api_calls",
                "timestamp": "2026-11-25T09:10:00Z",
            }
        ]
    )
    assert [e["transaction_id"] for e in shared_sandbox.metronome.events()][-1] == "sdk-1"
    with pytest.raises(metronome.NotFoundError):
        client.v1.customers.retrieve(customer_id="00000000-0000-4000-8000-000000000000")
    with pytest.raises(metronome.BadRequestError):
        client.v1.customers.list(limit=500)
    shared_sandbox.metronome_faults.inject("429", retry_after=1)
    with pytest.raises(metronome.RateLimitError):
        client.v1.customers.list()
    bad = Metronome(bearer_token="wrong", base_url=shared_sandbox.metronome_url, max_retries=0)
    with pytest.raises(metronome.AuthenticationError):
        bad.v1.customers.list()
    bad.close()
