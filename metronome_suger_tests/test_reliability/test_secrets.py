"""Secrets (issue 11): the configuration, the database handle and the Dagster resources show where secrets come
from, never their values; a run refused by Metronome, Suger or PostgreSQL says so without the secret in any
event, metadata or output; and the suite-wide scan (``metronome_suger_tests/secret_scan.py``) fails a session
that leaves a token anywhere, naming the place and the token's role but never the token.

The HTTP clients' own errors, reprs and logs are covered by ``test_clients/test_secrets.py``."""

import json
import os
import re
import subprocess
import sys
import tempfile
import traceback
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from pydantic import SecretStr

from metronome_suger.config import AppConfig, ConfigError, parse_config_data
from metronome_suger.orchestration.definitions import build_definitions, build_resources
from metronome_suger.orchestration.resources import MetronomeResource, SafeDuckDBResource, SugerResource
from metronome_suger.sandbox.constants import METRONOME_TOKEN, SUGER_API_KEY
from metronome_suger.sandbox.server import Sandbox
from metronome_suger.storage.db import Database, connect
from metronome_suger.storage.postgres import DatabaseUnavailableError
from metronome_suger_tests.conftest import AWS_DIMS, LEDGER_PASSWORD_ENV, Pipeline, PostgresLedger, failure_text
from metronome_suger_tests.figures import FIGURES_ENV
from metronome_suger_tests.secret_scan import register_token

pytestmark = [pytest.mark.reliability]
slow = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
KEY = "2026-11-25-13:00"
START = datetime(2026, 11, 25, 13, tzinfo=timezone.utc)
FAST_HTTP = {"timeout_seconds": 5, "max_attempts": 2, "initial_wait_seconds": 0.01, "max_wait_seconds": 0.05,
             "max_total_seconds": 5}


def invented(what: str) -> str:
    """A fake secret of this test, distinctive and registered with the scan like the real tokens."""
    value = f"{what}-{uuid.uuid4().hex}"
    register_token(f"a secret test_secrets.py invented ({what})", value)
    return value


def assert_absent(secrets: list[str], **texts: str) -> None:
    for name, text in texts.items():
        for number, secret in enumerate(secrets):
            assert secret not in text, f"secret #{number} appears in {name}"


def postgres_config(monkeypatch: pytest.MonkeyPatch, password: str) -> AppConfig:
    monkeypatch.setenv("METRONOME_API_TOKEN", METRONOME_TOKEN)
    monkeypatch.setenv("SUGER_API_KEY", SUGER_API_KEY)
    monkeypatch.setenv("LEDGER_PW", password)
    return parse_config_data({
        "suger": {"org_id": "org-1"}, "start": "2026-11-01T00:00:00Z",
        "storage": {"url": "postgresql://meter@127.0.0.1:5432/ledger", "password_env": "LEDGER_PW"},
    }, origin="test config")


# --- reprs -------------------------------------------------------------------------------------------------------


def test_configuration_and_database_show_variable_names_never_values(monkeypatch: pytest.MonkeyPatch) -> None:
    password = invented("db-password")
    config = postgres_config(monkeypatch, password)
    db = config.database()
    assert isinstance(db.password, SecretStr) and db.password.get_secret_value() == password  # read, only hidden
    assert config.metronome_token().get_secret_value() == METRONOME_TOKEN
    texts = {"repr(config)": repr(config), "str(config)": str(config), "config JSON": config.model_dump_json(),
             "repr(database)": repr(db), "str(database)": str(db),
             "token reprs": repr(config.metronome_token()) + str(config.suger_api_key()) + repr(db.password)}
    assert_absent([password, METRONOME_TOKEN, SUGER_API_KEY], **texts)
    assert all(name in repr(config) for name in ("METRONOME_API_TOKEN", "SUGER_API_KEY", "LEDGER_PW"))
    assert str(db) == "postgresql://meter@127.0.0.1:5432/ledger" and "**********" in repr(db)


def test_resources_of_the_definitions_hold_variable_names_not_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a code location loads (and the UI shows): every resource refers to its secret's variable."""
    password = invented("db-password")
    config = postgres_config(monkeypatch, password)
    resources = build_resources(config)
    defs = build_definitions(config)
    texts = {f"repr({name})": repr(resource) + str(resource) for name, resource in resources.items()}
    texts["definitions' resources"] = repr(defs.resources)
    assert_absent([password, METRONOME_TOKEN, SUGER_API_KEY], **texts)
    held = [resources["metronome"].api_token, resources["suger"].api_key, resources["duckdb"].password]
    assert held == ["METRONOME_API_TOKEN", "SUGER_API_KEY", "LEDGER_PW"]  # the variables' names, resolved in a run
    assert all(isinstance(value, dg.EnvVar) for value in held)


def test_resources_resolved_inside_a_run_do_not_show_their_secrets() -> None:
    """Inside a run the EnvVars are resolved to their values: a resource's repr (a log line, a traceback's locals)
    must still not show them."""
    token, key, password = invented("metronome-token"), invented("suger-key"), invented("db-password")
    resolved = {
        "metronome": MetronomeResource(base_url="http://127.0.0.1:1", api_token=token),
        "suger": SugerResource(base_url="http://127.0.0.1:1", org_id="org", api_key=key),
        "ledger": SafeDuckDBResource(database="postgresql://u@127.0.0.1:1/db", password=password),
    }
    assert_absent([token, key, password], **{name: repr(r) + str(r) for name, r in resolved.items()})


@pytest.mark.parametrize("url", ["http://u:{secret}@127.0.0.1:8000", "https://u:{secret}@api.example.com",
                                 "ftp://u:{secret}@example.com", "https://api.example.com/?api_key={secret}"])
def test_a_service_url_carrying_a_secret_is_refused_without_echoing_it(url: str) -> None:
    secret = invented("url-secret")
    settings = {"metronome": {"base_url": url.format(secret=secret)}, "suger": {"org_id": "org"},
                "start": "2026-11-01T00:00:00Z"}
    with pytest.raises(ConfigError) as refused:
        parse_config_data(settings, origin="test config")
    assert "metronome.base_url" in str(refused.value)
    assert_absent([secret], error=str(refused.value), chain=repr(refused.value.__cause__))


# --- refused secrets -----------------------------------------------------------------------------------------------


def run_texts(pipeline: Pipeline, result: dg.ExecuteInProcessResult) -> str:
    """Everything Dagster kept of a run: the run (its config and tags) and every event with its metadata."""
    events = pipeline.instance.all_logs(result.run_id)
    run = pipeline.instance.get_run_by_id(result.run_id)
    return "\n".join([dg.serialize_value(run), *(dg.serialize_value(e) for e in events)])


def one_customer(sb: Sandbox) -> None:
    cpu = sb.metronome.add_billable_metric("cpu_hours")["id"]
    customer = sb.metronome.add_customer("Ann")["id"]
    buyer = sb.suger.add_buyer("Ann AWS", partner="AWS", metronome_customer_id=customer)["id"]
    sb.suger.add_entitlement(buyer, partner="AWS", dimensions=AWS_DIMS)
    sb.metronome.set_usage(customer, cpu, START, 5)


@slow
def test_runs_refused_by_metronome_or_suger_say_so_without_any_token(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
) -> None:
    one_customer(sandbox)
    pipeline = Pipeline(sandbox, tmp_path, monkeypatch)
    pipeline.settings["http"] = FAST_HTTP
    refused_token, refused_key = invented("refused-metronome-token"), invented("refused-suger-key")
    secrets = [refused_token, refused_key, METRONOME_TOKEN, SUGER_API_KEY]

    monkeypatch.setenv("METRONOME_API_TOKEN", refused_token)
    metronome_refused = pipeline.run(KEY)
    monkeypatch.setenv("METRONOME_API_TOKEN", METRONOME_TOKEN)
    monkeypatch.setenv("SUGER_API_KEY", refused_key)
    suger_refused = pipeline.run(KEY)
    out, err = capfd.readouterr()

    assert not metronome_refused.success and not suger_refused.success
    assert "Metronome GET /v1/customers -> 401" in failure_text(metronome_refused)
    assert re.search(r"Suger \w+ /org/[^ ]+ -> 401", failure_text(suger_refused))
    assert sandbox.suger.groups() == []  # refused, nothing was sent
    assert_absent(secrets, metronome_run=run_texts(pipeline, metronome_refused),
                  suger_run=run_texts(pipeline, suger_refused), output=out + err)


def test_a_wrong_database_password_is_named_nowhere(postgres_ledger: PostgresLedger) -> None:
    """Not in the error nor its traceback, not in the server's log; and once connected, DuckDB's catalog of
    secrets shows the password redacted and refuses to show it plainly."""
    wrong = invented("wrong-db-password")
    secrets = [wrong, postgres_ledger.password]
    with pytest.raises(DatabaseUnavailableError) as info:
        with connect(Database(postgres_ledger.url, SecretStr(wrong)), read_only=True):
            pass
    error = "".join(traceback.format_exception(info.value))
    assert "password authentication failed" in str(info.value) and postgres_ledger.name in str(info.value)
    server_log = postgres_ledger.server.log_file.read_text(errors="replace")
    assert "password authentication failed" in server_log
    with connect(Database(postgres_ledger.url, SecretStr(postgres_ledger.password)), read_only=True) as conn:
        catalog = str(conn.execute("FROM duckdb_secrets()").fetchall())
        databases = str(conn.execute("FROM duckdb_databases()").fetchall())
        with pytest.raises(Exception, match="unredacted secrets is disabled"):
            conn.execute("FROM duckdb_secrets(redact := false)")
    assert "password=redacted" in catalog
    assert_absent(secrets, error=error, repr_error=repr(info.value), server_log=server_log, catalog=catalog,
                  databases=databases)


@slow
def test_a_run_with_a_wrong_database_password_keeps_it_out_of_every_event(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_ledger: PostgresLedger,
    capfd: pytest.CaptureFixture[str],
) -> None:
    one_customer(sandbox)
    pipeline = Pipeline(sandbox, tmp_path, monkeypatch, postgres_ledger)
    wrong = invented("wrong-db-password")
    monkeypatch.setenv(LEDGER_PASSWORD_ENV, wrong)
    result = pipeline.run(KEY)
    out, err = capfd.readouterr()
    assert not result.success and "password authentication failed" in failure_text(result)
    assert sandbox.suger_log.find(method="POST") == []
    assert_absent([wrong, postgres_ledger.password, METRONOME_TOKEN, SUGER_API_KEY],
                  run=run_texts(pipeline, result), output=out + err)


# --- the scan itself -----------------------------------------------------------------------------------------------

LEAKY_TESTS = '''
import dagster as dg
import duckdb

from metronome_suger.sandbox.constants import METRONOME_TOKEN, SUGER_API_KEY
from metronome_suger_tests.postgres import PostgresServer
from metronome_suger_tests.secret_scan import register_token, watch_instance


def test_token_in_a_file(tmp_path):
    (tmp_path / "leak.txt").write_text("token=" + METRONOME_TOKEN)


def test_key_in_a_compressed_duckdb_table(tmp_path):
    conn = duckdb.connect(str(tmp_path / "state.db"))  # no .duckdb suffix: found by its magic bytes
    conn.execute("CREATE TABLE leaked AS SELECT ? || '-' || i AS note FROM range(20000) t(i)", [SUGER_API_KEY])
    conn.close()


def test_printed_password(tmp_path):
    secret = "inner-password-" + tmp_path.name.encode().hex()
    register_token("the inner fixture's password", secret)
    print("connecting with", secret)


def test_token_in_a_database_and_password_in_a_file(tmp_path):
    with PostgresServer() as server:
        server.create_database("leaky")
        server.execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('%s')" % METRONOME_TOKEN, "leaky")
        server.drop_database("leaky")
        (tmp_path / "pgpass").write_text(server.password)


def test_token_in_materialization_metadata():
    @dg.asset
    def note() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"note": METRONOME_TOKEN})

    assert dg.materialize([note], instance=watch_instance(dg.DagsterInstance.ephemeral())).success


def test_clean(tmp_path):
    (tmp_path / "fine.txt").write_text("nothing secret")
'''


def run_inner_session(project: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    figures = project / f"figures-{uuid.uuid4().hex}.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO), FIGURES_ENV: str(figures)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "metronome_suger_tests.secret_scan", "-p", "no:cacheprovider",
         "-c", str(project / "pytest.ini"), "--rootdir", str(project), "--basetemp", str(project / "basetemp"),
         "-q", "-W", "ignore::DeprecationWarning", str(project / "test_leaks.py"), *args],
        cwd=project, env=env, capture_output=True, text=True, timeout=300, check=False)
    lines = figures.read_text().splitlines() if figures.exists() else []
    return proc, [json.loads(line) for line in lines]


@slow
def test_the_scan_fails_a_session_that_leaves_a_token_and_names_where_but_not_the_token() -> None:
    """A pytest session in a subprocess whose tests all pass but leave tokens behind: in a file, in a DuckDB
    table whose compressed bytes do not contain it, in captured stdout, in a PostgreSQL database dropped during
    the test, a server's password in a file, in a Dagster materialization's metadata. Its session fails and
    lists each place with the token's role. (Outside this session's basetemp: the real scan must not see it.)"""
    with tempfile.TemporaryDirectory(prefix="secret-scan-proof-") as tmp:
        project = Path(tmp)
        (project / "pytest.ini").write_text("[pytest]\n")
        (project / "test_leaks.py").write_text(LEAKY_TESTS)
        clean, clean_figures = run_inner_session(project, "-k", "clean")
        leaky, figures = run_inner_session(project, "-k", "not clean")
        basetemp = project / "basetemp"
        leak, state, pgpass = (next(basetemp.rglob(name)) for name in ("leak.txt", "state.db", "pgpass"))
        server_password = pgpass.read_text()
        inner_password = "inner-password-" + next(basetemp.glob("test_printed_password*")).name.encode().hex()

    assert clean.returncode == 0, clean.stdout[-3000:] + clean.stderr[-3000:]
    assert "secrets scan: 1 files, 0 databases, 0 test outputs, 0 token hits" in clean.stdout
    assert clean_figures == [{"suite": "secrets", "token_hits": 0, "files": 1, "databases": 0, "outputs": 0}]

    text = leaky.stdout + leaky.stderr
    assert leaky.returncode == pytest.ExitCode.TESTS_FAILED, text[-3000:]
    assert "5 passed" in leaky.stdout  # every test passed: the scan failed the session
    found = [line.removeprefix("secrets scan: TOKEN FOUND: ") for line in leaky.stdout.splitlines()
             if line.startswith("secrets scan: TOKEN FOUND: ")]
    metronome, suger = "METRONOME_API_TOKEN (the sandbox's Metronome token)", "SUGER_API_KEY (the sandbox's Suger key)"
    assert f"{metronome} in file {leak}" in found
    assert f"{suger} in DuckDB {state} table leaked" in found
    assert f"{suger} in file {state}" not in found  # compressed: only SQL finds it
    assert "the inner fixture's password in 'Captured stdout call' of test_leaks.py::test_printed_password" in found
    assert any(re.fullmatch(rf"{re.escape(metronome)} in PostgreSQL database leaky \(test server on port \d+\)", f)
               for f in found)
    assert f"PostgreSQL password of test server #1 in file {pgpass}" in found
    assert any(re.fullmatch(rf"{re.escape(metronome)} in Dagster run [0-9a-f-]{{36}} of "
                            r"test_leaks.py::test_token_in_materialization_metadata \(events, metadata\)", f)
               for f in found)
    assert len(found) == 6, found
    assert "6 token hits" in leaky.stdout
    assert [f["token_hits"] for f in figures] == [6]
    assert_absent([METRONOME_TOKEN, SUGER_API_KEY, server_password, inner_password], inner_session_output=text)
