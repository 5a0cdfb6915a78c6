"""The Metronome emulator over real HTTP: auth, errors, pagination, customers and metrics."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from metronome_suger.sandbox.server import Sandbox
from metronome_suger_tests.test_sandbox.conftest import (
    NOW,
    collect_pages,
    flatten,
    metronome_client,
)

HOUR = timedelta(hours=1)
DAY_START = NOW.replace(hour=0, minute=0)  # 2026-11-25T00:00Z


def usage_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "starting_on": "2026-11-25T00:00:00Z",
        "ending_before": "2026-11-26T00:00:00Z",
        "window_size": "HOUR",
    }
    body.update(overrides)
    return body


# ------------------------------------------------------------------------------------------ auth
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Key sandbox-metronome-token"}],
)
def test_requests_without_the_bearer_token_get_401_json(
    shared_sandbox: Sandbox, headers: dict[str, str]
) -> None:
    response = httpx.get(f"{shared_sandbox.metronome_url}/v1/customers", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/json")
    assert isinstance(response.json()["message"], str) and response.json()["message"]


def test_custom_token_is_enforced() -> None:
    with Sandbox(customers=0, metronome_token="other-token") as sandbox:
        with (
            metronome_client(sandbox) as default_client,
            metronome_client(sandbox, "other-token") as client,
        ):
            assert default_client.get("/v1/customers").status_code == 401
            assert client.get("/v1/customers").status_code == 200


# ------------------------------------------------------------------------------------------ 404
@pytest.mark.parametrize(
    "path",
    [
        "/v1/customers/00000000-0000-4000-8000-000000000000",
        "/v1/customers/00000000-0000-4000-8000-000000000000/invoices",
        "/v1/customers/00000000-0000-4000-8000-000000000000/billable-metrics",
        "/v1/billable-metrics/00000000-0000-4000-8000-000000000000",
        "/v1/no-such-route",
    ],
)
def test_unknown_resources_are_404_json(shared_api: httpx.Client, path: str) -> None:
    response = shared_api.get(path)
    assert response.status_code == 404
    assert set(response.json()) == {"message"}


def test_unknown_or_foreign_invoice_is_404(
    shared_api: httpx.Client, shared_sandbox: Sandbox
) -> None:
    first, second = shared_sandbox.scenario.customer_ids[:2]
    foreign_invoice = shared_sandbox.scenario.invoice_ids[second][0]
    assert shared_api.get(f"/v1/customers/{first}/invoices/{foreign_invoice}").status_code == 404
    assert shared_api.get(f"/v1/customers/{second}/invoices/{foreign_invoice}").status_code == 200
    assert shared_api.get(f"/v1/customers/{first}/invoices/not-an-invoice").json() == {
        "message": "Invoice not-an-invoice not found"
    }


def test_usage_for_unknown_customer_or_metric_is_404(shared_api: httpx.Client) -> None:
    unknown = "00000000-0000-4000-8000-000000000000"
    assert shared_api.post("/v1/usage", json=usage_body(customer_ids=[unknown])).status_code == 404
    assert (
        shared_api.post(
            "/v1/usage", json=usage_body(billable_metrics=[{"id": unknown}])
        ).status_code
        == 404
    )


# ------------------------------------------------------------------------------------------ 400
@pytest.mark.parametrize(
    "method,path,kwargs",
    [
        ("GET", "/v1/customers", {"params": {"limit": 0}}),
        ("GET", "/v1/customers", {"params": {"limit": 101}}),
        ("GET", "/v1/customers", {"params": {"limit": "ten"}}),
        ("GET", "/v1/customers", {"params": {"next_page": "garbage!!"}}),
        ("GET", "/v1/customers", {"params": {"only_archived": "maybe"}}),
        ("GET", "/v1/billable-metrics", {"params": {"limit": 500}}),
        (
            "POST",
            "/v1/usage",
            {
                "json": {
                    "starting_on": "2026-11-25T00:00:00Z",
                    "ending_before": "2026-11-26T00:00:00Z",
                }
            },
        ),
        ("POST", "/v1/usage", {"json": usage_body(window_size="WEEK")}),
        ("POST", "/v1/usage", {"json": usage_body(starting_on="yesterday")}),
        ("POST", "/v1/usage", {"json": usage_body(starting_on="2026-11-25T00:00:00")}),
        ("POST", "/v1/usage", {"json": usage_body(ending_before="2026-11-24T00:00:00Z")}),
        ("POST", "/v1/usage", {"json": usage_body(starting_on="2026-11-25T00:30:00Z")}),
        ("POST", "/v1/usage", {"json": usage_body(billable_metrics=[{"name": "cpu_hours"}])}),
        ("POST", "/v1/usage", {"json": usage_body(customer_ids="abc")}),
        ("POST", "/v1/usage", {"json": ["not", "an", "object"]}),
        (
            "POST",
            "/v1/usage",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
        ),
        ("POST", "/v1/usage/groups", {"json": {"window_size": "HOUR"}}),
        ("POST", "/v1/ingest", {"json": []}),
        ("POST", "/v1/ingest", {"json": {"transaction_id": "x"}}),
        (
            "POST",
            "/v1/ingest",
            {
                "json": [
                    {"customer_id": "c", "event_type": "e", "timestamp": "2026-11-25T00:00:00Z"}
                ]
            },
        ),
        (
            "POST",
            "/v1/ingest",
            {
                "json": [
                    {
                        "transaction_id": "t",
                        "customer_id": "c",
                        "event_type": "e",
                        "timestamp": "bad",
                    }
                ]
            },
        ),
        (
            "POST",
            "/v1/ingest",
            {
                "json": [
                    {
                        "transaction_id": "t",
                        "customer_id": "c",
                        "event_type": "e",
                        "timestamp": "2026-11-27T00:00:00Z",
                    }
                ]
            },
        ),
    ],
)
def test_validation_errors_are_400_json(
    shared_api: httpx.Client, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    response = shared_api.request(method, path, **kwargs)
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"message"}


def test_ingest_batch_over_100_is_400(shared_api: httpx.Client) -> None:
    event = {"customer_id": "c", "event_type": "e", "timestamp": "2026-11-25T00:00:00Z"}
    events = [{**event, "transaction_id": f"t{i}"} for i in range(101)]
    assert shared_api.post("/v1/ingest", json=events).status_code == 400
    assert shared_api.post("/v1/ingest", json=events[:100]).status_code == 200


def test_invoice_and_breakdown_parameter_errors(
    shared_api: httpx.Client, shared_sandbox: Sandbox
) -> None:
    customer = shared_sandbox.scenario.customer_ids[0]
    base = f"/v1/customers/{customer}/invoices"
    assert shared_api.get(base, params={"sort": "newest"}).status_code == 400
    assert shared_api.get(base, params={"starting_on": "not-a-date"}).status_code == 400
    assert (
        shared_api.get(
            f"{base}/breakdowns", params={"ending_before": "2026-11-26T00:00:00Z"}
        ).status_code
        == 400
    )
    bad_window = {
        "starting_on": "2026-11-25T00:00:00Z",
        "ending_before": "2026-11-26T00:00:00Z",
        "window_size": "NONE",
    }
    assert shared_api.get(f"{base}/breakdowns", params=bad_window).status_code == 400


def test_a_cursor_from_another_listing_is_rejected(shared_api: httpx.Client) -> None:
    cursor = shared_api.get("/v1/customers", params={"limit": 1}).json()["next_page"]
    assert cursor is not None
    response = shared_api.get("/v1/billable-metrics", params={"next_page": cursor})
    assert response.status_code == 400
    assert "next_page" in response.json()["message"]


# ----------------------------------------------------------------------------------- pagination
def _assert_one_empty_page(pages: list[list[dict[str, Any]]]) -> None:
    empties = [i for i, page in enumerate(pages) if not page]
    assert empties == [1], (
        f"expected exactly the second page to be empty, got page sizes {[len(p) for p in pages]}"
    )


def test_customers_paginate_through_an_empty_page(
    shared_api: httpx.Client, shared_sandbox: Sandbox
) -> None:
    pages = collect_pages(shared_api, "GET", "/v1/customers", params={"limit": 2})
    _assert_one_empty_page(pages)
    assert [c["id"] for c in flatten(pages)] == shared_sandbox.scenario.customer_ids


def test_metrics_paginate_and_respect_include_archived(
    shared_api: httpx.Client, shared_sandbox: Sandbox
) -> None:
    pages = collect_pages(
        shared_api, "GET", "/v1/billable-metrics", params={"limit": 1, "include_archived": "true"}
    )
    _assert_one_empty_page(pages)
    assert {m["name"] for m in flatten(pages)} == set(shared_sandbox.scenario.metric_ids)
    active = flatten(collect_pages(shared_api, "GET", "/v1/billable-metrics"))
    assert {m["name"] for m in active} == {"cpu_hours", "api_calls", "peak_storage_gb"}
    assert all(m["archived_at"] is None for m in active)


def test_invoices_paginate_through_an_empty_page(
    shared_api: httpx.Client, shared_sandbox: Sandbox
) -> None:
    customer = shared_sandbox.scenario.role(
        "void"
    )  # voided, re-issued and previous month: 3 invoices
    pages = collect_pages(
        shared_api,
        "GET",
        f"/v1/customers/{customer}/invoices",
        params={"limit": 1, "sort": "date_asc"},
    )
    _assert_one_empty_page(pages)
    assert sorted(i["id"] for i in flatten(pages)) == sorted(
        shared_sandbox.scenario.invoice_ids[customer]
    )


def test_usage_paginates_with_cursor_in_query_and_body_resent(
    shared_api: httpx.Client, shared_sandbox: Sandbox
) -> None:
    body = usage_body()
    pages = collect_pages(shared_api, "POST", "/v1/usage", json=body)
    _assert_one_empty_page(pages)
    rows = flatten(pages)
    assert max(len(page) for page in pages) == 100
    assert len(rows) == 6 * 3 * 24  # customers x active metrics x hours
    assert len(
        {(r["customer_id"], r["billable_metric_id"], r["start_timestamp"]) for r in rows}
    ) == len(rows)
    posts = shared_sandbox.metronome_log.find("POST", "/v1/usage")
    assert [("next_page=" in p.query) for p in posts] == [False] + [True] * (len(pages) - 1)
    assert all(p.body == body for p in posts)


def test_empty_page_toggles(shared_api: httpx.Client, shared_sandbox: Sandbox) -> None:
    shared_sandbox.metronome_faults.empty_second_page = False
    pages = collect_pages(shared_api, "GET", "/v1/customers", params={"limit": 2})
    assert [len(p) for p in pages] == [2, 2, 2]
    shared_sandbox.metronome_faults.empty_pages = True
    pages = collect_pages(shared_api, "GET", "/v1/customers", params={"limit": 4})
    assert [len(p) for p in pages] == [0, 4, 0, 2]


def test_single_page_listing_has_null_cursor(shared_api: httpx.Client) -> None:
    body = shared_api.get("/v1/customers", params={"limit": 100}).json()
    assert len(body["data"]) == 6 and body["next_page"] is None


def test_customer_filters(api: httpx.Client, sandbox: Sandbox) -> None:
    ids = sandbox.scenario.customer_ids
    comma = api.get("/v1/customers", params={"customer_ids": f"{ids[0]},{ids[2]}"}).json()["data"]
    repeated = api.get(
        "/v1/customers", params=[("customer_ids", ids[0]), ("customer_ids", ids[2])]
    ).json()["data"]
    assert [c["id"] for c in comma] == [c["id"] for c in repeated] == [ids[0], ids[2]]
    sandbox.metronome.archive_customer(ids[1])
    active = flatten(collect_pages(api, "GET", "/v1/customers"))
    archived = flatten(collect_pages(api, "GET", "/v1/customers", params={"only_archived": "true"}))
    assert ids[1] not in {c["id"] for c in active} and [c["id"] for c in archived] == [ids[1]]
    assert archived[0]["archived_at"].endswith("Z")


def test_customer_detail_shape(shared_api: httpx.Client, shared_sandbox: Sandbox) -> None:
    customer_id = shared_sandbox.scenario.customer_ids[0]
    data = shared_api.get(f"/v1/customers/{customer_id}").json()["data"]
    assert set(data) == {
        "id",
        "external_id",
        "ingest_aliases",
        "name",
        "customer_config",
        "custom_fields",
        "created_at",
        "updated_at",
        "archived_at",
    }
    assert data["id"] == customer_id and data["customer_config"] == {"salesforce_account_id": None}
    assert data["external_id"] == data["ingest_aliases"][0]


def test_metric_detail_and_customer_metrics(
    shared_api: httpx.Client, shared_sandbox: Sandbox
) -> None:
    legacy = shared_sandbox.scenario.metric_ids["legacy_jobs"]
    data = shared_api.get(f"/v1/billable-metrics/{legacy}").json()["data"]
    assert data["archived_at"] is not None and "unit_price_cents" not in data
    assert set(data) == {
        "id",
        "name",
        "aggregation_type",
        "aggregation_key",
        "event_type_filter",
        "property_filters",
        "group_keys",
        "custom_fields",
        "archived_at",
    }
    customer = shared_sandbox.scenario.customer_ids[0]
    metrics = shared_api.get(f"/v1/customers/{customer}/billable-metrics").json()["data"]
    by_name = {m["name"]: m for m in metrics}
    assert set(by_name) == {"cpu_hours", "api_calls", "peak_storage_gb"}
    assert by_name["peak_storage_gb"]["aggregate"] == "max"
    assert by_name["peak_storage_gb"]["aggregate_keys"] == ["storage_gb"]
