"""DuckDB access: the connection is closed (and the file lock released) even when the body raises."""

import subprocess
import sys
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from pydantic import SecretStr

from metronome_suger.core.linkage import reports_usage
from metronome_suger.orchestration.resources import SafeDuckDBResource
from metronome_suger.storage.db import Database, SchemaVersionError, bulk_insert, connect
from metronome_suger.storage.schema import SCHEMA_VERSION
from metronome_suger.storage.window import USABLE_LINK_SQL
from metronome_suger_tests.conftest import PostgresLedger


def _other_process_can_write(path: Path) -> subprocess.CompletedProcess:
    code = f"import duckdb; c = duckdb.connect({str(path)!r}); c.execute('CREATE TABLE IF NOT EXISTS t (x INT)'); c.close()"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_resource_closes_the_connection_when_the_body_raises(tmp_path: Path) -> None:
    db = tmp_path / "x.duckdb"
    resource = SafeDuckDBResource(database=str(db))
    held = None
    with pytest.raises(RuntimeError, match="boom"):
        with resource.get_connection() as conn:
            held = conn
            conn.execute("SELECT 1")
            raise RuntimeError("boom")
    with pytest.raises(duckdb.ConnectionException):
        held.execute("SELECT 1")
    proc = _other_process_can_write(db)
    assert proc.returncode == 0, proc.stderr


def test_a_held_lock_blocks_another_process(tmp_path: Path) -> None:
    """The control for the test above: while we hold the file, another writer cannot open it."""
    db = tmp_path / "x.duckdb"
    with connect(db):
        proc = _other_process_can_write(db)
    assert proc.returncode != 0 and "lock" in proc.stderr.lower()


def test_read_only_resource_cannot_write(tmp_path: Path) -> None:
    db = tmp_path / "x.duckdb"
    with connect(db):
        pass  # creates the file and the schema
    with SafeDuckDBResource(database=str(db), read_only=True).get_connection() as conn:
        assert conn.execute("SELECT count(*) FROM report_ledger").fetchone() == (0,)
        with pytest.raises(duckdb.Error):
            conn.execute("DELETE FROM report_ledger")


def test_bulk_insert_keeps_decimals_exact(tmp_path: Path) -> None:
    values = [Decimal("0.1"), Decimal("12345678901234567.0123456789"), Decimal("-3.3333333333")]
    with connect(tmp_path / "x.duckdb") as conn:
        conn.execute("CREATE TABLE d (i INTEGER, v DECIMAL(38,10))")
        assert bulk_insert(conn, "d", {"i": "INTEGER", "v": "DECIMAL(38,10)"}, enumerate(values)) == 3
        assert [r[0] for r in conn.execute("SELECT v FROM d ORDER BY i").fetchall()] == values
        assert conn.execute("SELECT sum(v) FROM d").fetchone()[0] == sum(values)


def test_exact_division_macro(tmp_path: Path) -> None:
    with connect(tmp_path / "x.duckdb") as conn:
        row = conn.execute("SELECT exact_div(1.50, 0.03), exact_div(1, 3), exact_div(250.5, 0.01)").fetchone()
    assert row == (Decimal("50"), Decimal("0.3333333333"), Decimal("25050"))


@pytest.mark.parametrize("status", ["ACTIVE", "PENDING_CANCEL", "CANCELLED", "SUSPENDED", "DELETED", "PENDING_START",
                                    "", None])
@pytest.mark.parametrize("end_time", [None, datetime(2026, 11, 25, 10, 20, tzinfo=timezone.utc)])
def test_usable_link_sql_agrees_with_the_core_rule(status: str | None, end_time: datetime | None) -> None:
    """The one usable-link rule has a Python and a SQL form; they must never drift apart."""
    conn = duckdb.connect()
    conn.execute("CREATE TABLE entitlements (status VARCHAR, end_time TIMESTAMPTZ)")
    conn.execute("INSERT INTO entitlements VALUES (?, ?)", [status, end_time])
    [(in_sql,)] = conn.execute(f"SELECT coalesce({USABLE_LINK_SQL}, false) FROM entitlements").fetchall()
    assert in_sql is reports_usage(status, end_time)


def test_a_database_from_before_versioning_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as old:  # what a release before the schema_version table created
        old.execute("""CREATE TABLE invoice_snapshots (
            window_start TIMESTAMPTZ NOT NULL, window_end TIMESTAMPTZ NOT NULL, customer_id VARCHAR NOT NULL,
            invoice_id VARCHAR NOT NULL, invoice_type VARCHAR, status VARCHAR, credit_type_id VARCHAR,
            credit_type_name VARCHAR, period_start TIMESTAMPTZ, period_end TIMESTAMPTZ,
            total_cents DECIMAL(38,10), fetched_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (window_start, customer_id, invoice_id))""")
        old.execute("INSERT INTO invoice_snapshots (window_start, window_end, customer_id, invoice_id, fetched_at) "
                    "VALUES ('2026-11-01', '2026-11-01 01:00', 'c-1', 'inv-1', now())")
    with connect(path) as conn:
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone() == (SCHEMA_VERSION,)
        assert conn.execute("SELECT invoice_id, history_key FROM invoice_snapshots").fetchall() == [("inv-1", None)]
    with connect(path) as conn:  # a second open applies nothing twice
        assert conn.execute("SELECT count(*) FROM schema_version").fetchone() == (SCHEMA_VERSION,)


def test_a_database_of_a_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.duckdb"
    with connect(path) as conn:
        conn.execute("INSERT INTO schema_version VALUES (?, now())", [SCHEMA_VERSION + 1])
    with pytest.raises(SchemaVersionError, match=f"schema version {SCHEMA_VERSION + 1}, newer than this"):
        with connect(path):
            pass


_OPEN_AT_ONCE = """
import sys
from pydantic import SecretStr
from metronome_suger.storage.db import Database, connect
print("ready", flush=True)
sys.stdin.readline()  # every process is up and imported: all open the database together
with connect(Database(sys.argv[1], SecretStr(sys.argv[2]))) as conn:
    conn.execute("SELECT 1")
"""


def test_eight_processes_migrate_a_new_postgres_database_at_once(postgres_ledger: PostgresLedger) -> None:
    """Separate pods start against an empty ledger together: every one opens it (PostgreSQL alone would answer
    the losers' CREATE TABLE with "type ... already exists"), and each migration is applied exactly once."""
    procs = [subprocess.Popen([sys.executable, "-c", _OPEN_AT_ONCE, postgres_ledger.url, postgres_ledger.password],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(8)]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
    with connect(Database(postgres_ledger.url, SecretStr(postgres_ledger.password))) as conn:
        assert conn.execute("SELECT list(version ORDER BY version) FROM schema_version").fetchone() == (
            list(range(1, SCHEMA_VERSION + 1)),)
