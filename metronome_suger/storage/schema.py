"""The tables, as numbered migrations. Snapshot tables keep history (one row set per ``snapshot_at``).

``schema_version`` records the migrations applied; ``storage.db.ensure_schema`` applies the missing ones in
order and refuses a database made by a newer version. Migration 1 is idempotent (``IF NOT EXISTS``)
because databases made before versioning already hold its tables.
"""

VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)"""

_TABLES: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS customers (
        snapshot_at TIMESTAMPTZ NOT NULL, customer_id VARCHAR NOT NULL, name VARCHAR,
        external_id VARCHAR, archived BOOLEAN NOT NULL,
        PRIMARY KEY (snapshot_at, customer_id))""",
    """CREATE TABLE IF NOT EXISTS billable_metrics (
        snapshot_at TIMESTAMPTZ NOT NULL, metric_id VARCHAR NOT NULL, name VARCHAR NOT NULL,
        aggregation_type VARCHAR, archived BOOLEAN NOT NULL, whitelisted BOOLEAN NOT NULL,
        PRIMARY KEY (snapshot_at, metric_id))""",
    """CREATE TABLE IF NOT EXISTS entitlements (
        snapshot_at TIMESTAMPTZ NOT NULL, metronome_customer_id VARCHAR NOT NULL,
        buyer_id VARCHAR, entitlement_id VARCHAR NOT NULL, partner VARCHAR NOT NULL,
        status VARCHAR, start_time TIMESTAMPTZ, end_time TIMESTAMPTZ, term_id VARCHAR,
        link_source VARCHAR NOT NULL, dimensions_problem VARCHAR,
        PRIMARY KEY (snapshot_at, metronome_customer_id, entitlement_id))""",
    """CREATE TABLE IF NOT EXISTS entitlement_dimensions (
        snapshot_at TIMESTAMPTZ NOT NULL, entitlement_id VARCHAR NOT NULL,
        dimension_key VARCHAR NOT NULL, dimension_name VARCHAR, rate DECIMAL(38,10))""",
    """CREATE TABLE IF NOT EXISTS usage (
        window_start TIMESTAMPTZ NOT NULL, window_end TIMESTAMPTZ NOT NULL,
        customer_id VARCHAR NOT NULL, metric_id VARCHAR NOT NULL, metric_name VARCHAR,
        value DECIMAL(38,10), value_was_null BOOLEAN NOT NULL, fetched_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (window_start, customer_id, metric_id))""",
    """CREATE TABLE IF NOT EXISTS invoice_snapshots (
        window_start TIMESTAMPTZ NOT NULL, window_end TIMESTAMPTZ NOT NULL,
        customer_id VARCHAR NOT NULL, invoice_id VARCHAR NOT NULL, invoice_type VARCHAR,
        status VARCHAR, credit_type_id VARCHAR, credit_type_name VARCHAR,
        period_start TIMESTAMPTZ, period_end TIMESTAMPTZ, total_cents DECIMAL(38,10),
        fetched_at TIMESTAMPTZ NOT NULL, regenerated_from_invoice_id VARCHAR, history_key VARCHAR,
        PRIMARY KEY (window_start, customer_id, invoice_id))""",
    """CREATE TABLE IF NOT EXISTS invoice_high_water (
        history_key VARCHAR NOT NULL, customer_id VARCHAR NOT NULL, window_start TIMESTAMPTZ NOT NULL,
        invoice_id VARCHAR, period_start TIMESTAMPTZ, observed_cents DECIMAL(38,10) NOT NULL,
        high_water_cents DECIMAL(38,10) NOT NULL, increase_cents DECIMAL(38,10) NOT NULL,
        PRIMARY KEY (history_key, window_start))""",
    """CREATE TABLE IF NOT EXISTS usage_records (
        record_group_id VARCHAR NOT NULL, revision INTEGER NOT NULL,
        window_start TIMESTAMPTZ NOT NULL, window_end TIMESTAMPTZ NOT NULL,
        entitlement_id VARCHAR NOT NULL, customer_id VARCHAR NOT NULL, partner VARCHAR NOT NULL,
        source_key VARCHAR NOT NULL, origin_quantity DECIMAL(38,10) NOT NULL,
        dimension_key VARCHAR NOT NULL, mapping_mode VARCHAR NOT NULL, multiplier DECIMAL(38,10),
        rate DECIMAL(38,10), quantity DECIMAL(38,10) NOT NULL, computed_at TIMESTAMPTZ NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS report_ledger (
        record_group_id VARCHAR PRIMARY KEY, revision INTEGER NOT NULL,
        window_start TIMESTAMPTZ NOT NULL, window_end TIMESTAMPTZ NOT NULL,
        entitlement_id VARCHAR NOT NULL, customer_id VARCHAR NOT NULL, partner VARCHAR NOT NULL,
        timestamp TIMESTAMPTZ NOT NULL, records JSON NOT NULL, dollars DECIMAL(38,10),
        status VARCHAR NOT NULL CHECK (status IN ('pending','sent','accepted','rejected','expired')),
        suger_status VARCHAR, message VARCHAR, attempts INTEGER NOT NULL DEFAULT 0,
        retries INTEGER NOT NULL DEFAULT 0,
        created_at TIMESTAMPTZ NOT NULL, sent_at TIMESTAMPTZ, answered_at TIMESTAMPTZ,
        updated_at TIMESTAMPTZ NOT NULL)""",
    # The records of each group, one row per dimension: what was (or will be) sent, summable in SQL.
    """CREATE TABLE IF NOT EXISTS report_lines (
        record_group_id VARCHAR NOT NULL, dimension_key VARCHAR NOT NULL,
        quantity DECIMAL(38,10) NOT NULL, PRIMARY KEY (record_group_id, dimension_key))""",
    # Converted totals that fell after they were reported: recorded, never sent as a negative.
    """CREATE TABLE IF NOT EXISTS over_reported (
        window_start TIMESTAMPTZ NOT NULL, entitlement_id VARCHAR NOT NULL,
        dimension_key VARCHAR NOT NULL, reported DECIMAL(38,10) NOT NULL,
        current DECIMAL(38,10) NOT NULL, observed_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (window_start, entitlement_id, dimension_key))""",
)

# Columns added after the first release: a database made by an older version is upgraded in place.
_LINEAGE_AND_DIMENSIONS: tuple[str, ...] = (
    # dimensions_problem: why an entitlement's dimension list is incomplete (mapping_completeness blocks it).
    "ALTER TABLE entitlements ADD COLUMN IF NOT EXISTS dimensions_problem VARCHAR",
    # regenerated_from_invoice_id: the invoice a re-issue replaces (the period policy follows that lineage).
    "ALTER TABLE invoice_snapshots ADD COLUMN IF NOT EXISTS regenerated_from_invoice_id VARCHAR",
    # history_key: the history a tracked invoice's total went to (NULL: not tracked); lineage continues it.
    "ALTER TABLE invoice_snapshots ADD COLUMN IF NOT EXISTS history_key VARCHAR",
)

# Who is writing which window (storage/claims.py): exactly-once across processes sharing only the database.
_CLAIMS: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS window_claims (
        claim_key VARCHAR PRIMARY KEY, holder VARCHAR, lease_until TIMESTAMPTZ NOT NULL)""",
)

# What each hourly run saw of the earlier hours of its UTC day (Metronome answers whole days): per window, the
# values that rose or fell since that window's own run. The late-usage sensor reads it instead of the day again.
_LATE_USAGE: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS late_usage_observed (
        window_start TIMESTAMPTZ PRIMARY KEY, rose INTEGER NOT NULL, fell INTEGER NOT NULL, digest VARCHAR,
        observed_at TIMESTAMPTZ NOT NULL)""",
)

# What Suger told each marketplace (``suger_usage_record_reports``): its usage record reports, their lines per
# dimension, the groups each carried, the groups of other senders (Suger's own Metronome integration) found in
# them, each report's status history, and per ledger group the marketplace's outcome.
_MARKETPLACE_REPORTS: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS marketplace_reports (
        report_id VARCHAR PRIMARY KEY, day DATE NOT NULL, entitlement_id VARCHAR, partner VARCHAR,
        status VARCHAR, message VARCHAR, creation_time TIMESTAMPTZ, start_time TIMESTAMPTZ,
        end_time TIMESTAMPTZ, request JSON, first_seen_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS marketplace_report_history (
        report_id VARCHAR NOT NULL, status VARCHAR, message VARCHAR, observed_at TIMESTAMPTZ NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS marketplace_report_lines (
        report_id VARCHAR NOT NULL, dimension_key VARCHAR NOT NULL, reported DECIMAL(38,10) NOT NULL,
        told DECIMAL(38,10), decimal_before DECIMAL(38,10), decimal_after DECIMAL(38,10),
        unit_price DECIMAL(38,10), PRIMARY KEY (report_id, dimension_key))""",
    """CREATE TABLE IF NOT EXISTS marketplace_report_groups (
        report_id VARCHAR NOT NULL, record_group_id VARCHAR NOT NULL, PRIMARY KEY (report_id, record_group_id))""",
    """CREATE TABLE IF NOT EXISTS foreign_group_lines (
        record_group_id VARCHAR NOT NULL, source VARCHAR NOT NULL, dimension_key VARCHAR NOT NULL,
        quantity DECIMAL(38,10) NOT NULL, PRIMARY KEY (record_group_id, dimension_key))""",
    "ALTER TABLE report_ledger ADD COLUMN IF NOT EXISTS marketplace_status VARCHAR",
    "ALTER TABLE report_ledger ADD COLUMN IF NOT EXISTS marketplace_report_id VARCHAR",
    "ALTER TABLE report_ledger ADD COLUMN IF NOT EXISTS marketplace_message VARCHAR",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    _TABLES, _LINEAGE_AND_DIMENSIONS, _CLAIMS, _LATE_USAGE, _MARKETPLACE_REPORTS)
SCHEMA_VERSION = len(MIGRATIONS)

# Session macros, defined on every connection (a PostgreSQL ledger cannot store a DuckDB macro).
MACROS: tuple[str, ...] = (
    "CREATE OR REPLACE TEMP MACRO exact_div(a, b) AS "
    "CAST(CAST(CAST(a AS DECIMAL(38,10)) * 10000000000 AS HUGEINT) * 10000000000 "
    "// CAST(CAST(b AS DECIMAL(38,10)) * 10000000000 AS HUGEINT) AS DECIMAL(38,0)) "
    "* CAST(0.0000000001 AS DECIMAL(38,10))",
)
