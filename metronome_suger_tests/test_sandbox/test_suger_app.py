"""The Suger emulator over real HTTP on 127.0.0.1: routes, errors, paging, the status lifecycle."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from metronome_suger.sandbox.clock import SandboxClock
from metronome_suger.sandbox.constants import ORG_ID, SUGER_API_KEY
from metronome_suger.sandbox.server import Sandbox
from metronome_suger.sandbox.suger_state import ALL_ZERO_MESSAGE, SugerError, SugerState

ORG = ORG_ID
KEY = SUGER_API_KEY
NOW = datetime(2026, 11, 25, 12, 30, tzinfo=timezone.utc)
DIMS = [{"key": "cpu_hour", "name": "CPU hours", "rate": 0.25},
        {"key": "usage_fee", "name": "Usage fee", "rate": 0.01}]


@dataclass
class Env:
    """An empty sandbox's Suger side, an authorized client, and one staged buyer + entitlement."""

    state: SugerState
    clock: SandboxClock
    url: str
    http: httpx.Client
    buyer: dict[str, Any]
    ent: dict[str, Any]

    def report(self, records: dict[str, Any], *, ent_id: str | None = None,
               **extra: Any) -> httpx.Response:
        ent_id = ent_id or self.ent["id"]
        body = {"organizationID": ORG, "entitlementID": ent_id, "records": records, **extra}
        return self.http.post(f"/org/{ORG}/entitlement/{ent_id}/usageRecordGroup", json=body)

    def patch_buyer(self, body: dict[str, Any]) -> httpx.Response:
        return self.http.patch(f"/org/{ORG}/buyer/{self.buyer['id']}", json=body)

    def list_groups(self, **params: Any) -> dict[str, Any]:
        response = self.http.get(f"/org/{ORG}/usageRecordGroup", params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def status_of(self, group_id: str) -> str:
        groups = self.list_groups(entitlementId=self.ent["id"])["usageRecordGroups"]
        return next(g["status"] for g in groups if g["id"] == group_id)


def error_text(response: httpx.Response) -> str:
    """A handler's error body: a JSON *string*, as the SDK declares 400/404/409/500
    (``suger_sdk_python/api/metering_api.py``: ``'400': "str"``), never an object."""
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, str), f"error body is not a JSON string: {response.text}"
    return body


@pytest.fixture
def env() -> Iterator[Env]:
    with Sandbox(customers=0, now=NOW) as sandbox:
        state = sandbox.suger
        buyer = state.add_buyer("Acme", partner="AWS", metronome_customer_id="cust-acme")
        ent = state.add_entitlement(buyer["id"], partner="AWS", dimensions=DIMS,
                                    product_id="prod-1")
        headers = {"Authorization": f"Key {KEY}"}
        with httpx.Client(base_url=sandbox.suger_url, headers=headers, timeout=10) as http:
            yield Env(state, sandbox.clock, sandbox.suger_url, http, buyer, ent)


# -- auth, org, routing -------------------------------------------------------------------------
@pytest.mark.parametrize("header", [None, "Key wrong", f"Bearer {KEY}", KEY])
def test_bad_or_missing_api_key_is_401_json(env: Env, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = httpx.get(f"{env.url}/org/{ORG}/buyer", headers=headers)
    assert response.status_code == 401
    assert "message" in response.json()


def test_other_org_is_403_with_message(env: Env) -> None:
    response = env.http.get("/org/org-other/entitlement")
    assert response.status_code == 403
    assert "org-other" in response.json()["message"]


def test_unknown_route_is_404_json(env: Env) -> None:
    response = env.http.get(f"/org/{ORG}/nothingHere")
    assert response.status_code == 404
    assert response.json() == {"message": "Not Found"}


# -- buyers ---------------------------------------------------------------------------------------
def test_buyers_list_is_plain_array_filtered_and_paged(env: Env) -> None:
    for i in range(4):
        env.state.add_buyer(f"Azure {i}", partner="AZURE", id=f"az-{i}")
    everyone = env.http.get(f"/org/{ORG}/buyer").json()
    assert isinstance(everyone, list) and len(everyone) == 5
    azure = env.http.get(f"/org/{ORG}/buyer", params={"partner": "AZURE"}).json()
    assert [b["id"] for b in azure] == ["az-0", "az-1", "az-2", "az-3"]
    params: dict[str, Any] = {"partner": "AZURE", "limit": 3, "offset": 2}
    page = env.http.get(f"/org/{ORG}/buyer", params=params).json()
    assert [b["id"] for b in page] == ["az-2", "az-3"]
    assert env.http.get(f"/org/{ORG}/buyer", params={"limit": 1001}).status_code == 400
    assert env.http.get(f"/org/{ORG}/buyer", params={"partner": "IBM"}).status_code == 400


def test_get_buyer_and_unknown_buyer(env: Env) -> None:
    buyer = env.http.get(f"/org/{ORG}/buyer/{env.buyer['id']}").json()
    assert buyer["info"]["metronomeCustomerId"] == "cust-acme"
    assert buyer["organizationID"] == ORG and buyer["creationTime"] == "2026-11-25T12:30:00Z"
    missing = env.http.get(f"/org/{ORG}/buyer/nope")
    assert missing.status_code == 404 and "nope" in error_text(missing)


def test_patch_buyer_links_metronome_customer_and_keeps_other_fields(env: Env) -> None:
    env.state.update_buyer(env.buyer["id"], {"orbCustomerId": "orb-1"})
    env.clock.advance(timedelta(minutes=5))
    response = env.patch_buyer({"metronomeCustomerId": "cust-new"})
    assert response.status_code == 200
    buyer = response.json()
    assert buyer["info"] == {"metronomeCustomerId": "cust-new", "orbCustomerId": "orb-1"}
    assert buyer["name"] == "Acme" and buyer["lastUpdateTime"] == "2026-11-25T12:35:00Z"
    unchanged = env.patch_buyer({"name": None}).json()
    assert unchanged["name"] == "Acme" and unchanged["info"]["metronomeCustomerId"] == "cust-new"
    cleared = env.patch_buyer({"metronomeCustomerId": ""}).json()
    assert "metronomeCustomerId" not in cleared["info"]


def test_patch_buyer_errors(env: Env) -> None:
    assert env.http.patch(f"/org/{ORG}/buyer/nope", json={"name": "x"}).status_code == 404
    bad_type = env.patch_buyer({"metronomeCustomerId": 7})
    assert bad_type.status_code == 400 and "metronomeCustomerId" in error_text(bad_type)
    malformed = env.http.patch(f"/org/{ORG}/buyer/{env.buyer['id']}", content=b"{not json")
    assert malformed.status_code == 400 and "JSON" in error_text(malformed)


# -- entitlements ---------------------------------------------------------------------------------
def test_entitlement_shape(env: Env) -> None:
    ent = env.http.get(f"/org/{ORG}/entitlement/{env.ent['id']}").json()
    assert ent["buyerID"] == env.buyer["id"]
    assert ent["partner"] == "AWS" and ent["status"] == "ACTIVE"
    assert ent["productID"] == "prod-1" and ent["organizationID"] == ORG and ent["endTime"] is None
    assert ent["startTime"] == "2026-08-27T00:00:00Z"  # default: 90 days before the clock's day
    assert ent["info"]["dimensions"] == [{"key": "cpu_hour", "name": "CPU hours", "rate": 0.25},
                                         {"key": "usage_fee", "name": "Usage fee", "rate": 0.01}]
    assert env.http.get(f"/org/{ORG}/entitlement/nope").status_code == 404


def test_entitlements_filtered_and_paged(env: Env) -> None:
    gcp = env.state.add_buyer("G", partner="GCP", id="gcp-buyer")
    for i in range(3):
        env.state.add_entitlement(gcp["id"], partner="GCP", dimensions=DIMS, id=f"g-{i}",
                                  product_id="prod-g")
    by_buyer = env.http.get(f"/org/{ORG}/entitlement", params={"buyerId": "gcp-buyer"}).json()
    assert [e["id"] for e in by_buyer] == ["g-0", "g-1", "g-2"]
    by_partner = env.http.get(f"/org/{ORG}/entitlement", params={"partner": "AWS"}).json()
    assert [e["id"] for e in by_partner] == [env.ent["id"]]
    params: dict[str, Any] = {"productId": "prod-g", "offset": 1, "limit": 1}
    by_product = env.http.get(f"/org/{ORG}/entitlement", params=params).json()
    assert [e["id"] for e in by_product] == ["g-1"]
    assert len(env.http.get(f"/org/{ORG}/entitlement").json()) == 4


def test_terms_and_renewal_switch_entitlement_term_at_renewal_time(env: Env) -> None:
    start, end = NOW - timedelta(days=10), NOW + timedelta(days=20)
    ent = env.state.add_entitlement(env.buyer["id"], partner="AWS", dimensions=DIMS, id="ren",
                                    start_time=start, end_time=end)
    terms = env.http.get(f"/org/{ORG}/entitlement/ren/entitlementTerm").json()
    assert [(t["info"]["type"], t["entitlementID"]) for t in terms] == [("Signup", "ren")]
    assert ent["entitlementTermID"] == terms[0]["id"]
    renewal = env.state.renew_entitlement("ren", at=end)
    before = env.http.get(f"/org/{ORG}/entitlement/ren").json()
    assert before["entitlementTermID"] == terms[0]["id"]
    assert before["endTime"] == "2026-12-15T12:30:00Z"
    env.clock.set(end + timedelta(seconds=1))
    after = env.http.get(f"/org/{ORG}/entitlement/ren").json()
    assert after["entitlementTermID"] == renewal["id"] != terms[0]["id"]
    assert after["endTime"] == "2027-01-14T12:30:00Z"  # same 30-day length as the signup term
    terms = env.http.get(f"/org/{ORG}/entitlement/ren/entitlementTerm").json()
    assert [t["info"]["type"] for t in terms] == ["Signup", "AutoRenew"]
    one = env.http.get(f"/org/{ORG}/entitlement/ren/entitlementTerm/{renewal['id']}")
    assert one.status_code == 200 and one.json()["startTime"] == "2026-12-15T12:30:00Z"
    assert env.http.get(f"/org/{ORG}/entitlement/ren/entitlementTerm/nope").status_code == 404


def test_product_dimensions(env: Env) -> None:
    dims = env.http.get(f"/org/{ORG}/product/prod-1/dimension").json()
    assert [d["key"] for d in dims] == ["cpu_hour", "usage_fee"] and dims[0]["rate"] == 0.25
    missing = env.http.get(f"/org/{ORG}/product/nope/dimension")
    assert missing.status_code == 404 and error_text(missing) == "product nope not found"


def _many_dims(count: int) -> list[dict[str, Any]]:
    return [{"key": f"dim_{n:02d}", "name": f"Dimension {n}", "rate": f"0.{n:02d}"}
            for n in range(1, count + 1)]


def test_an_entitlement_keeps_50_dimensions_and_flags_the_rest_on_its_product(env: Env) -> None:
    """``EntitlementInfo.dimensions``: "The max size of dimensions is 50. The oversized dimensions
    won't be saved in the EntitlementInfo" (+ ``dimensionsOversized``); the product lists them all."""
    env.state.add_entitlement(env.buyer["id"], partner="AWS", dimensions=_many_dims(60), id="big",
                              product_id="prod-big")
    ent = env.http.get(f"/org/{ORG}/entitlement/big").json()
    assert len(ent["info"]["dimensions"]) == 50 and ent["info"]["dimensionsOversized"] is True
    assert ent["info"]["dimensions"][-1]["key"] == "dim_50"
    assert "dimensionsOversized" not in env.http.get(f"/org/{ORG}/entitlement/{env.ent['id']}").json()["info"]
    dims = env.http.get(f"/org/{ORG}/product/prod-big/dimension").json()
    assert [d["key"] for d in dims] == [f"dim_{n:02d}" for n in range(1, 61)]
    assert dims[54] == {"key": "dim_55", "name": "Dimension 55", "rate": 0.55}
    # Suger validates a report against all of them, not only the 50 it shows
    assert env.report({"dim_55": 2}, ent_id="big").status_code == 200


def test_a_failing_product_dimension_listing_answers_its_status(env: Env) -> None:
    env.state.fail_product_dimensions("prod-1", status=500, message="db timeout", times=2)
    for _ in range(2):
        failed = env.http.get(f"/org/{ORG}/product/prod-1/dimension")
        assert (failed.status_code, error_text(failed)) == (500, "db timeout")
    assert env.http.get(f"/org/{ORG}/product/prod-1/dimension").status_code == 200


# -- reporting ------------------------------------------------------------------------------------
def test_report_returns_created_group_with_meta_info(env: Env) -> None:
    response = env.report({"cpu_hour": 1.5, "usage_fee": 0}, id="g-1",
                          timestamp="2026-11-25T11:00:00Z")
    assert response.status_code == 200, response.text
    group = response.json()
    assert group == {
        "id": "g-1", "organizationID": ORG, "entitlementID": env.ent["id"],
        "buyerID": env.buyer["id"],
        "partner": "AWS", "records": {"cpu_hour": 1.5, "usage_fee": 0}, "status": "CREATED",
        "creationTime": "2026-11-25T12:30:00Z", "lastUpdateTime": "2026-11-25T12:30:00Z",
        "reportedTime": None, "serialID": 1, "usageRecordReportID": None,
        "metaInfo": {"originRecords": {"cpu_hour": 1.5, "usage_fee": 0},
                     "timestamp": "2026-11-25T11:00:00Z", "source": "API"},
    }
    assert env.state.groups() == [group]


def test_report_without_id_or_timestamp_generates_both(env: Env) -> None:
    first = env.report({"CPU hours": 2}).json()  # dimension *name* is accepted as a key too
    second = env.report({"cpu_hour": 3}, timestamp="2026-11-25T10:00:00+00:00").json()
    assert uuid.UUID(first["id"]) and first["id"] != second["id"]
    assert first["metaInfo"]["timestamp"] == "2026-11-25T12:30:00Z"
    assert second["metaInfo"]["timestamp"] == "2026-11-25T10:00:00Z"
    assert (first["serialID"], second["serialID"]) == (1, 2)


def test_repeated_id_is_409_whatever_the_body(env: Env) -> None:
    assert env.report({"cpu_hour": 1}, id="dup").status_code == 200
    url = f"/org/{ORG}/entitlement/{env.ent['id']}/usageRecordGroup"
    again = env.http.post(url, json={"id": "dup"})
    assert again.status_code == 409 and "dup" in error_text(again)
    assert len(env.state.groups()) == 1


def test_concurrent_reports_of_one_id_store_exactly_one_group(env: Env) -> None:
    body = {"id": "race", "organizationID": ORG, "entitlementID": env.ent["id"],
            "records": {"cpu_hour": 1}}
    url = f"{env.url}/org/{ORG}/entitlement/{env.ent['id']}/usageRecordGroup"
    headers = {"Authorization": f"Key {KEY}"}
    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(lambda _: httpx.post(url, json=body, headers=headers).status_code,
                              range(8)))
    assert sorted(codes) == [200] + [409] * 7
    assert [g["id"] for g in env.state.groups()] == ["race"]


@pytest.mark.parametrize(("records", "needle"), [
    ({"cpu_hour": 0, "usage_fee": 0.0}, ALL_ZERO_MESSAGE),
    ({}, ALL_ZERO_MESSAGE),
    ({"cpu_hour": -1}, "negative"),
    ({"cpu_hour": 1, "gpu_hour": 2}, "gpu_hour"),
    ({"cpu_hour": "1"}, "number"),
    ({"cpu_hour": True}, "number"),
])
def test_invalid_records_are_400(env: Env, records: dict[str, Any], needle: str) -> None:
    response = env.report(records)
    assert response.status_code == 400
    assert needle in error_text(response)
    assert env.state.groups() == []


def test_all_zero_message_is_exact(env: Env) -> None:
    response = env.report({"cpu_hour": 0})
    assert response.json() == "all the quantity of usage records are zero"  # a JSON string body


@pytest.mark.parametrize("status", ["CANCELLED", "SUSPENDED", "PENDING_START", "DELETED"])
def test_inactive_entitlement_is_400(env: Env, status: str) -> None:
    env.state.set_entitlement_status(env.ent["id"], status)  # CANCELLED without an end time
    response = env.report({"cpu_hour": 1}, timestamp="2026-11-25T09:00:00Z")
    assert response.status_code == 400 and status in error_text(response)


def test_cancelled_entitlement_takes_usage_generated_before_its_end_time(env: Env) -> None:
    """The marketplaces take usage generated before a cancellation (AWS within 1 h of
    deprovisioning, Azure hours before it, GCP timestamps before it), never after."""
    cancelled = env.state.cancel_entitlement(env.ent["id"], datetime(2026, 11, 25, 10, 20, tzinfo=timezone.utc))
    assert (cancelled["status"], cancelled["endTime"]) == ("CANCELLED", "2026-11-25T10:20:00Z")
    listed = env.http.get(f"/org/{ORG}/entitlement/{env.ent['id']}").json()
    assert (listed["status"], listed["endTime"], listed["lastUpdateTime"]) == (
        "CANCELLED", "2026-11-25T10:20:00Z", "2026-11-25T12:30:00Z")
    assert env.report({"cpu_hour": 1}, timestamp="2026-11-25T09:00:00Z").status_code == 200
    assert env.report({"cpu_hour": 1}, timestamp="2026-11-25T10:19:59Z").status_code == 200
    for late in ("2026-11-25T10:20:00Z", "2026-11-25T11:00:00Z"):
        refused = env.report({"cpu_hour": 1}, timestamp=late)
        assert refused.status_code == 400
        assert error_text(refused) == (f"entitlement {env.ent['id']} is CANCELLED, its end time is "
                                       f"2026-11-25T10:20:00Z: usage at {late} is not before it")
    assert env.report({"cpu_hour": 1}).status_code == 400  # no timestamp: now, after the end


def test_cancellation_drops_the_terms_that_had_not_started(env: Env) -> None:
    year_end = datetime(2027, 1, 1, tzinfo=timezone.utc)
    env.state.add_entitlement(env.buyer["id"], partner="AWS", dimensions=DIMS, id="renewing",
                              end_time=year_end)
    env.state.renew_entitlement("renewing", at=year_end)
    env.state.cancel_entitlement("renewing", NOW + timedelta(days=1))
    terms = env.http.get(f"/org/{ORG}/entitlement/renewing/entitlementTerm").json()
    assert [(t["info"]["type"], t["endTime"]) for t in terms] == [("Signup", "2026-11-26T12:30:00Z")]


def test_pending_cancel_entitlement_still_accepts_usage(env: Env) -> None:
    env.state.set_entitlement_status(env.ent["id"], "PENDING_CANCEL")
    assert env.report({"cpu_hour": 1}).status_code == 200


@pytest.mark.parametrize(("extra", "needle"), [
    ({"id": "x" * 37}, "36"),
    ({"organizationID": "org-other"}, "organizationID"),
    ({"entitlementID": "someone-else"}, "entitlementID"),
    ({"timestamp": "yesterday"}, "timestamp"),
    ({"timestamp": "2026-11-25T10:00:00"}, "timestamp"),  # RFC 3339 needs an offset
])
def test_bad_report_fields_are_400(env: Env, extra: dict[str, Any], needle: str) -> None:
    response = env.report({"cpu_hour": 1}, **extra)
    assert response.status_code == 400 and needle in error_text(response)


def test_report_unknown_entitlement_is_404_and_malformed_json_400(env: Env) -> None:
    assert env.report({"cpu_hour": 1}, ent_id="nope").status_code == 404
    bad = env.http.post(f"/org/{ORG}/entitlement/{env.ent['id']}/usageRecordGroup", content=b"[1,")
    assert bad.status_code == 400 and error_text(bad)
    nan = env.http.post(f"/org/{ORG}/entitlement/{env.ent['id']}/usageRecordGroup",
                        content=b'{"organizationID":"org-test","records":{"cpu_hour":NaN}}')
    assert nan.status_code == 400


def test_reject_next_answers_configured_status_then_recovers(env: Env) -> None:
    env.state.reject_next(env.ent["id"], "marketplace says no", status=503, times=2)
    for _ in range(2):
        response = env.report({"cpu_hour": 1}, id="r-1")
        assert (response.status_code, response.json()) == (503, "marketplace says no")
    assert env.report({"cpu_hour": 1}, id="r-1").status_code == 200


# -- batch ----------------------------------------------------------------------------------------
def test_batch_create_stores_all_or_nothing(env: Env) -> None:
    good = {"entitlementID": env.ent["id"], "records": {"cpu_hour": 1},
            "timestamp": "2026-11-25T11:00:00Z"}
    bad = {"entitlementID": env.ent["id"], "records": {"cpu_hour": 0}}
    rejected = env.http.post(f"/org/{ORG}/batchCreateUsageRecordGroups", json=[good, bad])
    assert rejected.status_code == 400 and error_text(rejected) == ALL_ZERO_MESSAGE
    assert env.state.groups() == []
    unknown = env.http.post(f"/org/{ORG}/batchCreateUsageRecordGroups",
                            json=[{"entitlementID": "nope", "records": {"a": 1}}])
    assert unknown.status_code == 400 and "nope" in error_text(unknown)
    created = env.http.post(f"/org/{ORG}/batchCreateUsageRecordGroups", json=[good, good])
    assert created.status_code == 200
    groups = created.json()
    assert [g["status"] for g in groups] == ["CREATED", "CREATED"]
    assert groups[0]["id"] != groups[1]["id"]
    assert groups[0]["metaInfo"]["timestamp"] == "2026-11-25T11:00:00Z"
    assert len(env.state.groups()) == 2


def test_batch_create_honours_reject_next(env: Env) -> None:
    env.state.reject_next(env.ent["id"], "boom", status=500)
    item = {"entitlementID": env.ent["id"], "records": {"cpu_hour": 1}}
    response = env.http.post(f"/org/{ORG}/batchCreateUsageRecordGroups", json=[item])
    assert (response.status_code, response.json()) == (500, "boom")
    assert env.http.post(f"/org/{ORG}/batchCreateUsageRecordGroups", json=[item]).status_code == 200


def test_batch_validate_answers_json_strings_and_stores_nothing(env: Env) -> None:
    """200 is the JSON string "" ("Empty string if validation is successful"), 400 the problem as a
    JSON string: the SDK types both as ``str``."""
    url = f"/org/{ORG}/batchValidateUsageRecordGroups"
    ok = env.http.post(url, json=[{"entitlementID": env.ent["id"], "records": {"cpu_hour": 1}}])
    assert (ok.status_code, ok.headers["content-type"], ok.text) == (200, "application/json", '""')
    bad = env.http.post(url, json=[{"entitlementID": env.ent["id"], "records": {"disk": 1}}])
    assert bad.status_code == 400 and "disk" in error_text(bad)
    assert env.http.post(url, json={"not": "a list"}).status_code == 400
    assert env.state.groups() == []


# -- listing groups --------------------------------------------------------------------------------
def test_list_groups_filters(env: Env) -> None:
    other_buyer = env.state.add_buyer("Other", partner="AZURE", id="b2")
    env.state.add_entitlement("b2", partner="AZURE", dimensions=DIMS, id="e2", product_id="prod-2")
    env.report({"cpu_hour": 1}, id="a")
    env.report({"cpu_hour": 1}, id="b", ent_id="e2")
    ids = lambda **p: [g["id"] for g in env.list_groups(**p)["usageRecordGroups"]]  # noqa: E731
    assert ids() == ["a", "b"]
    assert ids(entitlementId="e2") == ids(buyerId=other_buyer["id"]) == ["b"]
    assert ids(partner="AZURE") == ["b"]
    assert ids(productId="prod-1") == ["a"]
    assert ids(status="REPORTED") == [] and ids(source="API") == ["a", "b"]
    theirs = env.state.add_foreign_group(env.ent["id"], {"cpu_hour": 2}, source="METRONOME")
    assert ids(source="METRONOME") == [theirs["id"]] and ids(source="API") == ["a", "b"]
    assert ids() == ["a", "b", theirs["id"]]  # no source: every source
    assert theirs["metaInfo"]["source"] == "METRONOME" and theirs["status"] == "CREATED"
    bad_source = env.http.get(f"/org/{ORG}/usageRecordGroup", params={"source": "SALESFORCE"})
    assert bad_source.status_code == 400 and "SALESFORCE" in error_text(bad_source)
    two = env.http.get(f"/org/{ORG}/usageRecordGroup", params={"partner": "AWS", "buyerId": "b2"})
    assert two.status_code == 400 and "only one" in error_text(two)
    for params in ({"status": "DONE"}, {"startDate": "2026/11/01"}, {"limit": 0}, {"offset": "x"},
                   {"startDate": "2026-11-26", "endDate": "2026-11-25"}):
        assert env.http.get(f"/org/{ORG}/usageRecordGroup", params=params).status_code == 400


def test_list_groups_date_window_defaults_to_last_30_days(env: Env) -> None:
    env.report({"cpu_hour": 1}, id="old")
    env.clock.advance(timedelta(days=31))
    env.report({"cpu_hour": 1}, id="new")
    assert [g["id"] for g in env.list_groups()["usageRecordGroups"]] == ["new"]
    explicit = env.list_groups(startDate="2026-11-25", endDate="2026-11-25")["usageRecordGroups"]
    assert [g["id"] for g in explicit] == ["old"]


def test_list_groups_offset_paging(env: Env) -> None:
    for i in range(5):
        env.report({"cpu_hour": i + 1}, id=f"p{i}")
    seen, offset = [], 0
    while True:
        page = env.list_groups(limit=2, offset=offset)
        seen += [g["id"] for g in page["usageRecordGroups"]]
        if page["nextOffset"] == 0:
            break
        offset = page["nextOffset"]
    assert seen == ["p0", "p1", "p2", "p3", "p4"]
    assert env.list_groups(limit=2, offset=2)["nextOffset"] == 4
    assert env.list_groups(limit=5)["nextOffset"] == 0


# -- lifecycle ------------------------------------------------------------------------------------
def test_explicit_forwarder_reports_created_groups(env: Env) -> None:
    env.report({"cpu_hour": 1}, id="f1")
    env.report({"cpu_hour": 2}, id="f2")
    assert sorted(env.state.run_forwarder()) == ["f1", "f2"]
    groups = {g["id"]: g for g in env.list_groups()["usageRecordGroups"]}
    assert {g["status"] for g in groups.values()} == {"REPORTED"}
    assert groups["f1"]["reportedTime"] == "2026-11-25T12:30:00Z"
    assert groups["f1"]["usageRecordReportID"] == groups["f2"]["usageRecordReportID"]  # one report
    assert env.state.run_forwarder() == []


def test_hourly_forwarder_runs_when_the_clock_passes_the_hour(env: Env) -> None:
    env.report({"cpu_hour": 1}, id="h1")
    env.clock.set(datetime(2026, 11, 25, 12, 59, 59, tzinfo=timezone.utc))
    assert env.status_of("h1") == "CREATED"
    env.clock.set(datetime(2026, 11, 25, 13, 0, tzinfo=timezone.utc))
    group = env.list_groups()["usageRecordGroups"][0]
    assert group["status"] == "REPORTED" and group["reportedTime"] == "2026-11-25T13:00:00Z"
    assert group["usageRecordReportID"]


def test_failed_report_retry_then_reported(env: Env) -> None:
    env.state.fail_next_report(env.ent["id"])
    env.report({"cpu_hour": 1}, id="x1")
    env.clock.advance(timedelta(hours=1))
    failed = env.list_groups()["usageRecordGroups"][0]
    assert failed["status"] == "REPORT_FAILED" and failed["reportedTime"] is None
    retried = env.http.post(f"/org/{ORG}/usageRecordGroup/x1/retry")
    assert retried.status_code == 200 and retried.json()["status"] == "CREATED"
    assert env.status_of("x1") == "CREATED"  # waits for the next hourly run
    env.clock.advance(timedelta(hours=1))
    assert env.status_of("x1") == "REPORTED"
    again = env.http.post(f"/org/{ORG}/usageRecordGroup/x1/retry")
    assert again.status_code == 400 and "REPORT_FAILED" in error_text(again)
    assert env.http.post(f"/org/{ORG}/usageRecordGroup/nope/retry").status_code == 404


def test_fail_next_report_fails_one_report_per_entitlement(env: Env) -> None:
    env.state.add_entitlement(env.buyer["id"], partner="AWS", dimensions=DIMS, id="healthy")
    env.state.fail_next_report(env.ent["id"])
    env.report({"cpu_hour": 1}, id="s1")
    env.report({"cpu_hour": 1}, id="s2")
    env.report({"cpu_hour": 1}, id="s3", ent_id="healthy")
    env.state.run_forwarder()
    statuses = {g["id"]: g["status"] for g in env.state.groups()}
    assert statuses == {"s1": "REPORT_FAILED", "s2": "REPORT_FAILED", "s3": "REPORTED"}
    env.report({"cpu_hour": 1}, id="s4")
    env.state.run_forwarder()
    assert env.state.group("s4")["status"] == "REPORTED"


def test_delete_only_created_or_invalid(env: Env) -> None:
    env.report({"cpu_hour": 1}, id="d1")
    env.report({"cpu_hour": 1}, id="d2")
    env.report({"cpu_hour": 1}, id="d3")
    env.state.set_group_status("d3", "INVALID")
    url = f"/org/{ORG}/usageRecordGroup/d1"
    wrong_day = env.http.delete(url, params={"creationDate": "2026-11-24"})
    assert wrong_day.status_code == 404
    deleted = env.http.delete(url, params={"creationDate": "2026-11-25"})
    assert deleted.status_code == 200 and deleted.json()["status"] == "DELETED"
    assert env.http.delete(f"/org/{ORG}/usageRecordGroup/d3").json()["status"] == "DELETED"
    # listed with the others: "default no filter by status if not provided"
    assert [(g["id"], g["status"]) for g in env.list_groups()["usageRecordGroups"]] == [
        ("d1", "DELETED"), ("d2", "CREATED"), ("d3", "DELETED")]
    assert [g["id"] for g in env.list_groups(status="DELETED")["usageRecordGroups"]] == ["d1", "d3"]
    assert [g["id"] for g in env.list_groups(status="CREATED")["usageRecordGroups"]] == ["d2"]
    env.state.run_forwarder()
    reported = env.http.delete(f"/org/{ORG}/usageRecordGroup/d2")
    assert reported.status_code == 400 and "REPORTED" in error_text(reported)
    assert env.http.delete(f"/org/{ORG}/usageRecordGroup/nope").status_code == 404
    assert env.report({"cpu_hour": 1}, id="d1").status_code == 409  # the id stays taken


# -- metering config ------------------------------------------------------------------------------
def test_metering_config_default_patch_and_validation(env: Env) -> None:
    url = f"/org/{ORG}/usageMeteringConfigInfo"
    assert env.http.get(url).json() == {"partnerUsageMeteringConfigs": []}
    config = {"partnerUsageMeteringConfigs": [{
        "partner": "AWS", "enableDimensionMapping": True,
        "dimensionMappingV2": {"cpu_seconds": [{
            "dimensionKey": "cpu_hour", "mappingMode": "QUANTITY", "convertionMultiplier": 0.5}]}}]}
    assert env.http.patch(url, json=config).json() == config
    assert env.http.get(url).json() == config
    bad = env.http.patch(url, json={"partnerUsageMeteringConfigs": [{"partner": "IBM"}]})
    assert bad.status_code == 400 and env.http.get(url).json() == config
    bad_mode = {"partnerUsageMeteringConfigs": [{"partner": "AWS", "dimensionMappingV2": {
        "k": [{"dimensionKey": "cpu_hour", "mappingMode": "PRICE"}]}}]}
    assert env.http.patch(url, json=bad_mode).status_code == 400
    assert env.http.patch(url, content=b"nope").status_code == 400


def test_enabled_dimension_mapping_converts_on_ingest(env: Env) -> None:
    env.state.set_metering_config({"partnerUsageMeteringConfigs": [{
        "partner": "AWS", "enableDimensionMapping": True,
        "dimensionMappingV2": {
            "cpu_seconds": [{"dimensionKey": "cpu_hour", "mappingMode": "QUANTITY",
                             "convertionMultiplier": 0.5}],
            "metronome": [{"dimensionKey": "usage_fee", "mappingMode": "AMOUNT"}]}}]})
    group = env.report({"cpu_seconds": 3, "metronome": 1.5}).json()
    assert group["records"] == {"cpu_hour": 1.5, "usage_fee": 150}  # $1.5 at $0.01 per unit
    assert group["metaInfo"]["originRecords"] == {"cpu_seconds": 3, "metronome": 1.5}
    unmapped = env.report({"bogus": 1})
    assert unmapped.status_code == 400 and "bogus" in error_text(unmapped)


# -- state API used directly by tests and scenarios -----------------------------------------------
def test_state_accepts_callable_clock_and_guards_bad_input() -> None:
    state = SugerState("o", lambda: NOW)
    buyer = state.add_buyer("B", partner="GCP", id="b")
    assert buyer["creationTime"] == "2026-11-25T12:30:00Z"
    with pytest.raises(ValueError):
        state.add_buyer("B", partner="GCP", id="b")
    with pytest.raises(ValueError):
        state.add_entitlement("b", partner="AWS", dimensions=DIMS)
    with pytest.raises(ValueError):
        state.add_entitlement("missing", partner="GCP", dimensions=DIMS)
    with pytest.raises(SugerError):
        state.set_metering_config({"partnerUsageMeteringConfigs": "AWS"})
