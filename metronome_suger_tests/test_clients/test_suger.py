"""SugerClient against the Suger emulator over real HTTP on 127.0.0.1, cross-checked with
suger_sdk_python."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from suger_sdk_python.models import (
    CreateUsageRecordGroupParams,
    IdentityBuyer,
    ListUsageRecordGroupsResponse,
    MeteringUsageRecordGroup,
    WorkloadEntitlement,
)
from suger_sdk_python.models import NewUsageRecordGroup as SdkNewUsageRecordGroup
from suger_sdk_python.models import UsageMeteringConfigInfo as SdkUsageMeteringConfigInfo

from metronome_suger.clients.errors import AuthError, BadRequestError, NotFoundError, ServerError
from metronome_suger.clients.suger import SugerClient
from metronome_suger.clients.suger_models import Entitlement, NewUsageRecordGroup, ReportResult

from .conftest import NOW, RecordingSleep, make_suger, suger_key

HOUR = timedelta(hours=1)
DIMS = [
    {"key": "cpu_hour", "name": "CPU hour", "rate": "0.0125"},
    {"key": "usage_fee", "name": "Usage fee", "rate": "0.01"},
]


def _linked(
    sb: Any, partner: str = "AWS", name: str = "Acme"
) -> tuple[dict[str, Any], dict[str, Any]]:
    buyer = sb.suger.add_buyer(name, partner=partner)
    entitlement = sb.suger.add_entitlement(buyer["id"], partner=partner, dimensions=DIMS)
    return buyer, entitlement


def _group(sb: Any, entitlement_id: str, **records: Decimal) -> NewUsageRecordGroup:
    return NewUsageRecordGroup(
        id=str(uuid.uuid4()),
        organizationID=sb.org_id,
        entitlementID=entitlement_id,
        records=records or {"cpu_hour": Decimal("1.5")},
        timestamp=NOW - HOUR,
    )


def _raw_get(sb: Any, path: str, **params: Any) -> Any:
    """The emulator's JSON exactly as the official SDK would receive it."""
    response = httpx.get(
        f"{sb.suger_url}/org/{sb.org_id}{path}",
        params=params,
        headers={"Authorization": f"Key {suger_key(sb)}"},
    )
    response.raise_for_status()
    return response.json()


# -- buyers ----------------------------------------------------------------------------------------


def test_list_buyers_pages_with_offset_until_a_short_page(
    sandbox: Any, sleeper: RecordingSleep
) -> None:
    for n in range(5):
        sandbox.suger.add_buyer(f"Buyer {n}", partner="GCP")
    expected = [b["id"] for b in sandbox.suger.buyers()]
    sandbox.suger_log.clear()
    with make_suger(sandbox, sleeper, page_limit=2) as client:
        buyers = client.list_buyers()
    assert [b.id for b in buyers] == expected
    calls = sandbox.suger_log.find("GET", f"/org/{sandbox.org_id}/buyer")
    offsets = [int(dict(p.split("=") for p in c.query.split("&"))["offset"]) for c in calls]
    assert offsets == list(range(0, 2 * len(calls), 2))
    assert len(calls) == len(expected) // 2 + 1


def test_buyer_fields_match_the_official_sdk(sandbox: Any, suger: SugerClient) -> None:
    buyer, _ = _linked(sandbox)
    ours = suger.get_buyer(buyer["id"])
    theirs = IdentityBuyer.from_dict(_raw_get(sandbox, f"/buyer/{buyer['id']}"))
    assert theirs is not None
    assert (ours.id, ours.name, ours.partner) == (theirs.id, theirs.name, theirs.partner)
    assert ours.info.metronomeCustomerId is None


def test_link_metronome_customer(sandbox: Any, suger: SugerClient) -> None:
    buyer, _ = _linked(sandbox)
    linked = suger.link_metronome_customer(buyer["id"], "cust-123")
    assert linked.info.metronomeCustomerId == "cust-123"
    patch = sandbox.suger_log.find("PATCH")[-1]
    assert patch.path == f"/org/{sandbox.org_id}/buyer/{buyer['id']}"
    assert patch.body == {"metronomeCustomerId": "cust-123"}
    assert suger.get_buyer(buyer["id"]).info.metronomeCustomerId == "cust-123"
    with pytest.raises(NotFoundError):
        suger.link_metronome_customer("no-such-buyer", "cust-123")


# -- entitlements ----------------------------------------------------------------------------------


def test_entitlements_by_buyer_and_partner_with_decimal_rates(
    sandbox: Any, suger: SugerClient
) -> None:
    buyer, entitlement = _linked(sandbox, partner="AZURE")
    found = suger.list_entitlements(buyer_id=buyer["id"])
    assert [e.id for e in found] == [entitlement["id"]]
    ent = found[0]
    assert isinstance(ent, Entitlement) and ent.partner == "AZURE" and ent.status == "ACTIVE"
    assert ent.buyerID == buyer["id"] and ent.entitlementTermID and ent.startTime is not None
    assert [(d.key, d.rate) for d in ent.info.dimensions] == [
        ("cpu_hour", Decimal("0.0125")),
        ("usage_fee", Decimal("0.01")),
    ]
    query = sandbox.suger_log.find("GET", f"/org/{sandbox.org_id}/entitlement")[-1].query
    assert f"buyerId={buyer['id']}" in query
    assert suger.list_entitlements(buyer_id=buyer["id"], partner="AWS") == []
    sdk = [
        WorkloadEntitlement.from_dict(e)
        for e in _raw_get(sandbox, "/entitlement", buyerId=buyer["id"])
    ]
    assert [(e.id, e.buyer_id, e.partner) for e in sdk if e] == [(ent.id, ent.buyerID, ent.partner)]


# -- reporting -------------------------------------------------------------------------------------


def test_report_body_is_valid_for_the_official_sdk_and_a_repeat_is_a_duplicate(
    sandbox: Any, suger: SugerClient, sleeper: RecordingSleep
) -> None:
    _, entitlement = _linked(sandbox)
    group = _group(sandbox, entitlement["id"], cpu_hour=Decimal("1.5"), usage_fee=Decimal("250"))
    sandbox.suger_log.clear()

    first = suger.report_usage_record_group(group)
    assert isinstance(first, ReportResult) and first.outcome == "created" and first.message is None
    assert (
        first.group is not None and first.group.id == group.id and first.group.status == "CREATED"
    )
    assert first.group.records == {"cpu_hour": Decimal("1.5"), "usage_fee": Decimal("250")}
    assert first.group.entitlementID == entitlement["id"] and first.group.partner == "AWS"

    post = sandbox.suger_log.find("POST")[-1]
    assert post.path == f"/org/{sandbox.org_id}/entitlement/{entitlement['id']}/usageRecordGroup"
    assert (
        post.headers["authorization"] == "Key ***"
        and post.headers["content-type"] == "application/json"
    )
    assert post.body == {
        "id": group.id,
        "organizationID": sandbox.org_id,
        "entitlementID": entitlement["id"],
        "records": {"cpu_hour": 1.5, "usage_fee": 250},
        "timestamp": "2026-11-25T13:00:00Z",
    }
    params = CreateUsageRecordGroupParams.from_json(json.dumps(post.body))
    assert (
        params is not None and params.id == group.id and params.entitlement_id == entitlement["id"]
    )
    assert params.records == {"cpu_hour": 1.5, "usage_fee": 250}
    assert params.timestamp == NOW - HOUR

    again = suger.report_usage_record_group(group)
    assert again.outcome == "duplicate" and again.group is None and again.message
    assert len(sandbox.suger_log.find("POST")) == 2 and sleeper.waits == []  # 409 never retried
    assert len([g for g in sandbox.suger.groups() if g["id"] == group.id]) == 1


def test_stored_groups_parse_with_the_official_sdk_and_ours(
    sandbox: Any, suger: SugerClient
) -> None:
    _, entitlement = _linked(sandbox)
    group = _group(sandbox, entitlement["id"], cpu_hour=Decimal("0.1"))
    suger.report_usage_record_group(group)
    raw = _raw_get(sandbox, "/usageRecordGroup", entitlementId=entitlement["id"])
    sdk = ListUsageRecordGroupsResponse.from_dict(raw)
    assert sdk is not None and sdk.usage_record_groups is not None
    sdk_group = MeteringUsageRecordGroup.from_dict(raw["usageRecordGroups"][0])
    assert sdk_group is not None and sdk_group.id == group.id
    ours = suger.list_usage_record_groups(entitlement_id=entitlement["id"])
    assert [g.id for g in ours] == [group.id]
    assert ours[0].records == {"cpu_hour": Decimal("0.1")}  # exactly, not 0.1000000000000000055...
    assert ours[0].creationTime is not None and ours[0].reportedTime is None
    assert ours[0].metaInfo is not None and "originRecords" in ours[0].metaInfo


def test_a_400_is_raised_with_suger_message_and_never_retried(
    sandbox: Any, suger: SugerClient, sleeper: RecordingSleep
) -> None:
    _, entitlement = _linked(sandbox)
    sandbox.suger.reject_next(entitlement["id"], "dimension cpu_hour is not active")
    sandbox.suger_log.clear()
    with pytest.raises(BadRequestError) as info:
        suger.report_usage_record_group(_group(sandbox, entitlement["id"]))
    exc = info.value
    assert (
        exc.status == 400
        and exc.message == "dimension cpu_hour is not active"
        and exc.method == "POST"
    )
    assert str(exc) == (
        f"Suger POST /org/{sandbox.org_id}/entitlement/{entitlement['id']}/usageRecordGroup"
        " -> 400: dimension cpu_hour is not active"
    )
    assert len(sandbox.suger_log.entries()) == 1 and sleeper.waits == []


def test_all_zero_group_is_refused_by_suger(sandbox: Any, suger: SugerClient) -> None:
    _, entitlement = _linked(sandbox)
    with pytest.raises(BadRequestError, match="zero"):
        suger.report_usage_record_group(_group(sandbox, entitlement["id"], cpu_hour=Decimal("0")))


def test_a_post_is_retried_on_5xx_with_the_same_id(
    sandbox: Any, suger: SugerClient, sleeper: RecordingSleep
) -> None:
    _, entitlement = _linked(sandbox)
    group = _group(sandbox, entitlement["id"])
    sandbox.suger_faults.inject("5xx", times=2, method="POST", status=503)
    sandbox.suger_log.clear()
    result = suger.report_usage_record_group(group)
    assert result.outcome == "created"
    posts = sandbox.suger_log.find("POST")
    assert [p.status for p in posts] == [503, 503, 200]
    assert all(p.body == posts[0].body for p in posts) and posts[0].body["id"] == group.id
    assert sleeper.waits == [0.01, 0.02]


def test_a_post_whose_answer_was_lost_comes_back_as_duplicate(
    sandbox: Any, suger: SugerClient, sleeper: RecordingSleep
) -> None:
    """Suger stored the group but the connection dropped before the answer: the retry sees 409."""
    _, entitlement = _linked(sandbox)
    group = _group(sandbox, entitlement["id"])
    suger.report_usage_record_group(group)  # stands in for the attempt whose answer was lost
    sandbox.suger_faults.inject("drop", method="POST")
    sandbox.suger_log.clear()
    result = suger.report_usage_record_group(group)
    assert result.outcome == "duplicate"
    assert [p.status for p in sandbox.suger_log.find("POST")] == [None, 409]


def test_group_model_validation() -> None:
    from datetime import datetime

    with pytest.raises(ValueError):
        NewUsageRecordGroup(
            id="x" * 37, organizationID="o", entitlementID="e", records={"a": 1}, timestamp=NOW
        )
    with pytest.raises(ValueError, match="timezone-aware"):
        NewUsageRecordGroup(
            id="x",
            organizationID="o",
            entitlementID="e",
            records={"a": 1},
            timestamp=datetime(2026, 1, 1),
        )
    with pytest.raises(ValueError):
        NewUsageRecordGroup(
            id="x", organizationID="o", entitlementID="e", records={"a": "NaN"}, timestamp=NOW
        )
    group = NewUsageRecordGroup(
        id="x",
        organizationID="o",
        entitlementID="e",
        records={"a": Decimal("2")},
        timestamp=NOW.replace(microsecond=7),
    )
    assert group.to_body()["timestamp"] == "2026-11-25T14:00:00Z"


def test_report_refuses_a_group_for_another_org(sandbox: Any, suger: SugerClient) -> None:
    group = NewUsageRecordGroup(
        id="x", organizationID="other-org", entitlementID="e", records={"a": 1}, timestamp=NOW
    )
    with pytest.raises(ValueError, match="other-org"):
        suger.report_usage_record_group(group)


# -- validation ------------------------------------------------------------------------------------


def test_validate_usage_record_groups(sandbox: Any, suger: SugerClient) -> None:
    _, entitlement = _linked(sandbox)
    stored_before = len(sandbox.suger.groups())
    good = _group(sandbox, entitlement["id"], cpu_hour=Decimal("3"))
    assert suger.validate_usage_record_groups([good]) is None
    body = sandbox.suger_log.find("POST", f"/org/{sandbox.org_id}/batchValidateUsageRecordGroups")[
        -1
    ].body
    assert [
        SdkNewUsageRecordGroup.from_dict(item) for item in body
    ]  # the batch schema accepts our items
    bad = _group(sandbox, entitlement["id"], gpu_hour=Decimal("1"))
    problem = suger.validate_usage_record_groups([good, bad])
    assert problem is not None and "gpu_hour" in problem
    assert suger.validate_usage_record_groups([]) is None
    assert len(sandbox.suger.groups()) == stored_before  # validation stores nothing


# -- listing and retry -----------------------------------------------------------------------------


def test_list_usage_record_groups_pages_on_offset(sandbox: Any, sleeper: RecordingSleep) -> None:
    _, entitlement = _linked(sandbox)
    with make_suger(sandbox, sleeper, page_limit=2) as client:
        ids = []
        for _ in range(5):
            group = _group(sandbox, entitlement["id"])
            assert client.report_usage_record_group(group).outcome == "created"
            ids.append(group.id)
        sandbox.suger_log.clear()
        listed = client.list_usage_record_groups(
            entitlement_id=entitlement["id"],
            status="CREATED",
            start_date=NOW.date(),
            end_date=NOW.date(),
        )
    assert sorted(g.id for g in listed) == sorted(ids)
    calls = sandbox.suger_log.find("GET", f"/org/{sandbox.org_id}/usageRecordGroup")
    assert len(calls) == 3
    assert "startDate=2026-11-25" in calls[0].query and "endDate=2026-11-25" in calls[0].query
    assert "status=CREATED" in calls[0].query


def test_retry_usage_record_group(sandbox: Any, suger: SugerClient) -> None:
    _, entitlement = _linked(sandbox)
    group = _group(sandbox, entitlement["id"])
    suger.report_usage_record_group(group)
    sandbox.suger.fail_next_report(entitlement["id"])
    sandbox.suger.run_forwarder()
    assert [g.status for g in suger.list_usage_record_groups(entitlement_id=entitlement["id"])] == [
        "REPORT_FAILED"
    ]
    retried = suger.retry_usage_record_group(group.id)
    assert retried.id == group.id and retried.status == "CREATED"
    with pytest.raises(BadRequestError, match="REPORT_FAILED"):
        suger.retry_usage_record_group(group.id)
    with pytest.raises(NotFoundError):
        suger.retry_usage_record_group("no-such-group")


# -- config and auth -------------------------------------------------------------------------------


def test_usage_metering_config(sandbox: Any, suger: SugerClient) -> None:
    assert suger.get_usage_metering_config().partnerUsageMeteringConfigs == []
    config = {
        "partnerUsageMeteringConfigs": [
            {
                "partner": "AWS",
                "enableDimensionMapping": True,
                "dimensionMappingV2": {
                    "metronome": [{"dimensionKey": "usage_fee", "mappingMode": "AMOUNT"}],
                    "api_calls": [
                        {
                            "dimensionKey": "cpu_hour",
                            "mappingMode": "QUANTITY",
                            "convertionMultiplier": 0.001,
                        }
                    ],
                },
            }
        ]
    }
    sandbox.suger.set_metering_config(config)
    info = suger.get_usage_metering_config()
    aws = info.for_partner("AWS")
    assert (
        aws is not None and aws.enableDimensionMapping is True and info.for_partner("GCP") is None
    )
    assert aws.dimensionMappingV2 is not None
    assert aws.dimensionMappingV2["api_calls"][0].convertionMultiplier == Decimal("0.001")
    assert aws.dimensionMappingV2["metronome"][0].mappingMode == "AMOUNT"
    assert (
        SdkUsageMeteringConfigInfo.from_dict(_raw_get(sandbox, "/usageMeteringConfigInfo"))
        is not None
    )


def test_wrong_api_key_is_an_auth_error_without_retry(
    sandbox: Any, sleeper: RecordingSleep
) -> None:
    secret = "wrong-suger-key-0123456789"
    sandbox.suger_log.clear()
    with make_suger(sandbox, sleeper, api_key=secret) as client, pytest.raises(AuthError) as info:
        client.list_buyers()
    exc = info.value
    assert exc.status == 401 and exc.service == "suger" and "Authorization" in exc.message
    assert str(exc).startswith(f"Suger GET /org/{sandbox.org_id}/buyer -> 401: ")
    assert len(sandbox.suger_log.entries()) == 1 and sleeper.waits == []
    assert secret not in str(exc) + repr(exc) + repr(client)


def test_other_org_is_forbidden(sandbox: Any, sleeper: RecordingSleep) -> None:
    with (
        make_suger(sandbox, sleeper, org_id="someone-else") as client,
        pytest.raises(AuthError) as info,
    ):
        client.list_entitlements()
    assert info.value.status == 403


# -- Suger's real shapes (issue 9) -----------------------------------------------------------------


def test_error_bodies_are_json_strings_and_their_text_is_the_message(
    sandbox: Any, suger: SugerClient
) -> None:
    """Suger's 400/404 bodies are JSON strings (the SDK's ``'400': "str"``): the message is the
    string itself, not its quoted JSON."""
    _, entitlement = _linked(sandbox)
    with pytest.raises(BadRequestError) as zero:
        suger.report_usage_record_group(_group(sandbox, entitlement["id"], cpu_hour=Decimal("0")))
    assert zero.value.body == json.dumps("all the quantity of usage records are zero")
    assert zero.value.message == "all the quantity of usage records are zero"
    with pytest.raises(NotFoundError) as missing:
        suger.list_product_dimensions("no-such-product")
    assert missing.value.message == "product no-such-product not found"
    assert str(missing.value).endswith("-> 404: product no-such-product not found")


def test_validate_takes_any_200_as_valid_and_returns_a_400s_text(
    sandbox: Any, suger: SugerClient
) -> None:
    """batchValidate's 200 is a string whatever it says ("Empty string if validation is
    successful"); only a 400 carries a problem."""
    _, entitlement = _linked(sandbox)
    good = _group(sandbox, entitlement["id"])
    sandbox.suger.validation_ok_body = "success"
    raw = httpx.post(f"{sandbox.suger_url}/org/{sandbox.org_id}/batchValidateUsageRecordGroups",
                     json=[{"entitlementID": entitlement["id"], "records": {"cpu_hour": 1}}], headers={"Authorization": f"Key {suger_key(sandbox)}"})
    assert (raw.status_code, raw.json()) == (200, "success")  # what the client is about to read
    assert suger.validate_usage_record_groups([good]) is None
    bad = _group(sandbox, entitlement["id"], gpu_hour=Decimal("1"))
    problem = suger.validate_usage_record_groups([bad])
    assert problem == (f"record key 'gpu_hour' is not a metering dimension key or name of "
                       f"entitlement {entitlement['id']}")


def test_product_dimensions_beyond_the_entitlements_50(sandbox: Any, suger: SugerClient) -> None:
    buyer = sandbox.suger.add_buyer("Big", partner="AWS")
    dims = [{"key": f"d{n:02d}", "rate": f"0.{n:02d}5"} for n in range(1, 61)]
    sandbox.suger.add_entitlement(buyer["id"], partner="AWS", dimensions=dims, product_id="prod-big")
    [ent] = suger.list_entitlements(buyer_id=buyer["id"])
    assert ent.info.dimensionsOversized is True and len(ent.info.dimensions) == 50
    assert ent.productID == "prod-big"
    listed = suger.list_product_dimensions("prod-big")
    assert len(listed) == 60 and (listed[54].key, listed[54].rate) == ("d55", Decimal("0.555"))
    others = [e for e in suger.list_entitlements() if e.id != ent.id]
    assert others and not any(e.info.dimensionsOversized for e in others)


def test_a_failing_product_dimension_listing_is_retried_then_raised(
    sandbox: Any, suger: SugerClient, sleeper: RecordingSleep
) -> None:
    _, entitlement = _linked(sandbox)
    sandbox.suger.fail_product_dimensions(entitlement["productID"], message="db timeout", times=10)
    with pytest.raises(ServerError) as failed:
        suger.list_product_dimensions(entitlement["productID"])
    assert failed.value.message == "db timeout" and failed.value.attempts == 4


def test_groups_are_listed_from_our_source_unless_asked(sandbox: Any, suger: SugerClient) -> None:
    """Suger's own Metronome integration stores groups for the same entitlements
    (``metaInfo.source`` METRONOME); our listing asks for ``source=API`` by default."""
    _, entitlement = _linked(sandbox)
    ours = _group(sandbox, entitlement["id"])
    suger.report_usage_record_group(ours)
    theirs = sandbox.suger.add_foreign_group(entitlement["id"], {"cpu_hour": 4}, source="METRONOME")
    sandbox.suger_log.clear()
    assert [g.id for g in suger.list_usage_record_groups()] == [ours.id]
    assert "source=API" in sandbox.suger_log.find("GET")[-1].query
    assert [g.id for g in suger.list_usage_record_groups(source="METRONOME")] == [theirs["id"]]
    assert {g.id for g in suger.list_usage_record_groups(source=None)} == {ours.id, theirs["id"]}


def test_group_statuses_are_kept_verbatim(sandbox: Any, suger: SugerClient) -> None:
    _, entitlement = _linked(sandbox)
    pending, newer = _group(sandbox, entitlement["id"]), _group(sandbox, entitlement["id"])
    for group in (pending, newer):
        suger.report_usage_record_group(group)
    sandbox.suger.set_group_status(pending.id, "REPORT_PENDING")
    sandbox.suger.set_group_status(newer.id, "REPORT_QUEUED", unknown=True)  # a status Suger may add
    statuses = {g.id: g.status for g in suger.list_usage_record_groups()}
    assert statuses == {pending.id: "REPORT_PENDING", newer.id: "REPORT_QUEUED"}


# -- usage record reports --------------------------------------------------------------------------


def _forwarded(sb: Any, client: SugerClient, entitlement_id: str, qty: str) -> str:
    """Report one group and run Suger's forwarder over it; the group id."""
    group = _group(sb, entitlement_id, cpu_hour=Decimal(qty))
    assert client.report_usage_record_group(group).outcome == "created"
    assert sb.suger.run_forwarder() == [group.id]
    return group.id


def _report_offsets(sb: Any) -> list[int]:
    calls = sb.suger_log.find("GET", f"/org/{sb.org_id}/usageRecordReport")
    return [int(dict(p.split("=") for p in c.query.split("&"))["offset"]) for c in calls]


def test_usage_record_reports_page_on_offset_and_filter(sandbox: Any, sleeper: RecordingSleep) -> None:
    day = NOW.date()
    with make_suger(sandbox, sleeper, page_limit=2) as client:
        before = {r.id for r in client.list_usage_record_reports(start_date=day, end_date=day)}
        ents = {partner: [_linked(sandbox, partner, f"{partner} {n}") for n in range(2)]
                for partner in ("AWS", "AZURE")}
        ent_ids = [e["id"] for pairs in ents.values() for _, e in pairs]
        for ent_id in [*ent_ids, ent_ids[0]]:
            _forwarded(sandbox, client, ent_id, "1.5")
        sandbox.suger_log.clear()
        listed = client.list_usage_record_reports(start_date=day, end_date=day)
        assert len(listed) == len(before) + 5 and len({r.id for r in listed}) == len(listed)
        assert _report_offsets(sandbox) == list(range(0, len(listed), 2))  # nextOffset 0 after the last
        query = sandbox.suger_log.find("GET", f"/org/{sandbox.org_id}/usageRecordReport")[0].query
        assert "startDate=2026-11-25" in query and "endDate=2026-11-25" in query and "limit=2" in query

        mine = client.list_usage_record_reports(entitlement_id=ent_ids[0], start_date=day, end_date=day)
        assert [r.entitlementID for r in mine] == [ent_ids[0], ent_ids[0]]
        azure = client.list_usage_record_reports(partner="AZURE", start_date=day, end_date=day)
        assert {r.entitlementID for r in azure} >= set(ent_ids[2:]) and {r.partner for r in azure} == {"AZURE"}
        buyer_id = ents["AZURE"][1][0]["id"]
        by_buyer = client.list_usage_record_reports(buyer_id=buyer_id, partner="AZURE", start_date=day, end_date=day)
        assert [r.entitlementID for r in by_buyer] == [ent_ids[3]]
        assert client.list_usage_record_reports(start_date=day - timedelta(days=3),
                                                end_date=day - timedelta(days=1)) == []
        with pytest.raises(ValueError, match="after"):
            client.list_usage_record_reports(start_date=day, end_date=day - timedelta(days=1))


def test_usage_record_report_quantities_are_exact_decimals(sandbox: Any, suger: SugerClient) -> None:
    """AWS: whole units with the fraction carried report to report; Azure: decimals as reported."""
    _, aws = _linked(sandbox, "AWS")
    _, azure = _linked(sandbox, "AZURE")
    first = _forwarded(sandbox, suger, aws["id"], "1.4")
    second = _forwarded(sandbox, suger, aws["id"], "2.7")
    _forwarded(sandbox, suger, azure["id"], "0.3")
    day = NOW.date()
    a1, a2 = suger.list_usage_record_reports(entitlement_id=aws["id"], start_date=day, end_date=day)
    assert (a1.info.usageRecordGroupIds, a2.info.usageRecordGroupIds) == ([first], [second])
    assert (a1.info.reportedRecords, a1.info.decimalParts, a1.info.newDecimalParts) == (
        {"cpu_hour": Decimal(1)}, {"cpu_hour": Decimal(0)}, {"cpu_hour": Decimal("0.4")})
    assert (a2.info.reportedRecords, a2.info.decimalParts, a2.info.newDecimalParts) == (
        {"cpu_hour": Decimal(3)}, {"cpu_hour": Decimal("0.4")}, {"cpu_hour": Decimal("0.1")})
    # nothing lost: billed whole units + what is still carried == what was reported
    assert a1.info.reportedRecords["cpu_hour"] + a2.info.reportedRecords["cpu_hour"] + Decimal("0.1") == Decimal("4.1")
    assert a1.info.dimensionUnitPrice == {"cpu_hour": Decimal("0.0125")}
    assert isinstance(a1.info.dimensionUnitPrice["cpu_hour"], Decimal) and a1.info.status == "SUCCESS"
    assert a1.info.startTime == NOW - HOUR and a1.info.endTime == NOW and a1.creationTime == NOW
    assert a1.info.awsMeteringRequest is not None
    assert a1.info.awsMeteringRequest["UsageRecords"][0]["Timestamp"] == "2026-11-25T13:00:00Z"
    [z] = suger.list_usage_record_reports(entitlement_id=azure["id"], start_date=day, end_date=day)
    assert z.info.reportedRecords == {"cpu_hour": Decimal("0.3")} and z.info.decimalParts == {}
    assert z.info.azureMeteringRequest is not None and z.info.awsMeteringRequest is None

    [aws_day] = suger.aggregate_usage_record_reports(partner="AWS", start_date=day, end_date=day)
    assert (aws_day.date, aws_day.dimensionKey, aws_day.quantity) == ("2026-11-25", "cpu_hour", Decimal(4))
    [azure_day] = suger.aggregate_usage_record_reports(partner="AZURE", start_date=day, end_date=day)
    assert azure_day.quantity == Decimal("0.3")
    with pytest.raises(BadRequestError, match="granularity"):
        suger.aggregate_usage_record_reports(partner="AWS", granularity="WEEK", start_date=day, end_date=day)


def test_a_repeated_offset_stops_the_report_listing_and_is_logged(
    sandbox: Any, sleeper: RecordingSleep, caplog: pytest.LogCaptureFixture
) -> None:
    day = NOW.date()
    with make_suger(sandbox, sleeper, page_limit=2) as client:
        ent_ids = [_linked(sandbox, "AWS", f"Buyer {n}")[1]["id"] for n in range(4)]
        for ent_id in ent_ids:
            _forwarded(sandbox, client, ent_id, "1")
        page = _raw_get(sandbox, "/usageRecordReport", limit=2, offset=0)
        repeat = _raw_get(sandbox, "/usageRecordReport", limit=2, offset=2)
        path = f"/org/{sandbox.org_id}/usageRecordReport"
        # a server that answers offset 2 with nextOffset 2 again: stop, keep what was read, log it
        sandbox.suger_faults.inject("respond", method="GET", path_prefix=path, status=200,
                                    body=json.dumps(page), headers={"content-type": "application/json"})
        sandbox.suger_faults.inject("respond", method="GET", path_prefix=path, status=200,
                                    body=json.dumps({**repeat, "nextOffset": 2}),
                                    headers={"content-type": "application/json"})
        sandbox.suger_log.clear()
        with caplog.at_level("WARNING", logger="metronome_suger.clients.suger"):
            listed = client.list_usage_record_reports(start_date=day, end_date=day)
        assert [r.id for r in listed] == [r["id"] for r in page["usageRecordReports"] + repeat["usageRecordReports"]]
        assert _report_offsets(sandbox) == [0, 2]
        assert "nextOffset 2, an offset already read" in caplog.text

        # a server that ignores the offset (same page, advancing nextOffset): stops, each report once
        caplog.clear()
        for next_offset in (2, 4):
            sandbox.suger_faults.inject("respond", method="GET", path_prefix=path, status=200,
                                        body=json.dumps({**page, "nextOffset": next_offset}),
                                        headers={"content-type": "application/json"})
        with caplog.at_level("WARNING", logger="metronome_suger.clients.suger"):
            again = client.list_usage_record_reports(start_date=day, end_date=day)
        assert [r.id for r in again] == [r["id"] for r in page["usageRecordReports"]]
        assert "repeated reports already read" in caplog.text and sandbox.suger_faults.pending() == 0
