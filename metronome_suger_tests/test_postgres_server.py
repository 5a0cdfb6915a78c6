"""The throwaway PostgreSQL server the suite runs against (metronome_suger_tests/postgres.py and the
``postgres_server`` / ``postgres_ledger`` fixtures), checked against the real server through DuckDB's postgres
extension LOADed from its wheel, the way the ledger reaches PostgreSQL."""

import os
import pwd
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import duckdb
import pytest

from metronome_suger_tests import postgres
from metronome_suger_tests.conftest import PostgresLedger
from metronome_suger_tests.postgres import PostgresNotFoundError, PostgresServer, attach_postgres


def connect(url: str, password: str, alias: str = "pg") -> duckdb.DuckDBPyConnection:
    # autoinstall/autoload off: a missing extension must fail here, not be downloaded.
    conn = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                              "autoload_known_extensions": False})
    attach_postgres(conn, url, password, alias=alias)
    return conn


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5):
            return True
    except ConnectionRefusedError:
        return False


def test_ledger_url_has_no_password_and_points_at_the_server(postgres_server: PostgresServer,
                                                            postgres_ledger: PostgresLedger) -> None:
    parts = urlsplit(postgres_ledger.url)
    assert (parts.scheme, parts.hostname, parts.port, parts.username) == (
        "postgresql", "127.0.0.1", postgres_server.port, "postgres")
    assert parts.password is None
    assert postgres_ledger.password not in postgres_ledger.url
    assert parts.path == f"/{postgres_ledger.name}"
    assert postgres_ledger.password == postgres_server.password and len(postgres_ledger.password) >= 20


def test_password_connection_over_tcp_through_duckdb_extension(postgres_ledger: PostgresLedger) -> None:
    with connect(postgres_ledger.url, postgres_ledger.password) as conn:
        loaded = conn.execute(
            "SELECT loaded, install_mode FROM duckdb_extensions() WHERE extension_name = 'postgres_scanner'"
        ).fetchall()
        assert loaded == [(True, "NOT_INSTALLED")]  # LOADed from the wheel's file, nothing installed or downloaded
        row = conn.execute(
            "SELECT * FROM postgres_query('pg', 'SELECT current_user::text, current_database()::text, "
            "host(inet_server_addr()), inet_server_port()')"
        ).fetchall()
        assert row == [("postgres", postgres_ledger.name, "127.0.0.1", urlsplit(postgres_ledger.url).port)]
        # TCP from 127.0.0.1 is governed by scram-sha-256 rules only (no trust), so the login above used the password.
        rules = conn.execute(
            "SELECT * FROM postgres_query('pg', 'SELECT DISTINCT type, auth_method FROM pg_hba_file_rules "
            "WHERE type <> ''local'' ORDER BY 1, 2')"
        ).fetchall()
        assert rules == [("host", "scram-sha-256")]
        # The password is in neither the attached path nor the secret listing.
        paths = [p for (p,) in conn.execute("SELECT coalesce(path, '') FROM duckdb_databases()").fetchall()]
        secrets_text = str(conn.execute("SELECT * FROM duckdb_secrets()").fetchall())
        assert postgres_ledger.password not in " ".join(paths) + secrets_text


def test_wrong_password_is_refused(postgres_ledger: PostgresLedger) -> None:
    with pytest.raises(duckdb.IOException, match='password authentication failed for user "postgres"') as caught:
        connect(postgres_ledger.url, "not-" + postgres_ledger.password)
    assert postgres_ledger.password not in str(caught.value)


def test_missing_password_is_refused(postgres_ledger: PostgresLedger, monkeypatch: pytest.MonkeyPatch) -> None:
    # TCP is scram-only: without a password (and no PGPASSWORD to fall back on) libpq cannot log in.
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", os.devnull)
    with duckdb.connect(":memory:") as conn, pytest.raises(duckdb.IOException, match="no password supplied"):
        attach_postgres(conn, postgres_ledger.url, "")


@pytest.fixture
def other_ledger(postgres_server: PostgresServer) -> Iterator[PostgresLedger]:
    name = "ledger_other_" + os.urandom(6).hex()
    url = postgres_server.create_database(name)
    yield PostgresLedger(url=url, password=postgres_server.password, name=name, server=postgres_server)
    postgres_server.drop_database(name)


def test_two_ledgers_are_isolated(postgres_ledger: PostgresLedger, other_ledger: PostgresLedger) -> None:
    assert postgres_ledger.url != other_ledger.url
    with connect(postgres_ledger.url, postgres_ledger.password, "a") as a, \
            connect(other_ledger.url, other_ledger.password, "b") as b:
        a.execute("CREATE TABLE a.items (id VARCHAR PRIMARY KEY, n INTEGER)")
        a.execute("INSERT INTO a.items VALUES ('x', 1), ('y', 2)")
        b.execute("CREATE TABLE b.items (id VARCHAR PRIMARY KEY, n INTEGER)")
        b.execute("INSERT INTO b.items VALUES ('z', 3)")
        assert a.execute("SELECT id, n FROM a.items ORDER BY id").fetchall() == [("x", 1), ("y", 2)]
        assert b.execute("SELECT id, n FROM b.items ORDER BY id").fetchall() == [("z", 3)]
        # Each database sees only its own table.
        assert postgres_ledger.server.execute("SELECT string_agg(id, ',' ORDER BY id) FROM items",
                                              database=postgres_ledger.name).strip() == "x,y"
        assert other_ledger.server.execute("SELECT string_agg(id, ',' ORDER BY id) FROM items",
                                           database=other_ledger.name).strip() == "z"


def test_ledger_is_dropped_after_its_test_even_with_clients_connected(postgres_server: PostgresServer) -> None:
    name = "ledger_dropped_" + os.urandom(6).hex()
    url = postgres_server.create_database(name)
    assert postgres_server.execute(f"SELECT count(*) FROM pg_database WHERE datname = '{name}'").strip() == "1"
    conn = connect(url, postgres_server.password)
    conn.execute("CREATE TABLE pg.t AS SELECT 1 AS x")  # the DuckDB pool keeps a backend connected
    postgres_server.drop_database(name)
    assert postgres_server.execute(f"SELECT count(*) FROM pg_database WHERE datname = '{name}'").strip() == "0"
    conn.close()


def test_server_stops_cleanly_and_frees_its_port() -> None:
    server = PostgresServer().start()
    try:
        port, base_dir = server.port, server.base_dir
        assert base_dir is not None and (base_dir / "data" / "postmaster.pid").is_file()
        assert port_open("127.0.0.1", port)
        url = server.create_database("stop_check")
        with connect(url, server.password) as conn:
            assert conn.execute("SELECT * FROM postgres_query('pg', 'SELECT 41 + 1')").fetchall() == [(42,)]
    finally:
        server.stop()
    assert not port_open("127.0.0.1", port)
    assert not base_dir.exists()
    assert server.base_dir is None and not server.running
    server.stop()  # a second stop is a no-op
    with pytest.raises(duckdb.IOException, match="Connection refused"):
        connect(url, server.password)


def test_database_names_are_checked(postgres_server: PostgresServer) -> None:
    with pytest.raises(ValueError, match="database name"):
        postgres_server.create_database('x"; DROP DATABASE postgres; --')


def postmaster_uid(server: PostgresServer) -> int:
    assert server.base_dir is not None
    pid = int((server.base_dir / "data" / "postmaster.pid").read_text().split()[0])
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


@pytest.mark.skipif(os.geteuid() != 0, reason="the root path: PostgreSQL runs as an unprivileged account")
@pytest.mark.parametrize("missing", [(), ("postgres",)], ids=["postgres-account", "no-postgres-account"])
def test_as_root_the_cluster_runs_as_an_unprivileged_account(missing: tuple[str, ...],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    real_getpwnam = pwd.getpwnam

    def getpwnam(name: str) -> pwd.struct_passwd:
        if name in missing:
            raise KeyError(name)
        return real_getpwnam(name)

    monkeypatch.setattr(pwd, "getpwnam", getpwnam)
    try:
        expected = real_getpwnam("postgres") if not missing else real_getpwnam("nobody")
    except KeyError:
        expected = real_getpwnam("nobody")
    with PostgresServer() as server:
        assert server.run_as is not None and server.run_as.pw_name == expected.pw_name
        assert server.base_dir is not None
        assert (server.base_dir / "data").stat().st_uid == expected.pw_uid
        assert postmaster_uid(server) == expected.pw_uid != 0
        url = server.create_database("as_root")
        with connect(url, server.password) as conn:
            assert conn.execute("SELECT * FROM postgres_query('pg', 'SELECT current_database()::text')"
                                ).fetchall() == [("as_root",)]


def fake_bin(directory: Path, *tools: str) -> Path:
    directory.mkdir(parents=True)
    for tool in tools:
        (directory / tool).write_text("#!/bin/sh\n")
        (directory / tool).chmod(0o755)
    return directory


def test_binaries_are_found_on_path_first_then_newest_debian_version(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    fake_bin(tmp_path / "lib/postgresql/9.6/bin", "initdb", "pg_ctl")
    fake_bin(tmp_path / "lib/postgresql/15/bin", "initdb", "pg_ctl", "psql")
    fake_bin(tmp_path / "lib/postgresql/17/bin", "initdb")  # incomplete: no pg_ctl
    monkeypatch.setattr(postgres, "DEBIAN_BIN_GLOB", str(tmp_path / "lib/postgresql/*/bin"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert postgres.find_postgres_bin_dir() == tmp_path / "lib/postgresql/15/bin"
    on_path = fake_bin(tmp_path / "opt/bin", "initdb", "pg_ctl")
    monkeypatch.setenv("PATH", str(on_path))
    assert postgres.find_postgres_bin_dir() == on_path


def test_missing_binaries_raise_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres, "DEBIAN_BIN_GLOB", str(tmp_path / "lib/postgresql/*/bin"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PostgresNotFoundError, match=r"need `initdb` and `pg_ctl` on PATH or in .*ensure-postgres\.sh"):
        PostgresServer()
