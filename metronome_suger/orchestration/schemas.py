"""What each asset writes, for the Dagster UI: the DuckDB table's columns with descriptions
(``dagster/column_schema``), its name (``dagster/table_name``), the asset's owners and tags. A test compares
every column here with the table the schema creates, so the two cannot drift."""

from typing import Any

import dagster as dg

from metronome_suger.orchestration.keys import (
    CUSTOMERS,
    ENTITLEMENTS,
    INVOICES,
    METRICS,
    RECORDS,
    REPORT,
    REPORTS,
    USAGE,
)

TS = "TIMESTAMP WITH TIME ZONE"
QTY = "DECIMAL(38,10)"
_WINDOW = [("window_start", TS, "start of the UTC window (hour, or day in amount_daily)"),
           ("window_end", TS, "end of the window, exclusive")]
_SNAPSHOT = ("snapshot_at", TS, "when this snapshot was taken (every run adds one; history is kept)")

# table -> columns (name, DuckDB type, description), in the table's column order.
TABLES: dict[str, list[tuple[str, str, str]]] = {
    "customers": [
        _SNAPSHOT, ("customer_id", "VARCHAR", "Metronome customer id"), ("name", "VARCHAR", "customer name"),
        ("external_id", "VARCHAR", "the customer's ingest alias (external id), if any"),
        ("archived", "BOOLEAN", "archived in Metronome")],
    "billable_metrics": [
        _SNAPSHOT, ("metric_id", "VARCHAR", "Metronome billable metric id"), ("name", "VARCHAR", "metric name"),
        ("aggregation_type", "VARCHAR", "SUM, COUNT, MAX, ..."), ("archived", "BOOLEAN", "archived in Metronome"),
        ("whitelisted", "BOOLEAN", "reportable under billable_metric_whitelist")],
    "entitlements": [
        _SNAPSHOT, ("metronome_customer_id", "VARCHAR", "the linked Metronome customer"),
        ("buyer_id", "VARCHAR", "Suger buyer"), ("entitlement_id", "VARCHAR", "Suger entitlement reported to"),
        ("partner", "VARCHAR", "marketplace: AWS, AZURE or GCP"), ("status", "VARCHAR", "entitlement status"),
        ("start_time", TS, "entitlement start"), ("end_time", TS, "entitlement end or cancellation"),
        ("term_id", "VARCHAR", "current entitlement term"),
        ("link_source", "VARCHAR", "how the link was found: Suger's buyer link or customer_links override"),
        ("dimensions_problem", "VARCHAR", "why the entitlement's dimension list is incomplete (blocks its windows)")],
    "usage": [
        *_WINDOW, ("customer_id", "VARCHAR", "Metronome customer id"),
        ("metric_id", "VARCHAR", "billable metric id"), ("metric_name", "VARCHAR", "billable metric name"),
        ("value", QTY, "the metric's value in the window (null stored as 0)"),
        ("value_was_null", "BOOLEAN", "Metronome answered null"),
        ("fetched_at", TS, "when the run read it (the pipeline clock)")],
    "invoice_snapshots": [
        *_WINDOW, ("customer_id", "VARCHAR", "Metronome customer id"), ("invoice_id", "VARCHAR", "invoice id"),
        ("invoice_type", "VARCHAR", "USAGE, SCHEDULED, ..."), ("status", "VARCHAR", "DRAFT, FINALIZED, VOID"),
        ("credit_type_id", "VARCHAR", "credit type (only USD is reported)"),
        ("credit_type_name", "VARCHAR", "credit type name"), ("period_start", TS, "billing period start"),
        ("period_end", TS, "billing period end"), ("total_cents", QTY, "invoice total in cents"),
        ("fetched_at", TS, "when the run read it"),
        ("regenerated_from_invoice_id", "VARCHAR", "the invoice this one re-issues, if any"),
        ("history_key", "VARCHAR", "the high-water key (billing period or invoice lineage)")],
    "usage_records": [
        ("record_group_id", "VARCHAR", "deterministic UUID of the group (same window, entitlement, revision)"),
        ("revision", "INTEGER", "0 for the first report of the window, +1 per later positive difference"),
        *_WINDOW, ("entitlement_id", "VARCHAR", "Suger entitlement"), ("customer_id", "VARCHAR", "Metronome customer"),
        ("partner", "VARCHAR", "marketplace"), ("source_key", "VARCHAR", "billable metric (or 'metronome' amount)"),
        ("origin_quantity", QTY, "the Metronome value (or dollars) converted"),
        ("dimension_key", "VARCHAR", "marketplace dimension reported to"),
        ("mapping_mode", "VARCHAR", "QUANTITY or AMOUNT (dimension_conversion)"),
        ("multiplier", QTY, "QUANTITY mode factor"), ("rate", QTY, "AMOUNT mode: the dimension's price"),
        ("quantity", QTY, "converted quantity"), ("computed_at", TS, "when the run computed it")],
    "report_ledger": [
        ("record_group_id", "VARCHAR", "deterministic UUID sent to Suger as the group id"),
        ("revision", "INTEGER", "0, then +1 per later positive difference of the window"),
        *_WINDOW, ("entitlement_id", "VARCHAR", "Suger entitlement"), ("customer_id", "VARCHAR", "Metronome customer"),
        ("partner", "VARCHAR", "marketplace"), ("timestamp", TS, "the group's usage timestamp"),
        ("records", "JSON", "dimension -> quantity, as sent"), ("dollars", QTY, "quantity x the dimension's rate"),
        ("status", "VARCHAR", "pending, sent, accepted, rejected or expired (core/ledger.py)"),
        ("suger_status", "VARCHAR", "Suger's last polled status"), ("message", "VARCHAR", "Suger's or our message"),
        ("attempts", "INTEGER", "POSTs answered"), ("retries", "INTEGER", "calls of Suger's retry endpoint"),
        ("created_at", TS, "computed"), ("sent_at", TS, "handed to Suger"), ("answered_at", TS, "Suger answered"),
        ("updated_at", TS, "last change"),
        ("marketplace_status", "VARCHAR", "billed, failed or in_flight, from Suger's usage record reports"),
        ("marketplace_report_id", "VARCHAR", "the report that decided it"),
        ("marketplace_message", "VARCHAR", "the marketplace's message (a refusal's reason)")],
    "marketplace_reports": [
        ("report_id", "VARCHAR", "Suger usage record report id"),
        ("day", "DATE", "UTC day of the usage it carries (its first group's hour)"),
        ("entitlement_id", "VARCHAR", "Suger entitlement"), ("partner", "VARCHAR", "marketplace"),
        ("status", "VARCHAR", "CREATED, SUCCESS, FAILED, INVOICED, CANCELED or DELETED"),
        ("message", "VARCHAR", "the marketplace's message"), ("creation_time", TS, "when Suger made the call"),
        ("start_time", TS, "start of the usage carried"), ("end_time", TS, "end of the usage carried"),
        ("request", "JSON", "the raw AWS / Azure / GCP metering request"),
        ("first_seen_at", TS, "first read"), ("updated_at", TS, "last read")],
}

# asset -> the table its rows land in
ASSET_TABLES = {CUSTOMERS: "customers", METRICS: "billable_metrics", ENTITLEMENTS: "entitlements",
                USAGE: "usage", INVOICES: "invoice_snapshots", RECORDS: "usage_records", REPORT: "report_ledger",
                REPORTS: "marketplace_reports"}
OWNERS = ["team:billing"]


def table_metadata(asset: str) -> dict[str, Any]:
    """Definition-time metadata of an asset: its table's name and column schema."""
    table = ASSET_TABLES[asset]
    columns = [dg.TableColumn(name, kind, description=text) for name, kind, text in TABLES[table]]
    return {"dagster/table_name": table, "dagster/column_schema": dg.TableSchema(columns=columns)}


def asset_options(asset: str, *, layer: str) -> dict[str, Any]:
    """Keyword arguments for ``dg.asset``: metadata, owners and tags (``layer``: source, conversion, report)."""
    return {"metadata": table_metadata(asset), "owners": OWNERS,
            "tags": {"layer": layer, "storage": "duckdb"}}
