"""The ledger on PostgreSQL where runs are separate processes (issue 10): two `dagster asset materialize`
processes of the same window, each with its own Dagster instance, sharing only the ledger database, send each
group once; an unreachable or refusing database fails the run before anything is sent, naming host and port and
never the password."""

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from metronome_suger.core.windows import floor
from metronome_suger.sandbox.server import Sandbox
from metronome_suger.storage.db import Database, connect
from metronome_suger_tests.conftest import AWS_DIMS, GCP_DIMS, NOW, Pipeline, PostgresLedger, failure_text
from metronome_suger_tests.postgres import PostgresServer

BIN = Path(sys.executable).parent
PASSWORD_ENV = "LEDGER_DB_PASSWORD"


def world(sb: Sandbox, start: datetime) -> dict[str, str]:
    """Three customers on AWS and GCP with usage in the window starting at ``start``."""
    cpu = sb.metronome.add_billable_metric("cpu_hours")["id"]
    ents = {}
    for name, partner, dims, value in (("Ann", "AWS", AWS_DIMS, 4), ("Ben", "AWS", AWS_DIMS, 9),
                                       ("Cid", "GCP", GCP_DIMS, 2)):
        customer = sb.metronome.add_customer(name)["id"]
        buyer = sb.suger.add_buyer(name, partner=partner, metronome_customer_id=customer)["id"]
        ents[name] = sb.suger.add_entitlement(buyer, partner=partner, dimensions=dims)["id"]
        sb.metronome.set_usage(customer, cpu, start, Decimal(value))
    return ents


def write_config(path: Path, sb: Sandbox, ledger: PostgresLedger) -> Path:
    path.write_text(yaml.safe_dump({
        "metronome": {"base_url": sb.metronome_url},
        "suger": {"base_url": sb.suger_url, "org_id": sb.org_id},
        "start": "2026-11-01T00:00:00Z",
        "dimension_conversion": {"AWS": {"cpu_hours": [{"dimension_key": "cpu_hour", "multiplier": 1}]},
                                 "GCP": {"cpu_hours": [{"dimension_key": "vcpu_hours", "multiplier": 1}]}},
        "storage": {"url": ledger.url, "password_env": PASSWORD_ENV},
    }))
    return path


def test_two_processes_of_one_window_send_each_group_once(postgres_ledger: PostgresLedger, tmp_path: Path) -> None:
    with Sandbox(customers=0) as sb:  # the real clock: the CLI runs use wall time for deadlines
        start = floor(datetime.now(timezone.utc), True) - timedelta(hours=1)
        ents = world(sb, start)
        config = write_config(tmp_path / "cfg.yaml", sb, postgres_ledger)
        key = start.strftime("%Y-%m-%d-%H:%M")
        procs = []
        for name in ("a", "b"):  # two Dagster instances: nothing shared but the ledger database
            home = tmp_path / f"dagster_home_{name}"
            home.mkdir()
            env = {**{k: v for k, v in os.environ.items() if k != "METRONOME_SUGER_CONFIG"},
                   "DAGSTER_HOME": str(home), "METRONOME_SUGER_CONFIG": str(config),
                   PASSWORD_ENV: postgres_ledger.password, **sb.env()}
            procs.append(subprocess.Popen(
                [str(BIN / "dagster"), "asset", "materialize", "-m", "metronome_suger.definitions", "--select", "*",
                 "--partition", key], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True))
        outputs = [p.communicate(timeout=600) for p in procs]
        for proc, (out, err) in zip(procs, outputs, strict=True):
            assert proc.returncode == 0, err[-3000:]
            assert postgres_ledger.password not in out + err
        posts = sb.suger_log.find(method="POST")
        groups = sb.suger.groups()
        assert sorted(g["entitlementID"] for g in groups) == sorted(ents.values())  # one group per entitlement
        assert len(posts) == len(groups) == 3  # each group handed over once: no second POST, no 409
        assert {g["entitlementID"]: g["records"] for g in groups} == {
            ents["Ann"]: {"cpu_hour": 4}, ents["Ben"]: {"cpu_hour": 9}, ents["Cid"]: {"vcpu_hours": 2}}
    with connect(Database(postgres_ledger.url, SecretStr(postgres_ledger.password)), read_only=True) as conn:
        assert conn.execute("SELECT status, count(*) FROM report_ledger GROUP BY 1").fetchall() == [("sent", 3)]
        assert conn.execute("SELECT count(*) FROM window_claims WHERE holder IS NOT NULL").fetchall() == [(0,)]


@pytest.fixture
def pg_pipeline(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                postgres_ledger: PostgresLedger) -> Pipeline:
    return Pipeline(sandbox, tmp_path, monkeypatch, postgres_ledger)


def test_an_unreachable_database_fails_the_run_before_anything_is_sent(
    sandbox: Sandbox, pg_pipeline: Pipeline, postgres_ledger: PostgresLedger,
) -> None:
    world(sandbox, NOW.replace(minute=0) - timedelta(hours=1))
    server = postgres_ledger.server
    closed = server.port + 1 if server.port < 65535 else server.port - 1
    pg_pipeline.settings["storage"]["url"] = postgres_ledger.url.replace(f":{server.port}/", f":{closed}/")
    result = pg_pipeline.run("2026-11-25-13:00")
    assert not result.success
    text = failure_text(result)
    assert f"cannot open the ledger database postgresql://{server.user}@127.0.0.1:{closed}/" in text
    assert "127.0.0.1" in text and str(closed) in text
    assert postgres_ledger.password not in text
    assert sandbox.suger_log.find(method="POST") == []


def test_a_wrong_password_fails_the_run_and_is_not_repeated(
    sandbox: Sandbox, pg_pipeline: Pipeline, postgres_ledger: PostgresLedger, monkeypatch: pytest.MonkeyPatch,
) -> None:
    world(sandbox, NOW.replace(minute=0) - timedelta(hours=1))
    monkeypatch.setenv("METRONOME_SUGER_DB_PASSWORD", "not-the-password-42")
    result = pg_pipeline.run("2026-11-25-13:00")
    assert not result.success
    text = failure_text(result)
    assert "password authentication failed" in text
    assert "not-the-password-42" not in text and postgres_ledger.password not in text
    assert sandbox.suger_log.find(method="POST") == []


def test_a_database_outage_before_the_report_leaves_groups_pending_for_the_next_run(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Records computed (auto_report off), the database goes away, the report run fails without sending; once
    it is back, the next run sends each group once."""
    with PostgresServer() as server:
        url = server.create_database("outage")
        ledger = PostgresLedger(url=url, password=server.password, name="outage", server=server)
        pipeline = Pipeline(sandbox, tmp_path, monkeypatch, ledger)
        ents = world(sandbox, NOW.replace(minute=0) - timedelta(hours=1))
        pipeline.settings["auto_report"] = False
        assert pipeline.run("2026-11-25-13:00").success
        assert pipeline.query("SELECT DISTINCT status FROM report_ledger") == [("pending",)]
        pipeline.settings["auto_report"] = True
        server.pause()
        try:
            down = pipeline.run("2026-11-25-13:00")
        finally:
            server.resume()
        assert not down.success and "cannot open the ledger database" in failure_text(down)
        assert sandbox.suger_log.find(method="POST") == []
        assert pipeline.run("2026-11-25-13:00").success
        assert sorted(g["entitlementID"] for g in sandbox.suger.groups()) == sorted(ents.values())
        assert len(sandbox.suger_log.find(method="POST")) == 3
        assert pipeline.query("SELECT DISTINCT status FROM report_ledger") == [("sent",)]
