"""DuckDB access that always closes (the file lock must not outlive a failed step) and the schema."""

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
from tenacity import retry, retry_if_exception, stop_after_delay, wait_random_exponential

from metronome_suger.storage.schema import MACROS, MIGRATIONS, SCHEMA_VERSION, VERSION_TABLE

QTY = "DECIMAL(38,10)"
# How a step opens the database: ``Connect()`` for a writer, ``Connect(read_only=True)`` for a reader.
Connect = Callable[..., AbstractContextManager[duckdb.DuckDBPyConnection]]


def is_lock_error(exc: BaseException) -> bool:
    """Another process holds the DuckDB file (a run, a sensor): worth waiting for, or skipping a tick."""
    return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()


def _open(path: Path, read_only: bool, lock_timeout: float) -> duckdb.DuckDBPyConnection:
    """Another process may hold the file lock for a moment (a run, a sensor): wait for it, bounded."""
    opener = retry(
        retry=retry_if_exception(is_lock_error),
        wait=wait_random_exponential(multiplier=0.1, max=5),
        stop=stop_after_delay(lock_timeout),
        reraise=True,
    )(duckdb.connect)
    return opener(str(path), read_only=read_only)


def sql_list(values: Sequence[str]) -> str:
    """A SQL list literal of our own constants (never of input: no quoting is done beyond this)."""
    if any("'" in v for v in values):
        raise ValueError(f"not a constant: {values!r}")
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


@contextmanager
def connect(
    path: str | Path, *, read_only: bool = False, lock_timeout: float = 120.0
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open, ensure the schema (writers only), yield, and close even when the body raises."""
    path = Path(path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    conn = _open(path, read_only, lock_timeout)
    try:
        if not read_only:
            ensure_schema(conn)
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
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    """Apply the migrations this database lacks, each in its own transaction; refuse a newer database."""
    current = schema_version(conn)
    if current > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"the database is at schema version {current}, newer than this metronome-suger supports "
            f"({SCHEMA_VERSION}): upgrade metronome-suger, or point storage.url at another database")
    for version in range(current + 1, SCHEMA_VERSION + 1):
        conn.begin()
        try:
            for statement in MIGRATIONS[version - 1]:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version VALUES (?, now())", [version])
            conn.commit()
        except BaseException:
            conn.rollback()
            raise


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def bulk_insert(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    columns: dict[str, str],
    rows: Iterable[Sequence[Any]],
) -> int:
    """Insert many rows in one set-based statement via a temporary NDJSON file.

    Decimals travel as strings and are cast by DuckDB, so no value passes through a float.
    """
    names = list(columns)
    count = 0
    fd, tmp = tempfile.mkstemp(suffix=".ndjson", prefix="metronome_suger_")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps({n: _jsonable(v) for n, v in zip(names, row, strict=True)}))
                out.write("\n")
                count += 1
        if count:
            spec = ", ".join(f"'{n}': 'VARCHAR'" for n in names)
            select = ", ".join(f"CAST({n} AS {t}) AS {n}" for n, t in columns.items())
            conn.execute(
                f"INSERT INTO {table} ({', '.join(names)}) SELECT {select} "
                f"FROM read_json(?, format='newline_delimited', columns={{{spec}}})",
                [tmp],
            )
    finally:
        os.unlink(tmp)
    return count


def fetch_one(conn: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...]:
    """The one row of an aggregate query (which always has one)."""
    row = conn.execute(sql, list(params)).fetchone()
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
