"""Pydantic models for the Metronome responses this project reads.

Field names are Metronome's own. Money is ``Decimal`` in the invoice's credit-type units — for USD
that is **cents** (credit type "USD (cents)"), exactly as returned; converting to dollars is the
caller's job. Unknown fields are kept (``extra="allow"``) because Metronome adds fields without
notice.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import Field, computed_field

from metronome_suger.clients.types import ApiModel, UtcDatetime

__all__ = [
    "USD_CREDIT_TYPE_ID",
    "BillableMetric",
    "CorrectionRecord",
    "CreditType",
    "Customer",
    "Invoice",
    "LineItem",
    "UsageRow",
]

USD_CREDIT_TYPE_ID = "2714e483-4ff1-48e4-9e25-ac732e8f24f2"
"""Metronome's built-in "USD (cents)" credit type: amounts in this unit are US cents."""


class Customer(ApiModel):
    """A Metronome customer (``CustomerDetail``)."""

    id: str
    name: str
    external_id: str | None = None
    ingest_aliases: list[str] = Field(default_factory=list)
    archived_at: UtcDatetime | None = None
    created_at: UtcDatetime | None = None
    updated_at: UtcDatetime | None = None
    custom_fields: dict[str, Any] = Field(default_factory=dict)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def archived(self) -> bool:
        return self.archived_at is not None


class BillableMetric(ApiModel):
    """A billable metric; Metronome has no boolean for archival, only ``archived_at``."""

    id: str
    name: str
    aggregation_type: str | None = None
    aggregation_key: str | None = None
    group_keys: list[list[str]] | None = None
    archived_at: UtcDatetime | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def archived(self) -> bool:
        return self.archived_at is not None


class UsageRow(ApiModel):
    """One ``POST /v1/usage`` aggregate: a customer × metric × window value (``None`` = no data)."""

    customer_id: str
    billable_metric_id: str
    billable_metric_name: str
    start_timestamp: UtcDatetime
    end_timestamp: UtcDatetime
    value: Decimal | None = None
    groups: dict[str, Decimal | None] | None = None


class CreditType(ApiModel):
    """The unit of an amount (``USD_CREDIT_TYPE_ID`` → US cents)."""

    id: str
    name: str | None = None


class LineItem(ApiModel):
    """An invoice line; ``total``/``unit_price`` are in ``credit_type`` units (cents for USD)."""

    name: str
    total: Decimal
    credit_type: CreditType | None = None
    type: str | None = None
    quantity: Decimal | None = None
    unit_price: Decimal | None = None
    product_id: str | None = None
    product_type: str | None = None
    starting_at: UtcDatetime | None = None
    ending_before: UtcDatetime | None = None
    group_key: str | None = None
    group_value: str | None = None
    presentation_group_values: dict[str, str | None] | None = None
    pricing_group_values: dict[str, str] | None = None


class CorrectionRecord(ApiModel):
    """What a correction invoice corrects (present on correction invoices only)."""

    corrected_invoice_id: str
    memo: str | None = None
    reason: str | None = None


class Invoice(ApiModel):
    """A Metronome invoice; ``total`` is in ``credit_type`` units (cents for USD).

    Lineage (SDK ``metronome/types/v1/customers/invoice.py``): a re-issued (regenerated) invoice
    names the invoice it replaces in ``regenerated_from_invoice_id``; ``correction_record`` and
    ``created_at`` are present on correction invoices only.
    """

    id: str
    customer_id: str
    credit_type: CreditType
    status: str
    total: Decimal
    type: str | None = None
    subtotal: Decimal | None = None
    start_timestamp: UtcDatetime | None = None
    end_timestamp: UtcDatetime | None = None
    issued_at: UtcDatetime | None = None
    created_at: UtcDatetime | None = None
    contract_id: str | None = None
    regenerated_from_invoice_id: str | None = None
    correction_record: CorrectionRecord | None = None
    line_items: list[LineItem] = Field(default_factory=list)
    external_invoice: dict[str, Any] | None = None

    @property
    def is_usd(self) -> bool:
        return self.credit_type.id == USD_CREDIT_TYPE_ID


