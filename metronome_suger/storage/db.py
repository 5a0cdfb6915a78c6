"""Database access that always closes (the file lock must not outlive a failed step), the schema, and the
two backends behind one DuckDB connection: a DuckDB file (default) or PostgreSQL attached through DuckDB."""

import json
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import duckdb
from pydantic import SecretStr
from tenacity import retry, retry_if_exception, stop_after_delay, wait_random_exponential

from metronome_suger.storage.postgres import CATALOG, display, open_postgres
from metronome_suger.storage.schema import MACROS, MIGRATIONS, SCHEMA_VERSION, VERSION_TABLE

QTY = "DECIMAL(38,10)"
T = TypeVar("T")
# How a step opens the database: ``Connect()`` for a writer, ``Connect(read_only=True)`` for a reader.
Connect = Callable[..., AbstractContextManager[duckdb.DuckDBPyConnection]]


def is_lock_error(exc: BaseException) -> bool:
    """Another writer is in the way: a process holds the DuckDB file, or a concurrent PostgreSQL transaction
    changed the same row (a serialization conflict). Worth waiting for, or skipping a tick."""
    text = str(exc).lower()
    return isinstance(exc, duckdb.Error) and (
        (isinstance(exc, duckdb.IOException) and "lock" in text) or "could not serialize access" in text)


@dataclass(frozen=True)
class Database:
    """Where the state is: a DuckDB file path or a ``postgresql://`` URL (no password), and the password."""

    url: str
    password: SecretStr | None = None

    @property
    def is_postgres(self) -> bool:
        return self.url.startswith(("postgresql://", "postgres://"))

    def __str__(self) -> str:
        return display(self.url) if self.is_postgres else self.url


def retrying_conflicts(fn: Callable[[], T], within: float = 60.0) -> T:
    """``fn()``, called again (bounded by ``within`` seconds, with random backoff) while another writer is in
    the way. For a whole transaction: PostgreSQL's answer to a serialization conflict is to retry it, and the
    retry's fresh snapshot sees the other writer's rows."""
    return retry(
        retry=retry_if_exception(is_lock_error),
        wait=wait_random_exponential(multiplier=0.1, max=5),
        stop=stop_after_delay(within),
        reraise=True,
    )(fn)()


def _open(path: Path, read_only: bool, lock_timeout: float) -> duckdb.DuckDBPyConnection:
    """Another process may hold the file lock for a moment (a run, a sensor): wait for it, bounded."""
    return retrying_conflicts(lambda: duckdb.connect(str(path), read_only=read_only), lock_timeout)


def sql_list(values: Sequence[str]) -> str:
    """A SQL list literal of our own constants (never of input: no quoting is done beyond this)."""
    if any("'" in v for v in values):
        raise ValueError(f"not a constant: {values!r}")
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


# Held until the migration's transaction ends; the key is arbitrary, fixed, and ours ("mesu" in ASCII).
_MIGRATION_LOCK = f"CALL postgres_execute('{CATALOG}', 'SELECT pg_advisory_xact_lock(1835365237)')"
_CURRENT: set[tuple[int, str]] = set()  # PostgreSQL databases this process has brought to SCHEMA_VERSION


@contextmanager
def connect(
    where: "Database | str | Path", *, read_only: bool = False, lock_timeout: float = 120.0
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open, ensure the schema (writers only), yield, and close even when the body raises."""
    db = where if isinstance(where, Database) else Database(str(where))
    if db.is_postgres:
        conn = open_postgres(db.url, db.password, read_only=read_only)
    else:
        path = Path(db.url)
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
        conn = _open(path, read_only, lock_timeout)
    try:
        if not read_only and (os.getpid(), db.url) not in _CURRENT:
            ensure_schema(conn, locked=db.is_postgres)
            if db.is_postgres:  # a server database outlives this process's connections: check it once
                _CURRENT.add((os.getpid(), db.url))
        for macro in MACROS:
            conn.execute(macro)
        conn.execute("SET TimeZone = 'UTC'")
        yield conn
    finally:
        conn.close()


class SchemaVersionError(RuntimeError):
    """The database was written by a newer version of metronome-suger than this one."""


def schema_version(conn: duckdb.DuckDBPyConnection) -> int:
    conn.execute(VERSION_TABLE)
    return int(fetch_one(conn, "SELECT coalesce(max(version), 0) FROM schema_version")[0])


def ensure_schema(conn: duckdb.DuckDBPyConnection, *, locked: bool = False, attempts: int = 10) -> None:
    """Apply the migrations this database lacks, each in its own transaction; refuse a newer database.

    Many processes may open a new PostgreSQL database at once (``locked``): each migration transaction first
    takes a transaction-level advisory lock, so no two run their DDL together (PostgreSQL answers concurrent
    ``CREATE TABLE IF NOT EXISTS`` with "type ... already exists"). The extension's transactions are REPEATABLE
    READ, whose snapshot predates the wait for the lock, so a waiter may still conflict with the winner's rows:
    it rolls back and retries with a fresh snapshot, which finds the work done."""
    for attempt in range(attempts):
        try:
            return _migrate(conn, locked)
        except duckdb.Error as exc:
            text = str(exc).lower()
            if attempt == attempts - 1 or not (
                    is_lock_error(exc) or "duplicate key" in text or "already exists" in text):
                raise
            if locked:
                conn.execute("CALL pg_clear_cache()")  # the winner's tables, not this process's stale view
            time.sleep(random.uniform(0, 0.05 * (attempt + 1)))  # backoff between retries, not synchronization


@contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """One transaction around the body: committed when it returns, rolled back when it raises. Also one
    commit instead of one per statement (each commit of a DuckDB file writes its WAL)."""
    conn.begin()
    try:
        yield conn
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


def _migrate(conn: duckdb.DuckDBPyConnection, locked: bool) -> None:
    with transaction(conn):
        if locked:
            conn.execute(_MIGRATION_LOCK)
        current = schema_version(conn)
    if current > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"the database is at schema version {current}, newer than this metronome-suger supports "
            f"({SCHEMA_VERSION}): upgrade metronome-suger, or point storage.url at another database")
    for version in range(current + 1, SCHEMA_VERSION + 1):
        with transaction(conn):
            if locked:
                conn.execute(_MIGRATION_LOCK)
            for statement in MIGRATIONS[version - 1]:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version VALUES (?, now())", [version])


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


@contextmanager
def ndjson_file(names: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterator[tuple[str, int]]:
    """``rows`` written to a temporary NDJSON file, yielding (path, row count); deleted on exit. Lets a slow
    producer (an API read) stream to disk before any connection is opened (no list of all rows in memory)."""
    count = 0
    fd, tmp = tempfile.mkstemp(suffix=".ndjson", prefix="metronome_suger_")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps({n: _jsonable(v) for n, v in zip(names, row, strict=True)}))
                out.write("\n")
                count += 1
        yield tmp, count
    finally:
        os.unlink(tmp)


def insert_ndjson(conn: duckdb.DuckDBPyConnection, table: str, columns: dict[str, str], path: str) -> None:
    """One set-based insert of an :func:`ndjson_file` into ``table``, each column cast by DuckDB."""
    spec = ", ".join(f"'{n}': 'VARCHAR'" for n in columns)
    select = ", ".join(f"CAST({n} AS {t}) AS {n}" for n, t in columns.items())
    conn.execute(f"INSERT INTO {table} ({', '.join(columns)}) SELECT {select} "
                 f"FROM read_json(?, format='newline_delimited', columns={{{spec}}})", [path])


def bulk_insert(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    columns: dict[str, str],
    rows: Iterable[Sequence[Any]],
) -> int:
    """Insert many rows in one set-based statement via a temporary NDJSON file.

    Decimals travel as strings and are cast by DuckDB, so no value passes through a float.
    """
    with ndjson_file(list(columns), rows) as (path, count):
        if count:
            insert_ndjson(conn, table, columns, path)
    return count


def json_rows(columns: dict[str, str], param: str = "?") -> str:
    """SQL of a relation whose rows are bound as ONE parameter, the JSON text of :func:`json_param`. A Python
    list bound as ``?::T[]`` costs DuckDB 1.5 an import attempt per element (seconds per 10,000 ids); one JSON
    text is parsed by DuckDB itself. Values travel as strings and are cast, so no decimal passes a float.
    ``param`` is the placeholder (``$name`` in a statement with named parameters)."""
    spec = json.dumps([{n: "VARCHAR" for n in columns}])
    select = ", ".join(f"CAST({n} AS {t}) AS {n}" for n, t in columns.items())
    return f"(SELECT {select} FROM (SELECT unnest(from_json(CAST({param} AS VARCHAR), '{spec}'), recursive := true)))"


def json_param(columns: Iterable[str], rows: Iterable[Sequence[Any]]) -> str:
    """The parameter of :func:`json_rows`."""
    names = list(columns)
    return json.dumps([{n: _jsonable(v) for n, v in zip(names, row, strict=True)} for row in rows])


def json_list(sql_type: str) -> str:
    """SQL of a list bound as one JSON text parameter (``json.dumps(values)``): see :func:`json_rows`."""
    return f"from_json(CAST(? AS VARCHAR), '[\"{sql_type}\"]')"


def fetch_one(
    conn: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | dict[str, Any] = ()
) -> tuple[Any, ...]:
    """The one row of an aggregate query (which always has one)."""
    # Fetched to the end: on PostgreSQL an unfinished read keeps its transaction (and row locks) open.
    rows = conn.execute(sql, params if isinstance(params, dict) else list(params)).fetchall()
    row = rows[0] if rows else None
    if row is None:
        raise LookupError(f"no row from: {sql}")
    return row


def table_markdown(conn: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = (), limit: int = 20) -> str:
    """A small markdown preview of a query, for Dagster metadata."""
    cur = conn.execute(f"SELECT * FROM ({sql}) LIMIT {int(limit)}", list(params))
    headers = [d[0] for d in cur.description]
    rows = cur.fetchall()
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
