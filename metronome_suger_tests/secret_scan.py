"""The secrets scan (issue 11), a pytest plugin registered from ``conftest.py``: after the whole suite, no
distinctive test token may be found in anything the tests left behind.

Tokens: the sandbox's Metronome token and Suger key, and the password of every PostgreSQL server the tests start
(plus any a fixture adds with ``register_token``). They are only ever named by their role, never printed.

Where: every file under the session's basetemp (DAGSTER_HOMEs with their sqlite run/event storage and compute
logs, DuckDB files, logs...), raw bytes first and, for each DuckDB file (found by its magic, whatever its name),
every row of every table through SQL as well, since DuckDB compresses strings; every PostgreSQL database of a test
server, dumped with ``pg_dump`` just before it is dropped or the server stops, and that server's log; every
test's captured stdout, stderr and log; the runs and events of every Dagster instance handed to
``watch_instance`` (the conftest ``Pipeline``'s ephemeral instance, whose events would vanish otherwise), read
when its test has finished.

At the end: one line ``secrets scan: N files, M databases, K test outputs, H token hits``; any hit is listed
(where, which token) and fails the session. Under pytest-xdist each worker scans what it ran and hands its
findings (roles and places, never a token) to the controller, which prints and records the sum.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from metronome_suger.sandbox.constants import METRONOME_TOKEN, SUGER_API_KEY
from metronome_suger_tests import postgres as pg_harness
from metronome_suger_tests.figures import record

DUCKDB_MAGIC = b"DUCK"  # bytes 8..12 of every DuckDB database file
WORKER_KEY = "secret_scan"  # this plugin's entry in an xdist worker's ``workeroutput``
NO_EXTENSIONS: dict[str, str | bool | int | float | list[str]] = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
MIN_TOKEN = 8  # shorter values would match by chance

InstanceT = TypeVar("InstanceT")


@dataclass
class Findings:
    """What one process scanned and found; plain data, so an xdist worker can send it to the controller."""

    files: int = 0
    databases: int = 0
    outputs: int = 0
    runs: int = 0
    hits: list[str] = field(default_factory=list)  # "<role> in <where>"
    problems: list[str] = field(default_factory=list)  # what could not be scanned (never a token in it)

    def add(self, other: dict[str, Any]) -> None:
        for key in ("files", "databases", "outputs", "runs"):
            setattr(self, key, getattr(self, key) + int(other.get(key, 0)))
        self.hits += other.get("hits", [])
        self.problems += other.get("problems", [])

    def as_dict(self) -> dict[str, Any]:
        return {"files": self.files, "databases": self.databases, "outputs": self.outputs, "runs": self.runs,
                "hits": self.hits, "problems": self.problems}


class Scanner:
    """The tokens (role -> value) and the search over bytes, files, DuckDB, PostgreSQL and Dagster events."""

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {"METRONOME_API_TOKEN (the sandbox's Metronome token)": METRONOME_TOKEN,
                                       "SUGER_API_KEY (the sandbox's Suger key)": SUGER_API_KEY}
        self.found = Findings()
        self.scans_outputs = True
        self._servers = 0
        self._pending_instances: list[Any] = []
        self._tests_with_output: set[str] = set()
        self._sections_seen: set[tuple[str, str]] = set()

    # --- tokens --------------------------------------------------------------------------------------------------

    def register(self, role: str, value: str) -> None:
        if len(value) >= MIN_TOKEN and value not in self.tokens.values():
            self.tokens[role] = value

    def server_password(self, password: str) -> None:
        self._servers += 1
        self.register(f"PostgreSQL password of test server #{self._servers}", password)

    def roles_in(self, data: bytes | str) -> list[str]:
        if isinstance(data, str):
            return [role for role, token in self.tokens.items() if token in data]
        return [role for role, token in self.tokens.items() if token.encode() in data]

    def redact(self, text: str) -> str:
        for role, token in self.tokens.items():
            text = text.replace(token, f"<{role.split(' ')[0]}>")
        return text

    def _hit(self, roles: list[str], where: str) -> None:
        self.found.hits += [f"{role} in {self.redact(where)}" for role in roles]  # a path could hold one too

    def problem(self, text: str) -> None:
        self.found.problems.append(self.redact(text))

    # --- files ---------------------------------------------------------------------------------------------------

    def scan_tree(self, root: Path) -> None:
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.is_symlink():
                self.scan_file(path)

    def scan_file(self, path: Path, label: str | None = None) -> None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            self.problem(f"file {path}: {exc.strerror}")
            return
        self.found.files += 1
        self._hit(self.roles_in(data), f"file {label or path}")
        self._hit(self.roles_in(str(path)), f"the name of file {path}")
        if data[8:12] == DUCKDB_MAGIC:
            self.scan_duckdb(path)

    def scan_duckdb(self, path: Path) -> None:
        """Every row of every table (cast to text, nested values included), views' and macros' SQL: on a copy,
        so neither a lock held by someone else nor our opening changes anything."""
        import duckdb

        with tempfile.TemporaryDirectory(prefix="secret-scan-") as tmp:
            copy = Path(tmp) / "scan.duckdb"
            try:
                shutil.copyfile(path, copy)
                wal = path.with_name(path.name + ".wal")
                if wal.is_file():
                    shutil.copyfile(wal, copy.with_name(copy.name + ".wal"))
                try:
                    conn = duckdb.connect(str(copy), read_only=True, config=NO_EXTENSIONS)
                except duckdb.Error:  # e.g. a WAL to replay: the copy may be written to
                    conn = duckdb.connect(str(copy), config=NO_EXTENSIONS)
                try:
                    self._search_duckdb(conn, path)
                finally:
                    conn.close()
            except (duckdb.Error, OSError) as exc:
                self.problem(f"DuckDB file {path} (raw bytes searched): {type(exc).__name__}: {exc}")
                return
        self.found.databases += 1

    def _search_duckdb(self, conn: Any, path: Path) -> None:
        roles, values = list(self.tokens), list(self.tokens.values())
        tables = conn.execute("SELECT database_name, schema_name, table_name FROM duckdb_tables() "
                              "WHERE NOT temporary AND NOT internal").fetchall()
        for database, schema, table in tables:
            name = ".".join('"' + part.replace('"', '""') + '"' for part in (database, schema, table))
            counts = ", ".join(f"count(*) FILTER (WHERE contains(CAST(r AS VARCHAR), ${i + 1}))"
                               for i in range(len(values)))
            row = conn.execute(f"SELECT {counts} FROM {name} AS r", values).fetchone()
            self._hit([role for role, n in zip(roles, row, strict=True) if n], f"DuckDB {path} table {table}")
        code = conn.execute("SELECT coalesce(string_agg(sql, chr(10)), '') FROM duckdb_views() WHERE NOT internal"
                            ).fetchone()[0]
        code += conn.execute("SELECT coalesce(string_agg(macro_definition, chr(10)), '') FROM duckdb_functions() "
                             "WHERE NOT internal AND macro_definition IS NOT NULL").fetchone()[0]
        self._hit(self.roles_in(code), f"DuckDB {path} views/macros")

    # --- PostgreSQL (the test harness's servers) -----------------------------------------------------------------

    def scan_postgres(self, server: pg_harness.PostgresServer, database: str) -> None:
        where = f"PostgreSQL database {database} (test server on port {server.port})"
        result = server._run([_pg_dump(server), "-h", str(server.socket_dir), "-p", str(server.port),
                              "-U", server.user, "-d", database, "--no-owner", "--no-privileges",
                              "--lock-wait-timeout=10000"])
        if result.returncode != 0:
            if "does not exist" not in result.stderr:
                self.problem(f"{where}: pg_dump failed: {result.stderr.strip()[:300]}")
            return
        self.found.databases += 1
        self._hit(self.roles_in(result.stdout), where)

    def scan_server(self, server: pg_harness.PostgresServer) -> None:
        """Before a server stops: its databases still there (a test's own, the outage one...) and its log."""
        try:
            names = server.execute("SELECT datname FROM pg_database WHERE NOT datistemplate").split()
        except pg_harness.PostgresServerError as exc:
            self.problem(f"test server on port {server.port}: cannot list databases: {exc}"[:400])
            names = []
        for name in names:
            self.scan_postgres(server, name)
        if server.log_file.is_file():
            self.scan_file(server.log_file, f"{server.log_file} (PostgreSQL server log)")

    # --- Dagster instances ---------------------------------------------------------------------------------------

    def watch(self, instance: InstanceT) -> InstanceT:
        self._pending_instances.append(instance)
        return instance

    def scan_instances(self, nodeid: str) -> None:
        from dagster import serialize_value

        instances, self._pending_instances = self._pending_instances, []
        for instance in instances:
            for run in instance.get_runs():
                self.found.runs += 1
                texts = [serialize_value(run)] + [serialize_value(e) for e in instance.all_logs(run.run_id)]
                self._hit(self.roles_in("\n".join(texts)), f"Dagster run {run.run_id} of {nodeid} (events, metadata)")

    # --- test outputs --------------------------------------------------------------------------------------------

    def scan_report(self, report: pytest.TestReport) -> None:
        """Captured stdout, stderr and log of one phase of a test (not the failure's traceback: that is the
        test's own assertion, shown because it failed)."""
        for title, content in report.sections:  # a phase's report repeats the sections of the phases before
            if content and (report.nodeid, title) not in self._sections_seen:
                self._sections_seen.add((report.nodeid, title))
                if report.nodeid not in self._tests_with_output:
                    self._tests_with_output.add(report.nodeid)
                    self.found.outputs += 1
                self._hit(self.roles_in(content), f"{title!r} of {report.nodeid}")


def _pg_dump(server: pg_harness.PostgresServer) -> str:
    for directory in (server.bin_dir, (server.bin_dir / "initdb").resolve().parent, server.psql.resolve().parent):
        if (directory / "pg_dump").is_file():
            return str(directory / "pg_dump")
    return shutil.which("pg_dump") or "pg_dump"


# --- the plugin --------------------------------------------------------------------------------------------------

_scanner: Scanner | None = None
_restore: list[Callable[[], None]] = []


def register_token(role: str, value: str) -> None:
    """A secret a fixture invents (a password...): searched for like the others, named by ``role``."""
    if _scanner is not None:
        _scanner.register(role, value)


def watch_instance(instance: InstanceT) -> InstanceT:
    """Have this Dagster instance's runs and events scanned when the current test has finished."""
    return _scanner.watch(instance) if _scanner is not None else instance


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _is_controller(config: pytest.Config) -> bool:
    return config.pluginmanager.getplugin("dsession") is not None


def _wrap(cls: type, name: str, make: Callable[[Any], Any]) -> None:
    original = cls.__dict__[name]
    setattr(cls, name, make(original))
    _restore.append(lambda: setattr(cls, name, original))


def _guarded(scanner: Scanner, what: str, scan: Callable[[], None]) -> None:
    """A scan that fails is reported at the end; it never breaks the test harness it rides on."""
    try:
        scan()
    except Exception as exc:
        scanner.problem(f"{what}: {type(exc).__name__}: {exc}")


def _hook_postgres(scanner: Scanner) -> None:
    """Learn each test server's password when it is made; dump a database before it is dropped, and every
    database left (with the server log) before the server stops."""

    def on_init(original: Any) -> Any:
        def __init__(self: pg_harness.PostgresServer, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            scanner.server_password(self.password)
        return __init__

    def on_drop(original: Any) -> Any:
        def drop_database(self: pg_harness.PostgresServer, name: str) -> None:
            if self.running:
                _guarded(scanner, f"PostgreSQL database {name}", lambda: scanner.scan_postgres(self, name))
            original(self, name)
        return drop_database

    def on_stop(original: Any) -> Any:
        def stop(self: pg_harness.PostgresServer) -> None:
            if self.running:
                _guarded(scanner, f"test server on port {self.port}", lambda: scanner.scan_server(self))
            original(self)
        return stop

    for name, make in (("__init__", on_init), ("drop_database", on_drop), ("stop", on_stop)):
        _wrap(pg_harness.PostgresServer, name, make)


def pytest_configure(config: pytest.Config) -> None:
    global _scanner
    _scanner = Scanner()
    if _is_controller(config):  # xdist: the workers run the tests and scan; this process adds up
        _scanner.scans_outputs = False
    else:
        _hook_postgres(_scanner)


def pytest_unconfigure(config: pytest.Config) -> None:
    global _scanner
    while _restore:
        _restore.pop()()
    _scanner = None


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if _scanner is not None and _scanner.scans_outputs:
        _scanner.scan_report(report)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    try:
        return (yield)
    finally:
        if _scanner is not None:
            scanner = _scanner
            _guarded(scanner, f"Dagster instances of {item.nodeid}", lambda: scanner.scan_instances(item.nodeid))


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: a worker's findings (counts, roles and places; never a token)."""
    output = getattr(node, "workeroutput", None) or {}
    if _scanner is not None and WORKER_KEY in output:
        _scanner.found.add(output[WORKER_KEY])


@pytest.hookimpl(tryfirst=True)  # an xdist worker hands its findings over before it reports being finished
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if _scanner is None:
        return
    found = _scanner.found
    if not _is_controller(config):  # the controller runs no test: its workers' findings were added up
        _scanner.scan_tree(config._tmp_path_factory.getbasetemp())  # type: ignore[attr-defined]
    if _is_worker(config):
        config.workeroutput[WORKER_KEY] = found.as_dict()  # type: ignore[attr-defined]
        return
    _report(config, session, found)
def _report(config: pytest.Config, session: pytest.Session, found: Findings) -> None:
    terminal = config.pluginmanager.getplugin("terminalreporter")
    write: Callable[[str], None] = terminal.write_line if terminal is not None else print
    write("")
    for hit in found.hits:
        write(f"secrets scan: TOKEN FOUND: {hit}")
    for problem in found.problems:
        write(f"secrets scan: not scanned: {problem}")
    write(f"secrets scan: {found.files} files, {found.databases} databases, {found.outputs} test outputs, "
          f"{len(found.hits)} token hits ({found.runs} Dagster runs' events read as well)")
    record("secrets", token_hits=len(found.hits), files=found.files, databases=found.databases,
           outputs=found.outputs)
    if found.hits:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
