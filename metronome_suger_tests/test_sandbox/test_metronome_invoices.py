"""Invoices of the Metronome emulator as an hourly poller sees them: growth, credits, VOID and
re-issue, grace and finalization, month rollover, filters and breakdowns."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import httpx
import pytest

from metronome_suger.sandbox.constants import USD_CREDIT_TYPE
from metronome_suger.sandbox.server import Sandbox
from metronome_suger.sandbox.wire import parse_rfc3339
from metronome_suger_tests.test_sandbox.conftest import (
    NOW,
    SEED,
    collect_pages,
    flatten,
    metronome_client,
)

HOUR = timedelta(hours=1)
NOV = datetime(2026, 11, 1, tzinfo=timezone.utc)
DEC = datetime(2026, 12, 1, tzinfo=timezone.utc)


def invoices(client: httpx.Client, customer: str, **params: Any) -> list[dict[str, Any]]:
    return flatten(
        collect_pages(client, "GET", f"/v1/customers/{customer}/invoices", params=params)
    )


def invoice(client: httpx.Client, customer: str, invoice_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/customers/{customer}/invoices/{invoice_id}")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


@pytest.fixture
def priced(empty_sandbox: Sandbox) -> dict[str, str]:
    """One customer with monthly invoices from November and one metric at 10 cents per unit."""
    state = empty_sandbox.metronome
    customer = state.add_customer("Priced")["id"]
    metric = state.add_billable_metric("units", aggregation_key="n", unit_price_cents=10)["id"]
    november = state.add_monthly_invoices(customer, first_period_start=NOV)
    assert len(november) == 1
    return {"customer": customer, "metric": metric, "november": november[0]}


def test_draft_total_grows_as_hours_close(
    empty_sandbox: Sandbox, empty_api: httpx.Client, priced: dict[str, str]
) -> None:
    state = empty_sandbox.metronome
    for hour, value in [(10, 2), (11, 3), (13, 5)]:  # NOW is 13:30: the 13:00 hour is still open
        state.set_usage(
            priced["customer"], priced["metric"], NOW.replace(hour=hour, minute=0), value
        )
    data = invoice(empty_api, priced["customer"], priced["november"])
    assert (data["status"], data["total"], data["type"]) == ("DRAFT", 50, "USAGE")
    assert data["credit_type"] == USD_CREDIT_TYPE
    assert (data["start_timestamp"], data["end_timestamp"]) == (
        "2026-11-01T00:00:00Z",
        "2026-12-01T00:00:00Z",
    )
    [line] = data["line_items"]
    assert (line["name"], line["type"], line["quantity"], line["unit_price"], line["total"]) == (
        "units",
        "usage",
        5,
        10,
        50,
    )
    empty_sandbox.clock.advance(HOUR)
    assert invoice(empty_api, priced["customer"], priced["november"])["total"] == 100


def test_month_rollover_grace_then_finalized(
    empty_sandbox: Sandbox, empty_api: httpx.Client, priced: dict[str, str]
) -> None:
    state, clock = empty_sandbox.metronome, empty_sandbox.clock
    state.set_usage(priced["customer"], priced["metric"], DEC - HOUR, 4)
    clock.set(DEC + timedelta(minutes=30))
    listed = {
        i["start_timestamp"]: i for i in invoices(empty_api, priced["customer"], sort="date_asc")
    }
    assert set(listed) == {"2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z"}
    november, december = listed["2026-11-01T00:00:00Z"], listed["2026-12-01T00:00:00Z"]
    assert (november["status"], november["total"]) == ("DRAFT", 40)  # in its 24 h grace
    assert (december["status"], december["total"]) == ("DRAFT", 0)
    clock.set(DEC + timedelta(hours=23, minutes=59))
    assert invoice(empty_api, priced["customer"], priced["november"])["status"] == "DRAFT"
    clock.set(DEC + timedelta(hours=24))
    finalized = invoices(empty_api, priced["customer"], status="FINALIZED")
    assert [(i["id"], i["total"]) for i in finalized] == [(priced["november"], 40)]


def test_previous_month_is_draft_in_grace_early_in_a_month() -> None:
    with (
        Sandbox(seed=SEED, customers=2, now=DEC + timedelta(hours=5)) as sandbox,
        metronome_client(sandbox) as client,
    ):
        customer = sandbox.scenario.customer_ids[0]
        statuses = {i["start_timestamp"]: i["status"] for i in invoices(client, customer)}
        assert statuses == {"2026-11-01T00:00:00Z": "DRAFT", "2026-12-01T00:00:00Z": "DRAFT"}
        sandbox.clock.set(DEC + timedelta(days=1))
        statuses = {i["start_timestamp"]: i["status"] for i in invoices(client, customer)}
        assert statuses["2026-11-01T00:00:00Z"] == "FINALIZED"


def test_credit_lowers_the_total_from_its_effective_time(
    shared_sandbox: Sandbox, shared_api: httpx.Client
) -> None:
    info = shared_sandbox.scenario
    customer, invoice_id = info.role("credit"), info.credit_invoice_id
    assert invoice_id is not None and info.credit_at is not None and info.credit_cents is not None
    now = invoice(shared_api, customer, invoice_id)
    credits = [line for line in now["line_items"] if line["type"] == "applied_commit_or_credit"]
    assert [line["total"] for line in credits] == [-int(info.credit_cents)]
    assert now["total"] == now["subtotal"] - int(info.credit_cents)
    assert Decimal(now["total"]) == shared_sandbox.metronome.invoice_total(invoice_id)
    shared_sandbox.clock.set(info.credit_at - timedelta(seconds=1))
    before = invoice(shared_api, customer, invoice_id)
    shared_sandbox.clock.set(info.credit_at)
    at = invoice(shared_api, customer, invoice_id)
    assert all(line["type"] == "usage" for line in before["line_items"])
    assert at["total"] < before["total"]


def test_void_freezes_and_reissue_continues(
    shared_sandbox: Sandbox, shared_api: httpx.Client
) -> None:
    info = shared_sandbox.scenario
    customer, voided_id, reissued_id = (
        info.role("void"),
        info.voided_invoice_id,
        info.reissued_invoice_id,
    )
    assert voided_id and reissued_id and info.void_at
    voided, reissued = (
        invoice(shared_api, customer, voided_id),
        invoice(shared_api, customer, reissued_id),
    )
    assert voided["status"] == "VOID" and reissued["status"] == "DRAFT"
    same = ("customer_id", "start_timestamp", "end_timestamp", "credit_type", "type")
    assert all(voided[k] == reissued[k] for k in same)
    # SDK invoice.py: a re-issue names its parent in `regenerated_from_invoice_id`;
    # `correction_record` and `created_at` belong to correction invoices only.
    assert reissued["regenerated_from_invoice_id"] == voided_id
    assert not {"correction_record", "created_at"} & set(reissued)
    assert "regenerated_from_invoice_id" not in voided
    assert reissued["total"] >= voided["total"] > 0
    shared_sandbox.clock.advance(5 * HOUR)
    assert invoice(shared_api, customer, voided_id)["total"] == voided["total"]
    assert invoice(shared_api, customer, reissued_id)["total"] > reissued["total"]
    shared_sandbox.clock.set(info.void_at - timedelta(minutes=1))
    listed = {i["id"]: i["status"] for i in invoices(shared_api, customer)}
    assert listed.get(voided_id) == "DRAFT" and reissued_id not in listed
    assert shared_api.get(f"/v1/customers/{customer}/invoices/{reissued_id}").status_code == 404


def test_non_usd_and_scheduled_invoices(shared_sandbox: Sandbox, shared_api: httpx.Client) -> None:
    info = shared_sandbox.scenario
    assert info.non_usd_credit_type is not None
    ai = invoices(shared_api, info.role("non_usd"), credit_type_id=info.non_usd_credit_type["id"])
    assert [i["id"] for i in ai] == [info.non_usd_invoice_id]
    assert (
        ai[0]["credit_type"] == {"id": info.non_usd_credit_type["id"], "name": "AI credits"}
        and ai[0]["total"] > 0
    )
    usd = invoices(shared_api, info.role("non_usd"), credit_type_id=USD_CREDIT_TYPE["id"])
    assert len(usd) == 2 and all(i["credit_type"] == USD_CREDIT_TYPE for i in usd)
    total_now = ai[0]["total"]
    shared_sandbox.clock.advance(timedelta(days=1))
    assert invoice(shared_api, info.role("non_usd"), ai[0]["id"])["total"] > total_now
    scheduled = invoices(shared_api, info.role("scheduled"), type="SCHEDULED")
    assert [(i["id"], i["total"], i["status"]) for i in scheduled] == [
        (info.scheduled_invoice_id, 50000, "FINALIZED")
    ]


def test_invoice_filters_sort_and_zero_lines(
    shared_sandbox: Sandbox, shared_api: httpx.Client
) -> None:
    customer = shared_sandbox.scenario.role("aws")
    october, november = shared_sandbox.scenario.invoice_ids[customer]
    assert [i["id"] for i in invoices(shared_api, customer, sort="date_asc")] == [october, november]
    assert [i["id"] for i in invoices(shared_api, customer, sort="date_desc")] == [
        november,
        october,
    ]
    assert [i["id"] for i in invoices(shared_api, customer, status="FINALIZED")] == [october]
    assert [
        i["id"] for i in invoices(shared_api, customer, starting_on="2026-11-01T00:00:00Z")
    ] == [november]
    assert [
        i["id"] for i in invoices(shared_api, customer, ending_before="2026-11-01T00:00:00+00:00")
    ] == [october]
    names = {line["name"] for line in invoice(shared_api, customer, october)["line_items"]}
    assert "legacy_jobs" in names
    skipped = shared_api.get(
        f"/v1/customers/{customer}/invoices/{october}", params={"skip_zero_qty_line_items": "true"}
    )
    assert "legacy_jobs" not in {line["name"] for line in skipped.json()["data"]["line_items"]}


def test_correction_invoice_carries_correction_record_and_created_at(
    empty_sandbox: Sandbox, empty_api: httpx.Client
) -> None:
    """SDK `metronome/types/v1/customers/invoice.py`: `created_at` "is present for correction invoices
    only", with `correction_record.corrected_invoice_id`; a plain invoice has neither."""
    state = empty_sandbox.metronome
    customer = state.add_customer("Corrected")["id"]
    october = state.add_invoice(customer, period_start=NOV - timedelta(days=31), period_end=NOV)["id"]
    fix_at = NOW - HOUR
    state.add_invoice(
        customer, period_start=NOV - timedelta(days=31), period_end=NOV, id="correction-1",
        created_at=fix_at, corrects=october,
    )
    plain, correction = invoice(empty_api, customer, october), invoice(empty_api, customer, "correction-1")
    assert not {"correction_record", "created_at", "regenerated_from_invoice_id"} & set(plain)
    assert correction["correction_record"]["corrected_invoice_id"] == october
    assert set(correction["correction_record"]) == {"corrected_invoice_id", "memo", "reason"}
    assert parse_rfc3339(correction["created_at"]) == fix_at
    with pytest.raises(KeyError, match="unknown invoice nope"):
        state.add_invoice(customer, period_start=NOV, period_end=DEC, regenerated_from="nope")


@pytest.fixture
def filtered(empty_sandbox: Sandbox) -> dict[str, str]:
    """One customer, November: a USD usage DRAFT (with a zero-quantity line), a non-USD DRAFT, a
    SCHEDULED invoice, and October's USD usage invoice FINALIZED."""
    state = empty_sandbox.metronome
    customer = state.add_customer("Filtered")["id"]
    used = state.add_billable_metric("used", aggregation_key="n", unit_price_cents=10)["id"]
    state.add_billable_metric("idle", aggregation_key="n", unit_price_cents=10)
    state.set_usage(customer, used, NOW.replace(hour=9, minute=0), 4)
    oct_start = NOV - timedelta(days=31)
    ids = {
        "usd": state.add_invoice(customer, period_start=NOV, period_end=DEC, id="usd-draft")["id"],
        "ai": state.add_invoice(
            customer, period_start=NOV, period_end=DEC, id="ai-draft",
            credit_type={"id": "c0ffee00-0000-4000-8000-000000000001", "name": "AI credits"},
        )["id"],
        "scheduled": state.add_invoice(
            customer, period_start=NOV, period_end=DEC, id="scheduled", type="SCHEDULED"
        )["id"],
        "october": state.add_invoice(customer, period_start=oct_start, period_end=NOV, id="usd-oct")["id"],
    }
    return {"customer": customer, **ids}


def test_list_filters_are_applied_by_the_server(
    empty_sandbox: Sandbox, empty_api: httpx.Client, filtered: dict[str, str]
) -> None:
    """The filters of SDK `invoice_list_params.py`, each one honoured: `type`, `credit_type_id`,
    `status` (one value), `skip_zero_qty_line_items`; together they leave only the open USD usage
    invoice, without its zero-quantity line."""
    customer = filtered["customer"]
    ids = lambda **params: sorted(i["id"] for i in invoices(empty_api, customer, **params))  # noqa: E731
    assert ids() == sorted([filtered["usd"], filtered["ai"], filtered["scheduled"], filtered["october"]])
    assert ids(type="USAGE") == sorted([filtered["usd"], filtered["ai"], filtered["october"]])
    assert ids(type="SCHEDULED") == [filtered["scheduled"]]
    assert ids(credit_type_id=USD_CREDIT_TYPE["id"]) == sorted(
        [filtered["usd"], filtered["scheduled"], filtered["october"]]
    )
    assert ids(status="FINALIZED") == [filtered["october"]]
    assert filtered["october"] not in ids(status="DRAFT")
    ours = invoices(
        empty_api, customer, type="USAGE", credit_type_id=USD_CREDIT_TYPE["id"], status="DRAFT",
        skip_zero_qty_line_items="true",
    )
    assert [i["id"] for i in ours] == [filtered["usd"]]
    assert {line["name"] for line in ours[0]["line_items"]} == {"used"}
    full = invoice(empty_api, customer, filtered["usd"])
    assert {line["name"] for line in full["line_items"]} == {"used", "idle"}
    assert full["total"] == ours[0]["total"] == 40
    bad = empty_api.get(f"/v1/customers/{customer}/invoices", params={"type": "MONTHLY"})
    assert bad.status_code == 400 and set(bad.json()) == {"message"} and "type" in bad.json()["message"]


def _cents(value: Decimal) -> Decimal:
    return value.quantize(Decimal(1), ROUND_HALF_UP)


def test_hourly_breakdowns_price_each_window(
    shared_sandbox: Sandbox, shared_api: httpx.Client
) -> None:
    info, state = shared_sandbox.scenario, shared_sandbox.metronome
    customer = info.role("multi_marketplace")
    params = {
        "starting_on": "2026-11-25T10:00:00Z",
        "ending_before": "2026-11-25T13:00:00Z",
        "window_size": "hour",
    }
    rows = flatten(
        collect_pages(
            shared_api, "GET", f"/v1/customers/{customer}/invoices/breakdowns", params=params
        )
    )
    assert [r["breakdown_start_timestamp"] for r in rows] == [
        f"2026-11-25T{h}:00:00Z" for h in (10, 11, 12)
    ]
    assert {r["id"] for r in rows} == {info.invoice_ids[customer][1]}
    for row in rows:
        hour = parse_rfc3339(row["breakdown_start_timestamp"])
        expected = sum(
            _cents(
                (state.usage_value(customer, metric_id, hour) or Decimal(0))
                * state.unit_price_cents(metric_id)
            )
            for metric_id in info.metric_ids.values()
        )
        assert Decimal(str(row["total"])) == expected
        assert row["start_timestamp"] == "2026-11-01T00:00:00Z"  # the parent billing period


def test_daily_breakdowns_page_and_sum_to_the_invoice(
    shared_sandbox: Sandbox, shared_api: httpx.Client
) -> None:
    info = shared_sandbox.scenario
    customer = info.role("aws")
    params = {
        "starting_on": "2026-10-01T00:00:00Z",
        "ending_before": "2026-11-01T00:00:00Z",
        "window_size": "DAY",
        "limit": 10,
    }
    pages = collect_pages(
        shared_api, "GET", f"/v1/customers/{customer}/invoices/breakdowns", params=params
    )
    assert [len(p) for p in pages] == [10, 0, 10, 10, 1]
    rows = flatten(pages)
    october = invoice(shared_api, customer, info.invoice_ids[customer][0])
    # Each window's line totals are rounded to whole cents: the sum may differ by rounding only.
    assert abs(sum(r["total"] for r in rows) - october["total"]) <= 31 * len(info.metric_ids)
    finalized = flatten(
        collect_pages(
            shared_api,
            "GET",
            f"/v1/customers/{customer}/invoices/breakdowns",
            params={**params, "status": "DRAFT", "limit": 100},
        )
    )
    assert finalized == []


def test_breakdowns_skip_void_invoices(shared_sandbox: Sandbox, shared_api: httpx.Client) -> None:
    info = shared_sandbox.scenario
    customer = info.role("void")
    params = {
        "starting_on": "2026-11-25T09:00:00Z",
        "ending_before": "2026-11-25T10:00:00Z",
        "window_size": "HOUR",
    }
    rows = flatten(
        collect_pages(
            shared_api, "GET", f"/v1/customers/{customer}/invoices/breakdowns", params=params
        )
    )
    assert [r["id"] for r in rows] == [info.reissued_invoice_id]
