"""The official ``suger_sdk_python`` is the oracle: its models parse the emulator's JSON, every
field we emit is one the model knows, and the SDK client itself can report, list, manage groups."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from pydantic import BaseModel
from suger_sdk_python import ApiClient, Configuration
from suger_sdk_python.api.buyer_api import BuyerApi
from suger_sdk_python.api.entitlement_api import EntitlementApi
from suger_sdk_python.api.metering_api import MeteringApi
from suger_sdk_python.api.product_api import ProductApi
from suger_sdk_python.exceptions import ApiException
from suger_sdk_python.models import (
    AwsMarketplaceMeteringBatchMeterUsageInput,
    AwsMarketplaceMeteringUsageRecord,
    BuyerInfo,
    CreateUsageRecordGroupParams,
    EntitlementInfo,
    EntitlementTermInfo,
    IdentityBuyer,
    ListUsageRecordGroupsResponse,
    ListUsageRecordReportsResponse,
    MeteringDimension,
    MeteringUsageRecordGroup,
    MeteringUsageRecordGroupMetaInfo,
    MeteringUsageRecordReport,
    MeteringUsageRecordReportInfo,
    NewUsageRecordGroup,
    PartnerUsageMeteringConfig,
    UpdateBuyerParams,
    UsageMeteringConfigInfo,
    UsageMeteringDimensionMappingValue,
    UsageRecordAggregated,
    UsageRecordGroupSource,
    UsageRecordReportStatus,
    WorkloadEntitlement,
    WorkloadEntitlementTerm,
    WorkloadMetaInfo,
)

from metronome_suger.sandbox.server import Sandbox
from metronome_suger.sandbox.suger_state import ALL_ZERO_MESSAGE, SugerState
from metronome_suger_tests.test_sandbox.test_suger_app import DIMS, KEY, NOW, ORG

CONFIG = {"partnerUsageMeteringConfigs": [{
    "partner": "AZURE", "enableDimensionMapping": False,
    "dimensionMappingV2": {"metronome": [{"dimensionKey": "usage_fee", "mappingMode": "AMOUNT"}]}}]}
# Nested objects the emulator emits, by the model that describes them.
NESTED: dict[type[BaseModel], dict[str, type[BaseModel]]] = {
    MeteringUsageRecordGroup: {"metaInfo": MeteringUsageRecordGroupMetaInfo},
    WorkloadEntitlement: {"info": EntitlementInfo, "metaInfo": WorkloadMetaInfo},
    IdentityBuyer: {"info": BuyerInfo},
    WorkloadEntitlementTerm: {"info": EntitlementTermInfo},
    UsageMeteringConfigInfo: {"partnerUsageMeteringConfigs": PartnerUsageMeteringConfig},
    EntitlementInfo: {"dimensions": MeteringDimension},
}


def assert_known_fields(model: type[BaseModel], data: Any) -> None:
    """Every key we emit is a property of the SDK model (the SDK drops unknown keys silently, so a
    misspelt field would otherwise parse as a missing one)."""
    items = data if isinstance(data, list) else [data]
    known = set(getattr(model, f"_{model.__name__}__properties"))
    for item in items:
        assert set(item) <= known, f"{model.__name__} has no {sorted(set(item) - known)}"
        for field, sub_model in NESTED.get(model, {}).items():
            if item.get(field) is not None:
                assert_known_fields(sub_model, item[field])


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """An empty sandbox plus one buyer, one renewed entitlement and an AZURE metering config."""
    with Sandbox(customers=0, now=NOW) as sandbox:
        state = sandbox.suger
        year_end = datetime(2027, 1, 1, tzinfo=timezone.utc)
        state.add_buyer("Acme", partner="AWS", metronome_customer_id="cust-acme", id="buyer-1")
        state.add_entitlement("buyer-1", partner="AWS", dimensions=DIMS, id="ent-1",
                              product_id="prod-1", end_time=year_end)
        state.renew_entitlement("ent-1", at=year_end)
        state.set_metering_config(CONFIG)
        yield sandbox


@pytest.fixture
def state(sandbox: Sandbox) -> SugerState:
    return sandbox.suger


@pytest.fixture
def url(sandbox: Sandbox) -> str:
    return sandbox.suger_url


@pytest.fixture
def http(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, headers={"Authorization": f"Key {KEY}"}, timeout=10) as client:
        yield client


@pytest.fixture
def sdk(url: str) -> Iterator[ApiClient]:
    config = Configuration(host=url)
    config.api_key["APIKeyAuth"] = KEY
    config.api_key_prefix["APIKeyAuth"] = "Key"
    with ApiClient(config) as client:
        yield client


def _report(http: httpx.Client, group_id: str, qty: float = 1.5) -> httpx.Response:
    body = {"id": group_id, "organizationID": ORG, "entitlementID": "ent-1",
            "records": {"cpu_hour": qty}, "timestamp": "2026-11-25T11:00:00Z"}
    return http.post(f"/org/{ORG}/entitlement/ent-1/usageRecordGroup", json=body)


# -- (1) emulator JSON parses into the official models ------------------------------------------
def test_usage_record_group_json_parses(http: httpx.Client, state: SugerState) -> None:
    text = _report(http, "g-1").text
    assert_known_fields(MeteringUsageRecordGroup, json.loads(text))
    group = MeteringUsageRecordGroup.from_json(text)
    assert group is not None and group.meta_info is not None
    assert (group.id, group.entitlement_id, group.buyer_id) == ("g-1", "ent-1", "buyer-1")
    assert group.partner == "AWS"
    assert group.records == {"cpu_hour": 1.5} and group.status == "CREATED" and group.serial_id == 1
    assert group.reported_time is None and group.creation_time == NOW
    assert group.meta_info.source == UsageRecordGroupSource.UsageRecordGroupSourceAPI
    assert group.meta_info.origin_records == {"cpu_hour": 1.5}
    assert group.meta_info.timestamp == datetime(2026, 11, 25, 11, tzinfo=timezone.utc)
    state.run_forwarder()
    listed_text = http.get(f"/org/{ORG}/usageRecordGroup").text
    assert_known_fields(ListUsageRecordGroupsResponse, json.loads(listed_text))
    assert_known_fields(MeteringUsageRecordGroup, json.loads(listed_text)["usageRecordGroups"])
    listed = ListUsageRecordGroupsResponse.from_json(listed_text)
    assert listed is not None and listed.next_offset == 0 and listed.usage_record_groups is not None
    reported = listed.usage_record_groups[0]
    assert reported.status == "REPORTED" and reported.reported_time == NOW
    assert reported.usage_record_report_id


def test_entitlement_buyer_term_config_dimension_json_parse(http: httpx.Client) -> None:
    ent_json = http.get(f"/org/{ORG}/entitlement/ent-1").json()
    assert_known_fields(WorkloadEntitlement, ent_json)
    ent = WorkloadEntitlement.from_dict(ent_json)
    assert ent is not None and ent.info is not None and ent.info.dimensions is not None
    assert ent.status is not None and ent.status.value == "ACTIVE"
    assert ent.partner is not None and ent.partner.value == "AWS"
    assert [(d.key, d.name, d.rate) for d in ent.info.dimensions] == [
        ("cpu_hour", "CPU hours", 0.25), ("usage_fee", "Usage fee", 0.01)]
    assert ent.end_time == datetime(2027, 1, 1, tzinfo=timezone.utc)

    listed = http.get(f"/org/{ORG}/entitlement", params={"buyerId": "buyer-1"}).json()
    assert [e.id for e in map(WorkloadEntitlement.from_dict, listed) if e] == ["ent-1"]

    buyer_json = http.get(f"/org/{ORG}/buyer/buyer-1").json()
    assert_known_fields(IdentityBuyer, buyer_json)
    buyer = IdentityBuyer.from_dict(buyer_json)
    assert buyer is not None and buyer.info is not None
    assert buyer.info.metronome_customer_id == "cust-acme"

    terms_json = http.get(f"/org/{ORG}/entitlement/ent-1/entitlementTerm").json()
    assert_known_fields(WorkloadEntitlementTerm, terms_json)
    terms = [t for t in map(WorkloadEntitlementTerm.from_dict, terms_json) if t]
    assert [t.info.type for t in terms if t.info] == ["Signup", "AutoRenew"]
    assert ent.entitlement_term_id == terms[0].id

    config_json = http.get(f"/org/{ORG}/usageMeteringConfigInfo").json()
    assert_known_fields(UsageMeteringConfigInfo, config_json)
    mapping = config_json["partnerUsageMeteringConfigs"][0]["dimensionMappingV2"]
    assert_known_fields(UsageMeteringDimensionMappingValue, mapping["metronome"])
    config = UsageMeteringConfigInfo.from_dict(config_json)
    assert config is not None and config.partner_usage_metering_configs is not None
    assert config.partner_usage_metering_configs[0].partner == "AZURE"

    dims_json = http.get(f"/org/{ORG}/product/prod-1/dimension").json()
    assert_known_fields(MeteringDimension, dims_json)
    dims = [d.key for d in map(MeteringDimension.from_dict, dims_json) if d]
    assert dims == ["cpu_hour", "usage_fee"]


# -- (2) the official SDK client against the emulator -------------------------------------------
def test_sdk_reports_dedupes_and_lists(sdk: ApiClient) -> None:
    metering = MeteringApi(sdk)
    params = CreateUsageRecordGroupParams(
        id="sdk-1", organization_id=ORG, entitlement_id="ent-1", records={"cpu_hour": 2},
        timestamp=datetime(2026, 11, 25, 11, tzinfo=timezone.utc))
    group = metering.report_usage_record_group(ORG, "ent-1", params)
    assert isinstance(group, MeteringUsageRecordGroup)
    assert (group.id, group.status, group.records) == ("sdk-1", "CREATED", {"cpu_hour": 2})
    with pytest.raises(ApiException) as duplicate:
        metering.report_usage_record_group(ORG, "ent-1", params)
    assert duplicate.value.status == 409
    zero = CreateUsageRecordGroupParams(organization_id=ORG, entitlement_id="ent-1",
                                        records={"cpu_hour": 0})
    with pytest.raises(ApiException) as rejected:
        metering.report_usage_record_group(ORG, "ent-1", zero)
    assert rejected.value.status == 400 and ALL_ZERO_MESSAGE in (rejected.value.body or "")

    listed = metering.list_usage_record_groups(ORG, entitlement_id="ent-1", limit=10, offset=0)
    assert isinstance(listed, ListUsageRecordGroupsResponse)
    assert [g.id for g in listed.usage_record_groups or []] == ["sdk-1"] and listed.next_offset == 0

    entitlements = EntitlementApi(sdk).list_entitlements(ORG, buyer_id="buyer-1")
    assert [(e.id, e.buyer_id) for e in entitlements] == [("ent-1", "buyer-1")]
    terms = EntitlementApi(sdk).list_entitlement_terms(ORG, "ent-1")
    assert len(terms) == 2 and all(isinstance(t, WorkloadEntitlementTerm) for t in terms)


def test_sdk_batch_validate_and_report(sdk: ApiClient) -> None:
    metering = MeteringApi(sdk)
    item = NewUsageRecordGroup(entitlement_id="ent-1", records={"usage_fee": 12.5})
    assert metering.batch_validate_usage_record_groups(ORG, [item]) == ""
    bad = NewUsageRecordGroup(entitlement_id="ent-1", records={"disk_gb": 1})
    with pytest.raises(ApiException) as invalid:
        metering.batch_validate_usage_record_groups(ORG, [bad])
    assert invalid.value.status == 400 and "disk_gb" in (invalid.value.body or "")
    created = metering.batch_report_usage_record_groups(ORG, [item, item])
    assert [g.status for g in created] == ["CREATED", "CREATED"]
    assert all(g.meta_info and g.meta_info.origin_records == {"usage_fee": 12.5} for g in created)


def test_sdk_retry_delete_buyer_config_and_dimensions(sdk: ApiClient, state: SugerState) -> None:
    metering = MeteringApi(sdk)
    state.fail_next_report("ent-1")
    for group_id in ("f-1", "d-1"):
        metering.report_usage_record_group(ORG, "ent-1", CreateUsageRecordGroupParams(
            id=group_id, organization_id=ORG, entitlement_id="ent-1", records={"cpu_hour": 1}))
    state.set_group_status("d-1", "INVALID")
    state.run_forwarder()
    retried = metering.retry_usage_record_group(ORG, "f-1", creation_date="2026-11-25")
    assert retried.status == "CREATED"
    deleted = metering.delete_usage_record_group(ORG, "d-1")
    assert deleted.status == "DELETED"

    link = UpdateBuyerParams(metronome_customer_id="cust-2")
    buyer = BuyerApi(sdk).update_buyer(ORG, "buyer-1", link)
    assert isinstance(buyer, IdentityBuyer) and buyer.info
    assert buyer.info.metronome_customer_id == "cust-2"
    assert [b.id for b in BuyerApi(sdk).list_buyers(ORG, partner="AWS")] == ["buyer-1"]

    current = metering.get_usage_metering_config_info(ORG)
    assert current.partner_usage_metering_configs
    assert current.partner_usage_metering_configs[0].partner == "AZURE"
    value = UsageMeteringDimensionMappingValue(dimension_key="cpu_hour", convertion_multiplier=2)
    gcp = PartnerUsageMeteringConfig(partner="GCP", enable_dimension_mapping=True,
                                     dimension_mapping_v2={"cpu": [value]})
    updated = metering.update_usage_metering_config_info(
        ORG, UsageMeteringConfigInfo(partner_usage_metering_configs=[gcp]))
    assert updated.partner_usage_metering_configs
    assert updated.partner_usage_metering_configs[0].enable_dimension_mapping is True
    assert state.metering_config()["partnerUsageMeteringConfigs"][0]["partner"] == "GCP"

    dims = ProductApi(sdk).list_product_metering_dimensions(ORG, "prod-1")
    assert [d.key for d in dims] == ["cpu_hour", "usage_fee"]


def test_sdk_with_wrong_key_gets_401(url: str) -> None:
    config = Configuration(host=url)
    config.api_key["APIKeyAuth"] = "wrong"
    config.api_key_prefix["APIKeyAuth"] = "Key"
    with ApiClient(config) as client, pytest.raises(ApiException) as denied:
        EntitlementApi(client).list_entitlements(ORG)
    assert denied.value.status == 401


# -- (3) the shapes issue 9 brought in -------------------------------------------------------------------
def test_sdk_error_bodies_are_json_strings(sdk: ApiClient) -> None:
    """400/404/500 are typed ``"str"`` in every ``_response_types_map`` the SDK generates."""
    metering = MeteringApi(sdk)
    zero = CreateUsageRecordGroupParams(organization_id=ORG, entitlement_id="ent-1",
                                        records={"cpu_hour": 0})
    with pytest.raises(ApiException) as rejected:
        metering.report_usage_record_group(ORG, "ent-1", zero)
    assert json.loads(rejected.value.body or "") == ALL_ZERO_MESSAGE
    with pytest.raises(ApiException) as missing:
        ProductApi(sdk).list_product_metering_dimensions(ORG, "no-such-product")
    assert missing.value.status == 404
    assert json.loads(missing.value.body or "") == "product no-such-product not found"
    bad = NewUsageRecordGroup(entitlement_id="ent-1", records={"disk_gb": 1})
    with pytest.raises(ApiException) as invalid:
        metering.batch_validate_usage_record_groups(ORG, [bad])
    assert "disk_gb" in json.loads(invalid.value.body or "")


def test_sdk_reads_oversized_dimensions_and_the_product_list(sdk: ApiClient, state: SugerState) -> None:
    dims = [{"key": f"d{n}", "name": f"D {n}", "rate": n} for n in range(60)]
    state.add_entitlement("buyer-1", partner="AWS", dimensions=dims, id="ent-big", product_id="prod-big")
    ent = EntitlementApi(sdk).get_entitlement(ORG, "ent-big")
    assert ent.info is not None and ent.info.dimensions is not None
    assert len(ent.info.dimensions) == 50 and ent.info.dimensions_oversized is True
    listed = ProductApi(sdk).list_product_metering_dimensions(ORG, "prod-big")
    assert [d.key for d in listed] == [f"d{n}" for n in range(60)] and listed[55].rate == 55


def test_sdk_lists_by_source_and_reads_cancellation_and_pending_status(
    sdk: ApiClient, state: SugerState, http: httpx.Client,
) -> None:
    _report(http, "ours")
    foreign = state.add_foreign_group("ent-1", {"cpu_hour": 3}, source="METRONOME")
    metering = MeteringApi(sdk)
    by_source = metering.list_usage_record_groups(ORG, source="METRONOME")
    assert [g.id for g in by_source.usage_record_groups or []] == [foreign["id"]]
    [theirs] = by_source.usage_record_groups or []
    assert theirs.meta_info is not None
    assert theirs.meta_info.source == UsageRecordGroupSource.UsageRecordGroupSourceMETRONOME
    state.set_group_status("ours", "REPORT_PENDING")
    ours = metering.list_usage_record_groups(ORG, source="API")
    assert [(g.id, g.status) for g in ours.usage_record_groups or []] == [("ours", "REPORT_PENDING")]
    state.cancel_entitlement("ent-1", NOW)
    cancelled = EntitlementApi(sdk).get_entitlement(ORG, "ent-1")
    assert cancelled.status is not None and cancelled.status.value == "CANCELLED"
    assert cancelled.end_time == NOW


def test_sdk_lists_and_aggregates_usage_record_reports(
    sdk: ApiClient, http: httpx.Client, state: SugerState,
) -> None:
    """Both usageRecordReport routes through ``MeteringApi``: every field is the SDK's, the AWS
    decimal carry moves across two reports, and the aggregate sums the whole units billed."""
    assert _report(http, "r-1", 1.5).status_code == 200
    state.run_forwarder()
    assert _report(http, "r-2", 2.25).status_code == 200
    state.run_forwarder()
    raw = http.get(f"/org/{ORG}/usageRecordReport", params={"entitlementId": "ent-1"}).json()
    assert_known_fields(ListUsageRecordReportsResponse, raw)
    assert_known_fields(MeteringUsageRecordReport, raw["usageRecordReports"])
    for item in raw["usageRecordReports"]:
        assert_known_fields(MeteringUsageRecordReportInfo, item["info"])
        assert_known_fields(AwsMarketplaceMeteringBatchMeterUsageInput, item["info"]["awsMeteringRequest"])
        assert_known_fields(AwsMarketplaceMeteringUsageRecord, item["info"]["awsMeteringRequest"]["UsageRecords"])

    metering = MeteringApi(sdk)
    day = NOW.date().isoformat()
    pages = [metering.list_usage_record_reports(ORG, entitlement_id="ent-1", start_date=day, end_date=day,
                                                limit=1, offset=offset) for offset in (0, 1)]
    assert all(isinstance(p, ListUsageRecordReportsResponse) for p in pages)
    assert [p.next_offset for p in pages] == [1, 0]
    first, second = [r for p in pages for r in p.usage_record_reports or []]
    assert isinstance(first, MeteringUsageRecordReport) and first.info is not None and second.info is not None
    assert (first.entitlement_id, first.buyer_id, first.partner) == ("ent-1", "buyer-1", "AWS")
    assert first.info.status == UsageRecordReportStatus.UsageRecordReportStatus_SUCCESS
    assert first.info.usage_record_group_ids == ["r-1"] and second.info.usage_record_group_ids == ["r-2"]
    # 1.5 → 1 whole unit, 0.5 carried; 2.25 + 0.5 → 2, 0.75 carried (AWS Quantity is an integer)
    assert (first.info.reported_records, first.info.decimal_parts, first.info.new_decimal_parts) == (
        {"cpu_hour": 1}, {"cpu_hour": 0}, {"cpu_hour": 0.5})
    assert (second.info.reported_records, second.info.decimal_parts, second.info.new_decimal_parts) == (
        {"cpu_hour": 2}, {"cpu_hour": 0.5}, {"cpu_hour": 0.75})
    assert first.info.dimension_unit_price == {"cpu_hour": 0.25}
    eleven = datetime(2026, 11, 25, 11, tzinfo=timezone.utc)
    assert (first.info.start_time, first.info.end_time) == (eleven, datetime(2026, 11, 25, 12, tzinfo=timezone.utc))
    aws = first.info.aws_metering_request
    assert aws is not None and aws.usage_records is not None
    [record] = aws.usage_records
    assert (record.dimension, record.quantity, record.timestamp) == ("cpu_hour", 1, eleven)

    aggregated = metering.aggregate_usage_record_reports(ORG, "AWS", "DAY", day, day)
    assert aggregated == [UsageRecordAggregated(date=day, dimensionKey="cpu_hour", quantity=3)]
    assert metering.aggregate_usage_record_reports(ORG, "AZURE", "DAY", day, day) == []
    for call in (lambda: metering.list_usage_record_reports(ORG, limit=1001),
                 lambda: metering.list_usage_record_reports(ORG, start_date="2026-11-31"),
                 lambda: metering.aggregate_usage_record_reports(ORG, "AWS", "WEEK", day, day)):
        with pytest.raises(ApiException) as refused:
            call()
        assert refused.value.status == 400 and isinstance(json.loads(refused.value.body or ""), str)


def test_sdk_lists_an_invoiced_report_with_the_sdk_status(
    sdk: ApiClient, http: httpx.Client, sandbox: Sandbox,
) -> None:
    """A SUCCESS report is INVOICED a day after its creationTime (``usage_record_report_status.py``);
    ``MeteringApi`` parses the status as the SDK's enum and the aggregate still counts it as billed."""
    assert _report(http, "inv-1", 2).status_code == 200
    sandbox.suger.run_forwarder()  # at NOW: the report's creationTime
    metering = MeteringApi(sdk)
    day = NOW.date().isoformat()

    def listed() -> list[MeteringUsageRecordReport]:
        page = metering.list_usage_record_reports(ORG, entitlement_id="ent-1", start_date=day)
        assert isinstance(page, ListUsageRecordReportsResponse) and page.next_offset == 0
        return page.usage_record_reports or []

    sandbox.clock.set(NOW + timedelta(hours=24) - timedelta(seconds=1))
    [before] = listed()
    assert before.info is not None and before.info.status == UsageRecordReportStatus.UsageRecordReportStatus_SUCCESS
    sandbox.clock.set(NOW + timedelta(hours=24))
    [report] = listed()
    assert report.info is not None and isinstance(report.info.status, UsageRecordReportStatus)
    assert report.info.status is UsageRecordReportStatus.UsageRecordReportStatus_INVOICED
    assert (report.id, report.creation_time, report.info.usage_record_group_ids) == (
        before.id, NOW, ["inv-1"])
    assert report.info.reported_records == {"cpu_hour": 2}
    assert metering.aggregate_usage_record_reports(ORG, "AWS", "DAY", day, day) == [
        UsageRecordAggregated(date=day, dimensionKey="cpu_hour", quantity=2)]
    group = metering.list_usage_record_groups(ORG, entitlement_id="ent-1").usage_record_groups or []
    assert [(g.id, g.status) for g in group] == [("inv-1", "REPORTED")]
