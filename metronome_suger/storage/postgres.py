"""The ledger on PostgreSQL, reached through DuckDB's ``postgres`` extension, so one SQL dialect serves both
backends. The extension's binary comes from the ``duckdb-extension-postgres-scanner`` wheel (pinned to the same
DuckDB version) and is LOADed from its file: nothing is downloaded at run time.

The password travels in a temporary DuckDB secret, never in the connection string, so DuckDB's and libpq's
error messages cannot repeat it. Loading the extension and attaching cost about a third of a second, so each
process keeps one attached in-memory DuckDB per database and hands out a new connection (cursor) of it per
``connect``: temp tables and macros stay per connection, the attachment and its connection pool are shared.
"""

import importlib.util
import os
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import duckdb
from pydantic import SecretStr

CATALOG = "ledger"


class DatabaseUnavailableError(RuntimeError):
    """The PostgreSQL ledger cannot be reached or refused us (message names host and port, never the password)."""


def extension_path() -> Path:
    spec = importlib.util.find_spec("duckdb_extension_postgres_scanner")
    if spec is None or spec.origin is None:
        raise DatabaseUnavailableError("the duckdb-extension-postgres-scanner package is not installed")
    path = Path(spec.origin).parent / "extensions" / f"v{duckdb.__version__}" / "postgres_scanner.duckdb_extension"
    if not path.exists():
        raise DatabaseUnavailableError(
            f"duckdb-extension-postgres-scanner has no build for DuckDB {duckdb.__version__}: install the "
            "matching versions (pyproject.toml pins both)")
    return path


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def display(url: str) -> str:
    """The URL as it may be shown: scheme, user, host, port and database, never a password."""
    parts = urlsplit(url)
    user = f"{unquote(parts.username)}@" if parts.username else ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{user}{parts.hostname}{port}{parts.path}"


_ATTACHED: dict[tuple[int, str, str | None, bool], duckdb.DuckDBPyConnection] = {}
_LOCK = threading.Lock()


def _fail(url: str, password: SecretStr | None, exc: Exception) -> DatabaseUnavailableError:
    message = str(exc)
    if password is not None:
        message = message.replace(password.get_secret_value(), "***")
    return DatabaseUnavailableError(f"cannot open the ledger database {display(url)}: {message}")


def open_postgres(url: str, password: SecretStr | None, *, read_only: bool) -> duckdb.DuckDBPyConnection:
    """A new DuckDB connection with the PostgreSQL database attached and in use, checked to answer."""
    key = (os.getpid(), url, password.get_secret_value() if password else None, read_only)  # a fork attaches anew
    with _LOCK:
        base = _ATTACHED.get(key)
        if base is None:
            base = _ATTACHED[key] = _attach(url, password, read_only=read_only)
    conn = base.cursor()
    try:
        conn.execute(f"USE {CATALOG}")
        conn.execute(f"CALL postgres_execute('{CATALOG}', 'SELECT 1')")  # an outage is named here, not mid-step
    except duckdb.Error as exc:
        conn.close()
        raise _fail(url, password, exc) from None
    return conn


def _attach(url: str, password: SecretStr | None, *, read_only: bool) -> duckdb.DuckDBPyConnection:
    parts = urlsplit(url)
    conn = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                              "autoload_known_extensions": False})
    try:
        conn.execute(f"LOAD {_literal(str(extension_path()))}")
        options = {"HOST": parts.hostname or "localhost", "PORT": str(parts.port or 5432),
                   "DATABASE": unquote(parts.path.lstrip("/")), "USER": unquote(parts.username or "")}
        if password is not None:
            options["PASSWORD"] = password.get_secret_value()
        spec = ", ".join(f"{k} {_literal(v)}" for k, v in options.items() if v)
        conn.execute(f"CREATE TEMPORARY SECRET {CATALOG}_secret (TYPE postgres, {spec})")
        mode = ", READ_ONLY" if read_only else ""
        conn.execute(f"ATTACH '' AS {CATALOG} (TYPE postgres, SECRET {CATALOG}_secret{mode})")
        conn.execute(f"USE {CATALOG}")
    except duckdb.Error as exc:
        conn.close()
        raise _fail(url, password, exc) from None
    return conn
