"""MetronomeClient against the Metronome emulator over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from metronome_suger.clients.errors import (
    BadRequestError,
    MalformedResponseError,
    NotFoundError,
)
from metronome_suger.clients.metronome import MetronomeClient
from metronome_suger.clients.metronome_models import (
    USD_CREDIT_TYPE_ID,
    Invoice,
    UsageRow,
)

from .conftest import NOW, RecordingSleep, make_metronome

UTC = timezone.utc
HOUR = timedelta(hours=1)


def _add_customer(sb: Any, name: str, **kwargs: Any) -> dict[str, Any]:
    # Explicit ids: the emulator's seeded id generator can repeat ids the seeded scenario already
    # used.
    return dict(sb.metronome.add_customer(name, id=str(uuid.uuid4()), **kwargs))


def _add_metric(sb: Any, name: str, **kwargs: Any) -> dict[str, Any]:
    return dict(sb.metronome.add_billable_metric(name, id=str(uuid.uuid4()), **kwargs))


def _query(entry: Any) -> dict[str, list[str]]:
    return parse_qs(entry.query, keep_blank_values=True)


# -- customers -------------------------------------------------------------------------------------


def test_list_customers_matches_the_emulator_and_parses_every_field(
    sandbox: Any, metronome: MetronomeClient
) -> None:
    expected = [c for c in sandbox.metronome.customers() if c["archived_at"] is None]
    customers = metronome.list_customers()
    assert [c.id for c in customers] == [c["id"] for c in expected]
    for got, want in zip(customers, expected, strict=True):
        assert got.name == want["name"] and got.external_id == want["external_id"]
        assert (
            got.ingest_aliases == want["ingest_aliases"]
            and got.custom_fields == want["custom_fields"]
        )
        assert got.created_at is not None and got.created_at.tzinfo is not None
        assert got.archived is False
        assert (
            got.model_extra is not None and "customer_config" in got.model_extra
        )  # unknown fields kept


def test_pagination_walks_through_empty_pages(sandbox: Any, sleeper: RecordingSleep) -> None:
    for n in range(5):
        _add_customer(sandbox, f"Extra {n}")
    expected = [c["id"] for c in sandbox.metronome.customers() if c["archived_at"] is None]
    sandbox.metronome_faults.empty_pages = True  # every data page is preceded by an empty one
    sandbox.metronome_log.clear()
    with make_metronome(sandbox, sleeper, page_limit=2) as client:
        assert [c.id for c in client.list_customers()] == expected
    calls = sandbox.metronome_log.find("GET", "/v1/customers")
    data_pages = -(-len(expected) // 2)
    assert len(calls) == 2 * data_pages  # one empty page before each data page, nothing skipped
    assert "next_page" not in _query(calls[0])
    assert all(_query(c)["limit"] == ["2"] and "next_page" in _query(c) for c in calls[1:])
    assert sleeper.waits == []


def test_default_empty_second_page_is_followed(sandbox: Any, sleeper: RecordingSleep) -> None:
    for n in range(3):
        _add_customer(sandbox, f"Extra {n}")
    expected = [c["id"] for c in sandbox.metronome.customers() if c["archived_at"] is None]
    with make_metronome(sandbox, sleeper, page_limit=1) as client:
        assert [c.id for c in client.list_customers()] == expected


def test_archived_customers_need_the_second_call(sandbox: Any, metronome: MetronomeClient) -> None:
    archived = _add_customer(sandbox, "Gone Ltd", archived=True)
    active_ids = [c.id for c in metronome.list_customers()]
    assert archived["id"] not in active_ids
    sandbox.metronome_log.clear()
    everyone = metronome.list_customers(include_archived=True)
    assert [c.id for c in everyone] == active_ids + [archived["id"]]
    assert everyone[-1].archived and everyone[-1].archived_at is not None
    queries = [_query(e) for e in sandbox.metronome_log.find("GET", "/v1/customers")]
    assert any(q.get("only_archived") == ["true"] for q in queries)


def test_get_customer_and_404(sandbox: Any, metronome: MetronomeClient) -> None:
    wanted = sandbox.metronome.customers()[0]
    assert metronome.get_customer(wanted["id"]).name == wanted["name"]
    sandbox.metronome_log.clear()
    with pytest.raises(NotFoundError) as info:
        metronome.get_customer("00000000-0000-4000-8000-000000000000")
    exc = info.value
    assert exc.status == 404 and exc.method == "GET" and exc.service == "metronome"
    assert exc.path == "/v1/customers/00000000-0000-4000-8000-000000000000"
    assert str(exc).startswith(
        "Metronome GET /v1/customers/00000000-0000-4000-8000-000000000000 -> 404: "
    )
    assert exc.message and "{" not in exc.message  # the JSON message, not the raw body
    assert len(sandbox.metronome_log.entries()) == 1  # 404 is never retried


def test_a_400_is_not_retried(
    sandbox: Any, metronome: MetronomeClient, sleeper: RecordingSleep
) -> None:
    sandbox.metronome_log.clear()
    with pytest.raises(BadRequestError) as info:
        metronome.request("GET", "/v1/customers", params={"limit": 1000})
    assert info.value.status == 400 and "limit" in info.value.message
    assert len(sandbox.metronome_log.entries()) == 1 and sleeper.waits == []


# -- metrics ---------------------------------------------------------------------------------------


def test_billable_metrics_archived_flag(sandbox: Any, metronome: MetronomeClient) -> None:
    live = _add_metric(sandbox, "gpu_seconds", aggregation_type="SUM", aggregation_key="seconds")
    old = _add_metric(sandbox, "legacy_calls", aggregation_type="COUNT", archived=True)
    metrics = {m.id: m for m in metronome.list_billable_metrics()}
    assert (
        metrics[live["id"]].archived is False and metrics[live["id"]].aggregation_key == "seconds"
    )
    assert metrics[old["id"]].archived is True and metrics[old["id"]].archived_at is not None
    assert metrics[live["id"]].aggregation_type == "SUM"
    assert {m.id for m in metrics.values()} == {
        m["id"] for m in sandbox.metronome.metrics(include_archived=True)
    }
    active = {m.id for m in metronome.list_billable_metrics(include_archived=False)}
    assert old["id"] not in active and live["id"] in active


# -- usage -----------------------------------------------------------------------------------------


def test_usage_values_round_trip_as_exact_decimals(
    sandbox: Any, metronome: MetronomeClient
) -> None:
    customer = _add_customer(sandbox, "Precise Inc")
    metric = _add_metric(sandbox, "precise_units", aggregation_type="SUM", aggregation_key="n")
    start = NOW - 3 * HOUR
    values = [Decimal("0.1"), Decimal("12345.678901"), None]
    for i, value in enumerate(values):
        sandbox.metronome.set_usage(customer["id"], metric["id"], start + i * HOUR, value)
    rows = metronome.list_usage(
        starting_on=start,
        ending_before=NOW,
        window_size="hour",
        customer_ids=[customer["id"]],
        billable_metric_ids=[metric["id"]],
    )
    assert all(isinstance(r, UsageRow) for r in rows)
    assert [r.start_timestamp for r in rows] == [start, start + HOUR, start + 2 * HOUR]
    by_hour = {r.start_timestamp: r for r in rows}
    assert by_hour[start].value == Decimal("0.1") and isinstance(by_hour[start].value, Decimal)
    assert by_hour[start + HOUR].value == Decimal("12345.678901")
    assert by_hour[start + 2 * HOUR].value is None
    assert by_hour[start].end_timestamp == start + HOUR
    assert by_hour[start].billable_metric_name == "precise_units"
    body = sandbox.metronome_log.find("POST", "/v1/usage")[-1].body
    assert body == {  # widened to whole UTC days, as Metronome documents; rows filtered back
        "starting_on": "2026-11-25T00:00:00Z",
        "ending_before": "2026-11-26T00:00:00Z",
        "window_size": "HOUR",
        "customer_ids": [customer["id"]],
        "billable_metrics": [{"id": metric["id"]}],
    }


@pytest.mark.parametrize(
    "start, end, sent",
    [
        (NOW - 2 * HOUR, NOW - HOUR, ("2026-11-25T00:00:00Z", "2026-11-26T00:00:00Z")),
        (  # across midnight: both days
            datetime(2026, 11, 24, 23, tzinfo=UTC),
            datetime(2026, 11, 25, 1, tzinfo=UTC),
            ("2026-11-24T00:00:00Z", "2026-11-26T00:00:00Z"),
        ),
        (  # ends on a midnight: that midnight, not one more day
            datetime(2026, 11, 24, 22, tzinfo=UTC),
            datetime(2026, 11, 25, tzinfo=UTC),
            ("2026-11-24T00:00:00Z", "2026-11-25T00:00:00Z"),
        ),
    ],
)
def test_hourly_usage_is_read_from_whole_utc_days(
    sandbox: Any,
    metronome: MetronomeClient,
    sleeper: RecordingSleep,
    start: datetime,
    end: datetime,
    sent: tuple[str, str],
) -> None:
    """The emulator refuses any bound that is not a UTC midnight (as Metronome documents), so an
    hourly window only works because the client asks for its whole days and keeps its hours; the
    request log shows what was sent, and nothing was refused or retried."""
    customer = _add_customer(sandbox, "Aligned Ltd")
    metric = _add_metric(sandbox, "aligned_units", aggregation_type="SUM", aggregation_key="n")
    hours = [start + i * HOUR for i in range(int((end - start) / HOUR))]
    for n, hour in enumerate(hours):
        sandbox.metronome.set_usage(customer["id"], metric["id"], hour, Decimal(n) + Decimal("0.25"))
    sandbox.metronome_log.clear()
    rows = metronome.list_usage(
        starting_on=start, ending_before=end, customer_ids=[customer["id"]], billable_metric_ids=[metric["id"]]
    )
    assert [(r.start_timestamp, r.end_timestamp, r.value) for r in rows] == [
        (hour, hour + HOUR, Decimal(n) + Decimal("0.25")) for n, hour in enumerate(hours)
    ]
    [call] = sandbox.metronome_log.find("POST", "/v1/usage")
    assert (call.body["starting_on"], call.body["ending_before"]) == sent
    assert call.status == 200 and sleeper.waits == []


def test_the_client_has_no_hour_bounds_path(metronome: MetronomeClient) -> None:
    """There is no switch left to send hour bounds (the old ``day_aligned=False``)."""
    with pytest.raises(TypeError, match="day_aligned"):
        metronome.list_usage(starting_on=NOW - HOUR, ending_before=NOW, day_aligned=False)  # type: ignore[call-arg]


def test_day_windows_and_none_window(sandbox: Any, metronome: MetronomeClient) -> None:
    customer = _add_customer(sandbox, "Daily Co")
    metric = _add_metric(sandbox, "daily_units", aggregation_type="SUM", aggregation_key="n")
    day = datetime(2026, 11, 24, tzinfo=UTC)
    sandbox.metronome.set_usage(customer["id"], metric["id"], day + 3 * HOUR, Decimal("1.5"))
    sandbox.metronome.set_usage(customer["id"], metric["id"], day + 9 * HOUR, Decimal("2.25"))
    filters: dict[str, Any] = {
        "customer_ids": [customer["id"]],
        "billable_metric_ids": [metric["id"]],
    }
    daily = metronome.list_usage(
        starting_on=day, ending_before=day + 24 * HOUR, window_size="DAY", **filters
    )
    assert [(r.start_timestamp, r.value) for r in daily] == [(day, Decimal("3.75"))]
    total = metronome.list_usage(
        starting_on=day, ending_before=day + 24 * HOUR, window_size="NONE", **filters
    )
    assert [r.value for r in total] == [Decimal("3.75")]
    with pytest.raises(ValueError, match="NONE"):
        metronome.list_usage(
            starting_on=day + HOUR, ending_before=day + 5 * HOUR, window_size="NONE"
        )


def test_usage_pagination_resends_the_body_and_puts_the_cursor_in_the_query(
    sandbox: Any, metronome: MetronomeClient
) -> None:
    sandbox.metronome_log.clear()
    start = NOW - 48 * HOUR
    rows = list(metronome.iter_usage(starting_on=start, ending_before=NOW, window_size="HOUR"))
    calls = sandbox.metronome_log.find("POST", "/v1/usage")
    assert len(calls) > 1, "the seeded sandbox should need several usage pages"
    assert all(c.body == calls[0].body for c in calls)  # filters re-sent unchanged
    assert "next_page" not in _query(calls[0])
    assert all(list(_query(c)) == ["next_page"] for c in calls[1:])  # cursor only, never limit
    keys = [(r.customer_id, r.billable_metric_id, r.start_timestamp) for r in rows]
    assert len(keys) == len(set(keys)) and rows


def test_usage_argument_checks(metronome: MetronomeClient) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        metronome.list_usage(starting_on=datetime(2026, 11, 25), ending_before=NOW)
    with pytest.raises(ValueError, match="after"):
        metronome.list_usage(starting_on=NOW, ending_before=NOW)
    with pytest.raises(ValueError, match="window_size"):
        metronome.list_usage(starting_on=NOW - HOUR, ending_before=NOW, window_size="WEEK")
    assert metronome.list_usage(starting_on=NOW - HOUR, ending_before=NOW, customer_ids=[]) == []


# -- invoices --------------------------------------------------------------------------------------


def _invoice_for(sandbox: Any, customer_id: str, total: Decimal) -> dict[str, Any]:
    invoice = sandbox.metronome.add_invoice(
        customer_id,
        period_start=datetime(2026, 11, 1, tzinfo=UTC),
        period_end=datetime(2026, 12, 1, tzinfo=UTC),
    )
    sandbox.metronome.set_invoice_total(
        invoice["id"], total, effective_at=datetime(2026, 11, 1, tzinfo=UTC)
    )
    return dict(invoice)


def test_invoice_totals_are_exact_decimal_cents(sandbox: Any, metronome: MetronomeClient) -> None:
    customer = _add_customer(sandbox, "Invoiced Co")
    invoice = _invoice_for(sandbox, customer["id"], Decimal("12345.67"))
    invoices = metronome.list_invoices(customer["id"], credit_type_id=USD_CREDIT_TYPE_ID)
    got = next(i for i in invoices if i.id == invoice["id"])
    assert (
        isinstance(got, Invoice)
        and got.total == Decimal("12345.67")
        and isinstance(got.total, Decimal)
    )
    assert got.is_usd and got.credit_type.name == "USD (cents)"
    assert got.start_timestamp == datetime(2026, 11, 1, tzinfo=UTC)
    assert got.end_timestamp == datetime(2026, 12, 1, tzinfo=UTC)
    for item in got.line_items:
        assert isinstance(item.total, Decimal)
    query = _query(
        sandbox.metronome_log.find("GET", f"/v1/customers/{customer['id']}/invoices")[-1]
    )
    assert query["sort"] == ["date_asc"] and query["credit_type_id"] == [USD_CREDIT_TYPE_ID]


def test_invoice_filters_are_sent_and_lineage_parsed(sandbox: Any, metronome: MetronomeClient) -> None:
    """``list_invoices`` sends the SDK's filters (``type``, ``credit_type_id``, one ``status``,
    ``skip_zero_qty_line_items``) and the emulator applies them; a re-issue's parent is parsed."""
    customer = _add_customer(sandbox, "Filtered Co")
    voided = _invoice_for(sandbox, customer["id"], Decimal(500))
    reissued = sandbox.metronome.void_invoice(voided["id"], at=NOW - 3 * HOUR)
    sandbox.metronome.add_invoice(
        customer["id"], period_start=datetime(2026, 11, 1, tzinfo=UTC), period_end=datetime(2026, 12, 1, tzinfo=UTC),
        type="SCHEDULED",
    )
    sandbox.metronome_log.clear()
    got = metronome.list_invoices(
        customer["id"], status="DRAFT", invoice_type="USAGE", credit_type_id=USD_CREDIT_TYPE_ID,
        skip_zero_qty_line_items=True,
    )
    assert [(i.id, i.regenerated_from_invoice_id, i.correction_record) for i in got] == [
        (reissued["id"], voided["id"], None)
    ]
    query = _query(sandbox.metronome_log.find("GET", f"/v1/customers/{customer['id']}/invoices")[-1])
    assert {k: v for k, v in query.items() if k != "limit"} == {
        "status": ["DRAFT"], "type": ["USAGE"], "credit_type_id": [USD_CREDIT_TYPE_ID],
        "skip_zero_qty_line_items": ["true"], "sort": ["date_asc"],
    }
    with pytest.raises(ValueError, match="invoice_type"):
        metronome.list_invoices(customer["id"], invoice_type="usage")


def test_get_invoices_reads_each_one_and_maps_404_to_none(sandbox: Any, metronome: MetronomeClient) -> None:
    customer = _add_customer(sandbox, "Final Read Co")
    invoice = _invoice_for(sandbox, customer["id"], Decimal("99.5"))
    one = metronome.get_invoice(customer["id"], invoice["id"])
    assert isinstance(one, Invoice) and one.total == Decimal("99.5") and one.status == "DRAFT"
    with pytest.raises(NotFoundError):
        metronome.get_invoice(customer["id"], "no-such-invoice")
    sandbox.metronome_log.clear()
    refs = [(customer["id"], "no-such-invoice"), (customer["id"], invoice["id"])]
    got = metronome.get_invoices(refs, skip_zero_qty_line_items=True)
    assert list(got) == refs and got[refs[0]] is None and got[refs[1]] == one
    calls = sandbox.metronome_log.find("GET", f"/v1/customers/{customer['id']}/invoices/")
    assert sorted(c.path.rsplit("/", 1)[1] for c in calls) == sorted(["no-such-invoice", invoice["id"]])
    assert all(_query(c) == {"skip_zero_qty_line_items": ["true"]} for c in calls)


def test_invoices_of_an_unknown_customer_is_not_found(metronome: MetronomeClient) -> None:
    with pytest.raises(NotFoundError):
        metronome.list_invoices("00000000-0000-4000-8000-00000000dead")


def test_list_invoices_for_20_customers_is_concurrent_bounded_and_ordered(
    sandbox: Any, sleeper: RecordingSleep
) -> None:
    ids = [c["id"] for c in sandbox.metronome.customers()]
    while len(ids) < 20:
        ids.append(_add_customer(sandbox, f"Many {len(ids)}")["id"])
    ids = ids[:20][::-1]  # input order differs from creation order
    totals = {cid: Decimal(100 + n) for n, cid in enumerate(ids)}
    for cid, total in totals.items():
        _invoice_for(sandbox, cid, total)
    sandbox.metronome_faults.inject(
        "latency", times=20, path_prefix="/v1/customers/", delay_seconds=0.05
    )
    sandbox.metronome_log.clear()

    lock = threading.Lock()
    active = 0
    peak = 0
    with make_metronome(sandbox, sleeper, max_workers=4) as client:
        original = client.request

        def counting_request(*args: Any, **kwargs: Any) -> Any:
            nonlocal active, peak
            with lock:
                active += 1
                peak = max(peak, active)
            try:
                return original(*args, **kwargs)
            finally:
                with lock:
                    active -= 1

        client.request = counting_request  # type: ignore[method-assign]
        result = client.list_invoices_for_customers(ids)
    assert list(result) == ids
    for cid in ids:
        assert all(inv.customer_id == cid for inv in result[cid])
        assert totals[cid] in {inv.total for inv in result[cid]}
    calls = sandbox.metronome_log.find("GET", "/v1/customers/")
    assert len(calls) == 20 and {c.path for c in calls} == {
        f"/v1/customers/{cid}/invoices" for cid in ids
    }
    assert 1 < peak <= 4


# -- malformed -------------------------------------------------------------------------------------


def test_malformed_json_is_a_typed_error_and_not_retried(
    sandbox: Any, metronome: MetronomeClient, sleeper: RecordingSleep
) -> None:
    sandbox.metronome_faults.inject("malformed", path_prefix="/v1/billable-metrics")
    sandbox.metronome_log.clear()
    with pytest.raises(MalformedResponseError) as info:
        metronome.list_billable_metrics()
    exc = info.value
    assert exc.method == "GET" and exc.path == "/v1/billable-metrics" and exc.status == 200
    assert "not valid JSON" in str(exc) and str(exc).startswith(
        "Metronome GET /v1/billable-metrics -> 200:"
    )
    assert len(sandbox.metronome_log.entries()) == 1 and sleeper.waits == []


def test_repeated_cursor_is_refused() -> None:
    """The emulator never repeats a cursor, so this protocol violation is staged with a fake
    transport."""
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        cursor = request.url.params.get("next_page")
        nxt = {None: "c1", "c1": "c2", "c2": "c1"}[cursor]
        return httpx.Response(200, content=json.dumps({"data": [], "next_page": nxt}).encode())

    client = MetronomeClient(
        "http://metronome.invalid", "tok-123456", transport=httpx.MockTransport(handler)
    )
    with client, pytest.raises(MalformedResponseError) as info:
        client.list_customers()
    assert "cursor repeated" in str(info.value) and info.value.path == "/v1/customers"
    assert len(calls) == 3
