"""Shared fixtures: a running sandbox (real HTTP on 127.0.0.1) and a real Dagster pipeline over a
DuckDB file under ``tmp_path``, configured the way a user would (a YAML-shaped config, tokens in env)."""

import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from metronome_suger.config import AppConfig, parse_config_data
from metronome_suger.core.windows import window_for_key
from metronome_suger.orchestration.definitions import build_definitions, build_reconciliation_definitions
from metronome_suger.orchestration.resources import ClockResource
from metronome_suger.sandbox.server import Sandbox
from metronome_suger.storage.db import Database, connect
from metronome_suger_tests.postgres import PostgresNotFoundError, PostgresServer

# The secrets scan after the whole suite (files, databases, outputs, Dagster events): see secret_scan.py.
pytest_plugins = ["metronome_suger_tests.secret_scan"]

warnings.filterwarnings("ignore", module="dagster")

# Mid-afternoon UTC; tests build their own data around it.
NOW = datetime(2026, 11, 25, 14, 5, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)

AWS_DIMS = [
    {"key": "cpu_hour", "name": "CPU hour", "rate": 0.12},
    {"key": "api_request", "name": "API request", "rate": 0.0005},
    {"key": "usage_fee", "name": "Usage fee", "rate": 0.01},
]
GCP_DIMS = [
    {"key": "vcpu_hours", "name": "vCPU hours", "rate": 0.1},
    {"key": "requests", "name": "Requests", "rate": 0.001},
]


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """An empty sandbox (no generated customers), clock frozen at NOW, as strict as real Metronome
    about ``POST /v1/usage`` bounds (UTC midnights)."""
    with Sandbox(customers=0, now=NOW) as running:
        yield running


LEDGER_PASSWORD_ENV = "METRONOME_SUGER_DB_PASSWORD"


class Pipeline:
    """The plugin as a user runs it: a config, the Dagster definitions, one partition per run; the state in a
    DuckDB file under ``tmp_path`` or, given ``ledger``, in a fresh PostgreSQL database."""

    def __init__(self, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 ledger: "PostgresLedger | None" = None) -> None:
        self.sandbox = sandbox
        self.db_path = tmp_path / "data" / "metronome_suger.duckdb"
        self.backend = "postgres" if ledger else "duckdb"
        from metronome_suger_tests.secret_scan import watch_instance  # here: the plugin is imported by pytest

        self.instance = watch_instance(dg.DagsterInstance.ephemeral())  # its events are scanned for secrets
        for name, value in sandbox.env().items():
            monkeypatch.setenv(name, value)
        storage: dict[str, Any] = {"duckdb_path": str(self.db_path)}
        if ledger is not None:
            monkeypatch.setenv(LEDGER_PASSWORD_ENV, ledger.password)
            storage = {"url": ledger.url, "password_env": LEDGER_PASSWORD_ENV}
        self.settings: dict[str, Any] = {
            "metronome": {"base_url": sandbox.metronome_url},
            "suger": {"base_url": sandbox.suger_url, "org_id": sandbox.org_id},
            "start": "2026-11-01T00:00:00Z",
            "dimension_conversion": {
                "AWS": {
                    "cpu_hours": [{"dimension_key": "cpu_hour", "mapping_mode": "QUANTITY", "multiplier": 1}],
                    "api_calls": [{"dimension_key": "api_request", "mapping_mode": "QUANTITY", "multiplier": "0.001"}],
                },
                "GCP": {
                    "cpu_hours": [{"dimension_key": "vcpu_hours", "mapping_mode": "QUANTITY", "multiplier": 2}],
                    "api_calls": [{"dimension_key": "requests", "mapping_mode": "QUANTITY", "multiplier": 1}],
                },
            },
            "storage": storage,
        }

    def config(self) -> AppConfig:
        return parse_config_data(self.settings, origin="test config")

    def run(self, partition_key: str, *, at: datetime | None = None) -> dg.ExecuteInProcessResult:
        """Run the whole job for one partition, as the schedule would at ``at`` (default: window end + 5 min)."""
        config = self.config()
        if at is None:
            at = window_for_key(partition_key, config.hourly).end + timedelta(minutes=5)
        self.sandbox.clock.set(at)
        defs = build_definitions(config, resources={"clock": ClockResource(frozen_at=at.isoformat())})
        job = defs.resolve_implicit_global_asset_job_def()
        return job.execute_in_process(partition_key=partition_key, instance=self.instance, raise_on_error=False)

    def reconcile(self, day: str, *, at: datetime) -> dg.ExecuteInProcessResult:
        """Materialize ``suger_usage_record_reports`` for the UTC ``day`` (and its check) as of ``at``."""
        self.sandbox.clock.set(at)
        defs = build_reconciliation_definitions(self.config(), resources={"clock": ClockResource(frozen_at=at.isoformat())})
        job = defs.resolve_implicit_global_asset_job_def()
        return job.execute_in_process(partition_key=day, instance=self.instance, raise_on_error=False)

    def database(self) -> Database:
        return self.config().database()

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple]:
        with connect(self.database(), read_only=True) as conn:
            return conn.execute(sql, params or []).fetchall()

    def stored_text(self) -> bytes:
        """Everything the state holds, as bytes to search: the DuckDB file, or every PostgreSQL table's rows."""
        if self.backend == "duckdb":
            return self.db_path.read_bytes()
        with connect(self.database(), read_only=True) as conn:
            tables = [t for (t,) in conn.execute("SELECT table_name FROM duckdb_tables() "
                                                 "WHERE database_name = current_database() AND schema_name = 'public'").fetchall()]
            return "\n".join(str(conn.execute(f"SELECT * FROM {t}").fetchall()) for t in tables).encode()


@pytest.fixture(params=["duckdb", "postgres"])
def pipeline(request: pytest.FixtureRequest, sandbox: Sandbox, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Pipeline:
    """The pipeline on each storage backend: every end-to-end test runs on both."""
    ledger = request.getfixturevalue("postgres_ledger") if request.param == "postgres" else None
    return Pipeline(sandbox, tmp_path, monkeypatch, ledger)


def sent_groups(sandbox: Sandbox) -> list[dict[str, Any]]:
    """What Suger stored, in arrival order, with quantities as Decimal."""
    return [
        {**g, "records": {k: Decimal(str(v)) for k, v in g["records"].items()}}
        for g in sandbox.suger.groups()
        if g["status"] != "DELETED"
    ]


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    """All step-failure descriptions and messages of a run, for asserting on what the user sees."""
    parts = []
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data:
            data = event.step_failure_data
            if data.user_failure_data and data.user_failure_data.description:
                parts.append(data.user_failure_data.description)
            error = data.error
            while error is not None:  # the step error and what caused it (the user's exception)
                parts.append(error.message)
                error = error.cause
    return "\n".join(parts)


# --- A real, throwaway PostgreSQL server (metronome_suger_tests/postgres.py) -----------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the whole session (temp dir, free port on 127.0.0.1, scram password over TCP),
    stopped and deleted at the end whatever happened. Missing binaries FAIL the test: ``make test`` installs them
    (scripts/ensure-postgres.sh), so their absence is a broken setup, not a reason to skip."""
    missing = ""
    try:
        server = PostgresServer()
    except PostgresNotFoundError as exc:
        missing = str(exc)  # failed outside the except block: one message, not a chained traceback
    if missing:
        pytest.fail(missing, pytrace=False)
    with server:
        yield server


@dataclass(frozen=True)
class PostgresLedger:
    """A fresh database on the session's server: ``url`` is postgresql://user@127.0.0.1:port/name (no password)."""

    url: str
    password: str
    name: str
    server: PostgresServer


@pytest.fixture
def postgres_ledger(postgres_server: PostgresServer) -> Iterator[PostgresLedger]:
    """A new, empty database for this test, dropped afterwards (even with clients still connected)."""
    name = f"ledger_{uuid.uuid4().hex[:16]}"
    url = postgres_server.create_database(name)
    try:
        yield PostgresLedger(url=url, password=postgres_server.password, name=name, server=postgres_server)
    finally:
        postgres_server.drop_database(name)


# --- Scheduling: the long modules first on each of make test's two workers --------------------------------------------

# pytest-xdist's worksteal scheduler gives each worker one contiguous half of the collection and lets an idle worker
# steal from the other's tail. The long end-to-end modules (minutes each) go first in each half, in two groups of about
# equal length, so neither worker ends the session alone on one of them.
LONG_MODULES = (("test_dagster_on_postgres.py", "test_fault_matrix.py"), ("test_soak.py", "test_crash.py"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    groups: list[list[pytest.Item]] = [[] for _ in LONG_MODULES]
    rest: list[pytest.Item] = []
    for item in items:
        home = next((i for i, names in enumerate(LONG_MODULES) if item.path.name in names), None)
        (rest if home is None else groups[home]).append(item)
    first, second = (sorted(group, key=lambda item, names=names: names.index(item.path.name))  # type: ignore[misc]
                     for group, names in zip(groups, LONG_MODULES, strict=True))
    cut = max(0, len(items) // 2 - len(first))
    items[:] = first + rest[:cut] + second + rest[cut:]
