"""Usage over real HTTP: hourly/daily/none windows, nulls, visibility, late usage, groups, ingest;
and the cursor pagination rules as a property."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from metronome_suger.sandbox.faults import Faults
from metronome_suger.sandbox.paging import paginate
from metronome_suger.sandbox.server import Sandbox
from metronome_suger.sandbox.wire import parse_rfc3339
from metronome_suger_tests.test_sandbox.conftest import NOW, collect_pages, flatten
from metronome_suger_tests.test_sandbox.test_metronome_app import usage_body

HOUR = timedelta(hours=1)
DAY_START = NOW.replace(hour=0, minute=0)  # 2026-11-25T00:00Z


# -------------------------------------------------------------------------------------- usage
@pytest.fixture
def hand_built(empty_sandbox: Sandbox) -> dict[str, str]:
    """One customer, a SUM and a MAX metric, explicit hours on 2026-11-25."""
    state = empty_sandbox.metronome
    customer = state.add_customer("Hand Built", ingest_aliases=["hb@example.com"])["id"]
    total = state.add_billable_metric("total", aggregation_type="SUM", aggregation_key="n")["id"]
    peak = state.add_billable_metric("peak", aggregation_type="MAX", aggregation_key="gb")["id"]
    explicit: list[tuple[int, Decimal | None]] = [
        (1, Decimal(3)),
        (2, Decimal("4.5")),
        (5, None),
        (6, None),
    ]
    for hour, value in explicit:
        state.set_usage(customer, total, DAY_START + hour * HOUR, value)
    for hour, peak_value in [(1, 7), (2, 9), (3, 2)]:
        state.set_usage(customer, peak, DAY_START + hour * HOUR, peak_value)
    return {"customer": customer, "total": total, "peak": peak}


def _values(client: httpx.Client, **body: Any) -> dict[str, Any]:
    rows = flatten(collect_pages(client, "POST", "/v1/usage", json=usage_body(**body)))
    return {r["start_timestamp"]: r["value"] for r in rows}


def test_hourly_values_nulls_and_timestamp_format(
    empty_api: httpx.Client, hand_built: dict[str, str]
) -> None:
    values = _values(
        empty_api,
        customer_ids=[hand_built["customer"]],
        billable_metrics=[{"id": hand_built["total"]}],
        window_size="hour",
    )
    assert len(values) == 24
    assert values["2026-11-25T01:00:00Z"] == 3 and values["2026-11-25T02:00:00Z"] == 4.5
    assert values["2026-11-25T05:00:00Z"] is None  # explicit null
    assert values["2026-11-25T04:00:00Z"] == 0  # no data: 0
    assert values["2026-11-25T20:00:00Z"] == 0  # not closed yet (NOW is 13:30)


def test_day_and_none_windows_aggregate_by_type(
    empty_api: httpx.Client, empty_sandbox: Sandbox, hand_built: dict[str, str]
) -> None:
    common = {"customer_ids": [hand_built["customer"]], "starting_on": "2026-11-24T00:00:00+00:00"}
    day_sum = _values(
        empty_api, billable_metrics=[{"id": hand_built["total"]}], window_size="Day", **common
    )
    day_max = _values(
        empty_api, billable_metrics=[{"id": hand_built["peak"]}], window_size="DAY", **common
    )
    assert day_sum == {"2026-11-24T00:00:00Z": 0, "2026-11-25T00:00:00Z": 7.5}
    assert day_max == {"2026-11-24T00:00:00Z": 0, "2026-11-25T00:00:00Z": 9}
    for hour in range(24):  # a whole day of explicit nulls: NONE over it is null, not 0
        empty_sandbox.metronome.set_usage(
            hand_built["customer"], hand_built["total"], DAY_START - 24 * HOUR + hour * HOUR, None
        )
    only_nulls = _values(
        empty_api,
        billable_metrics=[{"id": hand_built["total"]}],
        window_size="none",
        customer_ids=[hand_built["customer"]],
        starting_on="2026-11-24T00:00:00.000Z",
        ending_before="2026-11-25T00:00:00Z",
    )
    assert only_nulls == {"2026-11-24T00:00:00Z": None}


def test_usage_becomes_visible_when_the_hour_closes_and_late_usage_overwrites(
    empty_api: httpx.Client, empty_sandbox: Sandbox, hand_built: dict[str, str]
) -> None:
    state, open_hour = empty_sandbox.metronome, DAY_START + 13 * HOUR
    state.set_usage(hand_built["customer"], hand_built["total"], open_hour, 11)
    select = {
        "customer_ids": [hand_built["customer"]],
        "billable_metrics": [{"id": hand_built["total"]}],
    }
    assert _values(empty_api, **select)["2026-11-25T13:00:00Z"] == 0
    empty_sandbox.clock.advance(timedelta(minutes=30))  # 14:00: the 13:00 hour has closed
    assert _values(empty_api, **select)["2026-11-25T13:00:00Z"] == 11
    state.set_usage(hand_built["customer"], hand_built["total"], open_hour, 12)
    assert _values(empty_api, **select)["2026-11-25T13:00:00Z"] == 12


def test_scenario_usage_matches_state(shared_api: httpx.Client, shared_sandbox: Sandbox) -> None:
    customer = shared_sandbox.scenario.role("null_usage")
    metric = shared_sandbox.scenario.metric_ids["cpu_hours"]
    rows = flatten(
        collect_pages(
            shared_api,
            "POST",
            "/v1/usage",
            json=usage_body(
                customer_ids=[customer],
                billable_metrics=[{"id": metric}],
                starting_on="2026-11-20T00:00:00Z",
            ),
        )
    )
    closed = [r for r in rows if r["end_timestamp"] <= "2026-11-25T13:00:00Z"]
    assert len(closed) == 5 * 24 + 13
    for row in closed:
        hour = shared_sandbox.metronome.usage_value(
            customer, metric, _parse(row["start_timestamp"])
        )
        assert row["value"] == (None if hour is None else float(hour))
    assert any(r["value"] is None for r in closed) and any(r["value"] == 0 for r in closed)


def _parse(text: str) -> datetime:
    return parse_rfc3339(text)


def test_usage_groups_minimal(shared_api: httpx.Client, shared_sandbox: Sandbox) -> None:
    customer, metric = (
        shared_sandbox.scenario.customer_ids[1],
        shared_sandbox.scenario.metric_ids["api_calls"],
    )
    body = {
        "customer_id": customer,
        "billable_metric_id": metric,
        "window_size": "DAY",
        "starting_on": "2026-11-20T00:00:00Z",
        "ending_before": "2026-11-25T00:00:00Z",
    }
    pages = collect_pages(shared_api, "POST", "/v1/usage/groups", params={"limit": 2}, json=body)
    rows = flatten(pages)
    assert [r["starting_on"] for r in rows] == [f"2026-11-{d}T00:00:00Z" for d in range(20, 25)]
    expected = shared_sandbox.metronome.window_value(
        customer, metric, _parse("2026-11-21T00:00:00Z"), _parse("2026-11-22T00:00:00Z")
    )
    assert rows[1]["value"] == int(expected or 0) and rows[1]["group_key"] is None


# ------------------------------------------------------------------------------------- ingest
def test_ingest_adds_events_dedups_and_resolves_aliases(
    empty_api: httpx.Client, empty_sandbox: Sandbox, hand_built: dict[str, str]
) -> None:
    state = empty_sandbox.metronome
    calls = state.add_billable_metric("calls", aggregation_type="COUNT", event_type="api_call")[
        "id"
    ]
    events = [
        {
            "transaction_id": "a",
            "customer_id": "hb@example.com",
            "event_type": "total",
            "timestamp": "2026-11-25T10:15:00Z",
            "properties": {"n": "2.5"},
        },
        {
            "transaction_id": "b",
            "customer_id": hand_built["customer"],
            "event_type": "total",
            "timestamp": "2026-11-25T10:45:00.000Z",
            "properties": {"n": 1},
        },
        {
            "transaction_id": "c",
            "customer_id": hand_built["customer"],
            "event_type": "api_call",
            "timestamp": "2026-11-25T10:50:00+00:00",
        },
        {
            "transaction_id": "d",
            "customer_id": "someone-else",
            "event_type": "api_call",
            "timestamp": "2026-11-25T10:50:00Z",
        },
    ]
    assert empty_api.post("/v1/ingest", json=events).status_code == 200
    assert (
        empty_api.post("/v1/ingest", json=events[:1]).status_code == 200
    )  # duplicate transaction_id
    hour = DAY_START + 10 * HOUR
    assert state.usage_value(hand_built["customer"], hand_built["total"], hour) == Decimal("3.5")
    assert state.usage_value(hand_built["customer"], calls, hour) == 1
    assert len(state.events()) == 4
    values = _values(
        empty_api,
        customer_ids=[hand_built["customer"]],
        billable_metrics=[{"id": hand_built["total"]}],
    )
    assert values["2026-11-25T10:00:00Z"] == 3.5


@pytest.mark.parametrize("path", ["/v1/usage", "/v1/usage/groups"])
@pytest.mark.parametrize("size", ["HOUR", "DAY", "NONE"])
@pytest.mark.parametrize(
    "bounds, problem",
    [
        (("2026-11-25T10:00:00Z", "2026-11-25T12:00:00Z"), "starting_on must be aligned to UTC midnight"),
        (("2026-11-25T00:00:00Z", "2026-11-25T12:00:00Z"), "ending_before must be aligned to UTC midnight"),
        (("2026-11-25T00:00:00+01:00", "2026-11-26T00:00:00+01:00"), "aligned to UTC midnight"),
        (("2026-11-25T00:00:00Z", "2026-11-25T00:00:00Z"), "at least one day after starting_on"),
        (("2026-11-25T00:00:00Z", "2026-11-24T00:00:00Z"), "at least one day after starting_on"),
    ],
)
def test_usage_bounds_are_utc_midnights_a_day_apart_always(
    empty_api: httpx.Client,
    hand_built: dict[str, str],
    path: str,
    size: str,
    bounds: tuple[str, str],
    problem: str,
) -> None:
    """SDK `usage_list_params.py` / `usage_list_with_groups_params.py`: "Must be aligned to UTC
    midnight" and "at least one day after `starting_on`", for every window size, with no switch to
    turn it off: the emulator's default is the real API's rule."""
    select: dict[str, Any] = (
        {"customer_id": hand_built["customer"], "billable_metric_id": hand_built["total"]}
        if path.endswith("groups")
        else {"customer_ids": [hand_built["customer"]]}
    )
    start, end = bounds
    response = empty_api.post(
        path, json={"starting_on": start, "ending_before": end, "window_size": size, **select}
    )
    assert response.status_code == 400
    assert set(response.json()) == {"message"} and problem in response.json()["message"]
    whole_day = {"starting_on": "2026-11-25T00:00:00Z", "ending_before": "2026-11-26T00:00:00Z"}
    assert empty_api.post(path, json={**whole_day, "window_size": size, **select}).status_code == 200


def test_group_by_reports_requested_groups_as_null(
    shared_api: httpx.Client, shared_sandbox: Sandbox
) -> None:
    metric = shared_sandbox.scenario.metric_ids["cpu_hours"]
    customer = shared_sandbox.scenario.customer_ids[1]
    select = {"id": metric, "group_by": {"key": "region", "values": ["us-east-1", "eu-west-1"]}}
    body = usage_body(customer_ids=[customer], billable_metrics=[select], window_size="NONE")
    [row] = flatten(collect_pages(shared_api, "POST", "/v1/usage", json=body))
    assert row["groups"] == {"us-east-1": None, "eu-west-1": None}
    assert row["value"] is not None and row["value"] > 0


def test_billing_provider_configurations_minimal(
    shared_api: httpx.Client, shared_sandbox: Sandbox
) -> None:
    customer = shared_sandbox.scenario.customer_ids[0]
    path = "/v1/getCustomerBillingProviderConfigurations"
    assert shared_api.post(path, json={"customer_id": customer}).json() == {"data": []}
    assert shared_api.post(path, json={"customer_id": "unknown"}).status_code == 404


@given(
    size=st.integers(min_value=0, max_value=40),
    limit=st.integers(min_value=1, max_value=12),
    second=st.booleans(),
    every=st.booleans(),
)
def test_paging_returns_every_item_once_with_the_promised_empty_pages(
    size: int, limit: int, second: bool, every: bool
) -> None:
    faults = Faults()
    faults.empty_second_page, faults.empty_pages = second, every
    items = list(range(size))
    pages: list[list[int]] = []
    cursor: str | None = None
    while True:
        page, cursor = paginate(items, kind="k", limit=limit, cursor=cursor, faults=faults)
        pages.append(list(page))
        if cursor is None:
            break
    assert [i for p in pages for i in p] == items
    data_pages = -(-size // limit) if size else 1
    empty = sum(1 for p in pages if not p)
    if every and size:
        expected_empty = data_pages
    elif second and size > limit:
        expected_empty = 1
    else:
        expected_empty = 0 if size else 1
    assert empty == expected_empty
    assert all(len(p) <= limit for p in pages)
