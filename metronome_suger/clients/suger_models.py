"""Pydantic models for the Suger API objects this project reads and writes.

Attribute names are Suger's JSON names exactly (camelCase, ``buyerID``, ``convertionMultiplier``
[sic]), so what you read in Suger's docs is what you type. Quantities and rates are ``Decimal``.
Response models keep unknown fields; the request model (:class:`NewUsageRecordGroup`) is strict
because we own it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from metronome_suger.clients.types import ApiModel, UtcDatetime, format_rfc3339, require_aware

__all__ = [
    "Buyer",
    "BuyerInfo",
    "DimensionMappingValue",
    "Entitlement",
    "EntitlementInfo",
    "MeteringDimension",
    "NewUsageRecordGroup",
    "PartnerUsageMeteringConfig",
    "ReportResult",
    "UsageMeteringConfigInfo",
    "UsageRecordAggregated",
    "UsageRecordGroup",
    "UsageRecordReport",
    "UsageRecordReportInfo",
]

MAX_GROUP_ID_LENGTH = 36


def _go_zero_to_none(value: datetime | None) -> datetime | None:
    """Go renders an unset ``time.Time`` as ``0001-01-01T00:00:00Z``; that means "not set"."""
    return None if value is not None and value.year <= 1 else value


OptionalTime = Annotated[UtcDatetime | None, AfterValidator(_go_zero_to_none)]


def _none_as_empty(value: Any, empty: Any) -> Any:
    return empty if value is None else value


class BuyerInfo(ApiModel):
    """The buyer's cross-system ids; ``metronomeCustomerId`` is the Metronome link."""

    metronomeCustomerId: str | None = None

    @field_validator("metronomeCustomerId", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if value == "" else value


class Buyer(ApiModel):
    """A Suger buyer (``IdentityBuyer``)."""

    id: str
    name: str | None = None
    partner: str | None = None
    info: BuyerInfo = Field(default_factory=BuyerInfo)

    @field_validator("info", mode="before")
    @classmethod
    def _null_info(cls, value: Any) -> Any:
        return _none_as_empty(value, {})


class MeteringDimension(ApiModel):
    """A marketplace dimension of an entitlement; ``rate`` is its unit price in USD."""

    key: str
    name: str | None = None
    rate: Decimal | None = None


class EntitlementInfo(ApiModel):
    """``dimensions`` holds at most 50; with more, ``dimensionsOversized`` is set and the full list is
    the product's (``SugerClient.list_product_dimensions``)."""

    dimensions: list[MeteringDimension] = Field(default_factory=list)
    dimensionsOversized: bool = False

    @field_validator("dimensions", mode="before")
    @classmethod
    def _null_dimensions(cls, value: Any) -> Any:
        return _none_as_empty(value, [])

    @field_validator("dimensionsOversized", mode="before")
    @classmethod
    def _null_false(cls, value: Any) -> Any:
        return _none_as_empty(value, False)


class Entitlement(ApiModel):
    """A Suger entitlement (``WorkloadEntitlement``): where a linked customer's usage goes."""

    id: str
    name: str | None = None
    buyerID: str | None = None
    productID: str | None = None
    partner: str | None = None
    status: str | None = None
    startTime: OptionalTime = None
    endTime: OptionalTime = None
    entitlementTermID: str | None = None
    info: EntitlementInfo = Field(default_factory=EntitlementInfo)

    @field_validator("info", mode="before")
    @classmethod
    def _null_info(cls, value: Any) -> Any:
        return _none_as_empty(value, {})


def _check_records(records: dict[str, Decimal]) -> dict[str, Decimal]:
    for key, value in records.items():
        if not key:
            raise ValueError("record keys must be non-empty dimension keys")
        if not value.is_finite():
            raise ValueError(f"record {key!r} has a non-finite quantity {value}")
    return records


class NewUsageRecordGroup(BaseModel):
    """A usage record group to report: one entitlement, one timestamp, ``dimension → quantity``.

    ``id`` (≤ 36 chars) is the de-duplication key: Suger answers 409 for an id it already has, which
    is what makes re-sending safe. ``timestamp`` is normalised to UTC whole seconds and sent as
    ``YYYY-MM-DDTHH:MM:SSZ``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=MAX_GROUP_ID_LENGTH)
    organizationID: str = Field(min_length=1)
    entitlementID: str = Field(min_length=1)
    records: Annotated[dict[str, Decimal], AfterValidator(_check_records)]
    timestamp: datetime

    @field_validator("timestamp")
    @classmethod
    def _utc_seconds(cls, value: datetime) -> datetime:
        return require_aware(value, "timestamp").replace(microsecond=0)

    def to_body(self) -> dict[str, Any]:
        """The ``CreateUsageRecordGroupParams`` JSON object (Decimals are encoded exactly later)."""
        return {
            "id": self.id,
            "organizationID": self.organizationID,
            "entitlementID": self.entitlementID,
            "records": dict(self.records),
            "timestamp": format_rfc3339(self.timestamp, seconds_only=True),
        }

    def to_batch_item(self) -> dict[str, Any]:
        """The batch ``NewUsageRecordGroup`` JSON object (that schema has no
        ``id``/``organizationID``)."""
        return {
            "entitlementID": self.entitlementID,
            "records": dict(self.records),
            "timestamp": format_rfc3339(self.timestamp, seconds_only=True),
        }


class UsageRecordGroup(ApiModel):
    """A group as Suger stores it (``MeteringUsageRecordGroup``); ``records`` are converted.

    ``status`` is a plain string, kept verbatim: the SDK types it ``StrictStr`` and Suger may add
    statuses, which callers must surface, never take for success."""

    id: str
    entitlementID: str | None = None
    buyerID: str | None = None
    partner: str | None = None
    records: dict[str, Decimal] = Field(default_factory=dict)
    status: str | None = None
    creationTime: OptionalTime = None
    reportedTime: OptionalTime = None
    metaInfo: dict[str, Any] | None = None

    @field_validator("records", mode="before")
    @classmethod
    def _null_records(cls, value: Any) -> Any:
        return _none_as_empty(value, {})


class DimensionMappingValue(ApiModel):
    """One destination of Suger's own dimension mapping (``UsageMeteringDimensionMappingValue``)."""

    dimensionKey: str
    mappingMode: str | None = None
    convertionMultiplier: Decimal | None = None


class PartnerUsageMeteringConfig(ApiModel):
    """Suger's org-level conversion for one marketplace; if enabled Suger converts records."""

    partner: str
    enableDimensionMapping: bool = False
    dimensionMappingV2: dict[str, list[DimensionMappingValue]] | None = None

    @field_validator("enableDimensionMapping", mode="before")
    @classmethod
    def _null_false(cls, value: Any) -> Any:
        return _none_as_empty(value, False)


class UsageMeteringConfigInfo(ApiModel):
    partnerUsageMeteringConfigs: list[PartnerUsageMeteringConfig] = Field(default_factory=list)

    @field_validator("partnerUsageMeteringConfigs", mode="before")
    @classmethod
    def _null_configs(cls, value: Any) -> Any:
        return _none_as_empty(value, [])

    def for_partner(self, partner: str) -> PartnerUsageMeteringConfig | None:
        return next((c for c in self.partnerUsageMeteringConfigs if c.partner == partner), None)


class UsageRecordReportInfo(ApiModel):
    """What Suger told the marketplace and what came back (``MeteringUsageRecordReportInfo``), only the
    fields reconciliation reads. ``status`` is kept verbatim (``CREATED``, ``SUCCESS``, ``FAILED``,
    ``INVOICED``, ``CANCELED``, ``DELETED``; ``usage_record_report_status.py``); the raw marketplace
    requests stay plain JSON. Fields not named here are dropped (the raw responses can be large)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    status: str | None = None
    partner: str | None = None
    usageRecordGroupIds: list[str] = Field(default_factory=list)
    reportedRecords: dict[str, Decimal] = Field(default_factory=dict)
    decimalParts: dict[str, Decimal] = Field(default_factory=dict)
    newDecimalParts: dict[str, Decimal] = Field(default_factory=dict)
    dimensionUnitPrice: dict[str, Decimal] = Field(default_factory=dict)
    startTime: OptionalTime = None
    endTime: OptionalTime = None
    message: str | None = None
    awsMeteringRequest: dict[str, Any] | None = None
    azureMeteringRequest: dict[str, Any] | None = None
    gcpMeteringRequest: dict[str, Any] | None = None

    @field_validator("usageRecordGroupIds", mode="before")
    @classmethod
    def _null_ids(cls, value: Any) -> Any:
        return _none_as_empty(value, [])

    @field_validator("reportedRecords", "decimalParts", "newDecimalParts", "dimensionUnitPrice", mode="before")
    @classmethod
    def _null_maps(cls, value: Any) -> Any:
        return _none_as_empty(value, {})


class UsageRecordReport(ApiModel):
    """One report of Suger's hourly job to a marketplace (``MeteringUsageRecordReport``)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str
    entitlementID: str | None = None
    entitlementTermID: str | None = None
    buyerID: str | None = None
    productID: str | None = None
    partner: str | None = None
    creationTime: OptionalTime = None
    info: UsageRecordReportInfo = Field(default_factory=UsageRecordReportInfo)

    @field_validator("info", mode="before")
    @classmethod
    def _null_info(cls, value: Any) -> Any:
        return _none_as_empty(value, {})


class UsageRecordAggregated(ApiModel):
    """One row of ``usageRecordReport/aggregate`` (``UsageRecordAggregated``): a period's total of one
    dimension."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    date: str
    dimensionKey: str
    quantity: Decimal


@dataclass(frozen=True)
class ReportResult:
    """Outcome of reporting one group: ``created`` (with Suger's stored group) or ``duplicate``
    (409).

    ``duplicate`` means Suger already holds a group with this id — possibly from our own earlier
    attempt whose response was lost — so it counts as success. ``message`` is Suger's 409 text.
    """

    outcome: Literal["created", "duplicate"]
    group: UsageRecordGroup | None = None
    message: str | None = None
