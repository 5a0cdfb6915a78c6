"""The commands of CONTRACT §2, run as a user runs them: real subprocesses against a running sandbox."""

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import yaml

from metronome_suger.core.windows import floor
from metronome_suger.sandbox.server import Sandbox
from metronome_suger_tests.conftest import AWS_DIMS, sent_groups

BIN = Path(sys.executable).parent


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("METRONOME_SUGER_CONFIG",)}
    full_env.update(env or {})
    return subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def write_config(path: Path, sandbox: Sandbox, db: Path, **extra) -> Path:
    data = {
        "metronome": {"base_url": sandbox.metronome_url},
        "suger": {"base_url": sandbox.suger_url, "org_id": sandbox.org_id},
        "start": "2026-11-01T00:00:00Z",
        "dimension_conversion": {"AWS": {"cpu_hours": [{"dimension_key": "cpu_hour", "multiplier": 1}]}},
        "storage": {"duckdb_path": str(db)},
        **extra,
    }
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def live_sandbox():
    """Real clock: the Dagster CLI run uses wall time for deadlines, so the data sits in the last hour."""
    with Sandbox(customers=0) as sb:
        yield sb


def test_definitions_validate_loads_without_network_or_tokens(tmp_path: Path) -> None:
    workspace = Path(__file__).resolve().parents[1] / "workspace.yaml"
    proc = run([str(BIN / "dagster"), "definitions", "validate", "-w", str(workspace)], cwd=workspace.parent,
               env={"METRONOME_API_TOKEN": "", "SUGER_API_KEY": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "All code locations passed validation" in proc.stderr + proc.stdout


def test_bundled_config_is_announced_on_the_first_line(tmp_path: Path) -> None:
    proc = run([str(BIN / "metronome-suger"), "status"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].startswith("metronome-suger: using the bundled sandbox configuration")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("suger: {org_id: x}\nstart: '2026-11-01T00:00:00Z'\nbilling_mode: hourly\n", "billing_mode"),
        ("suger: {org_id: x}\nstart: '2026-11-01T00:00:00Z'\nsurprise: 1\n", "unknown key 'surprise'"),
        ("suger: {org_id: x, base_url: 'http://api.example.com'}\nstart: '2026-11-01T00:00:00Z'\n", "suger.base_url"),
        ("suger: {org_id: x}\nstart: '2026-11-01T00:00:00Z'\ndimension_conversion:\n  AWS:\n"
         "    m: [{dimension_key: d, multiplier: -2}]\n", "multiplier"),
    ],
)
def test_bad_config_is_one_clear_line_naming_file_and_key(tmp_path: Path, content: str, needle: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(content)
    proc = run([str(BIN / "metronome-suger"), "status"], cwd=tmp_path, env={"METRONOME_SUGER_CONFIG": str(config)})
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert str(config) in proc.stderr and needle in proc.stderr


def test_unset_token_is_named_when_the_first_call_is_made(live_sandbox: Sandbox, tmp_path: Path) -> None:
    config = write_config(tmp_path / "cfg.yaml", live_sandbox, tmp_path / "db.duckdb")
    proc = run([str(BIN / "metronome-suger"), "verify"], cwd=tmp_path,
               env={"METRONOME_SUGER_CONFIG": str(config), "METRONOME_API_TOKEN": "", "SUGER_API_KEY": "x"})
    assert proc.returncode == 1
    assert "METRONOME_API_TOKEN is not set" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_demo_prints_the_window_table(tmp_path: Path) -> None:
    proc = run([str(BIN / "metronome-suger"), "demo", "--windows", "2"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("metronome-suger: using the bundled sandbox configuration")
    header = next(i for i, line in enumerate(lines) if line.startswith("window (UTC)"))
    rows = lines[header + 2: header + 4]
    assert len(rows) == 2
    for row in rows:
        # the status sensor's poll saw Suger forward every group; only the sandbox's unlinked customer warns
        assert "accepted:" in row and "sent:" not in row
        # Suger's usage record reports say the marketplaces billed every group of the window
        groups = row.split()[2]
        assert f" {groups}/{groups} groups $" in row
        assert "customer_linkage:warn" in row
        assert "FAIL" not in row
    assert (tmp_path / "data" / "demo" / "metronome_suger.duckdb").exists()


@pytest.mark.parametrize("mode", ["amount_hourly", "amount_daily"])
def test_demo_runs_in_the_amount_modes(tmp_path: Path, mode: str) -> None:
    proc = run([str(BIN / "metronome-suger"), "demo", "--windows", "2", "--mode", mode], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert f"billing mode {mode}, 2 windows" in proc.stdout
    header = next(i for i, line in enumerate(lines) if line.startswith("window (UTC)"))
    assert "invoice increase" in lines[header]
    rows = lines[header + 2: header + 4]
    assert all("$" in row and "usage_fee=" in row and "FAIL" not in row for row in rows), rows


def test_sandbox_command_prints_urls_org_id_and_environment(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [str(BIN / "metronome-suger"), "sandbox", "--metronome-port", "0", "--suger-port", "0", "--customers", "2"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        lines = []
        for line in proc.stdout:  # blocks until the sandbox has printed its banner
            lines.append(line.rstrip())
            if line.startswith("Press Ctrl-C"):
                break
        text = "\n".join(lines)
        assert "org id: org-sandbox" in text
        assert "export METRONOME_API_TOKEN=sandbox-metronome-token" in text
        assert "export SUGER_API_KEY=sandbox-suger-key" in text
        url = next(line.split()[-1] for line in lines if line.startswith("Metronome emulator:"))
        answer = httpx.get(f"{url}/v1/customers", headers={"Authorization": "Bearer sandbox-metronome-token"})
        assert answer.status_code == 200 and len(answer.json()["data"]) == 2
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_dagster_cli_materializes_a_window_and_reconcile_accounts_for_it(live_sandbox: Sandbox, tmp_path: Path) -> None:
    """One window materialized end to end with the Dagster CLI and forwarded by Suger's job: `metronome-suger reconcile`
    prints one line per entitlement × dimension with nothing unexplained (exit 0), `--json` gives the exact
    figures, the reconciliation location materializes with `--select '*'` too; a group Suger reports for our
    entitlement that nobody we know sent makes it exit 1, naming the group."""
    sb = live_sandbox
    start = floor(datetime.now(timezone.utc), True) - timedelta(hours=1)
    cpu = sb.metronome.add_billable_metric("cpu_hours")["id"]
    customer = sb.metronome.add_customer("Dana")["id"]
    buyer = sb.suger.add_buyer("Dana AWS", partner="AWS", metronome_customer_id=customer)["id"]
    ent = sb.suger.add_entitlement(buyer, partner="AWS", dimensions=AWS_DIMS)["id"]
    sb.metronome.set_usage(customer, cpu, start, Decimal("7.5"))
    config = write_config(tmp_path / "cfg.yaml", sb, tmp_path / "db.duckdb")
    env = {"METRONOME_SUGER_CONFIG": str(config), **sb.env()}
    window = run([str(BIN / "dagster"), "asset", "materialize", "-m", "metronome_suger.definitions",
                  "--select", "*", "--partition", start.strftime("%Y-%m-%d-%H:%M")], cwd=tmp_path, env=env)
    assert window.returncode == 0, window.stderr[-3000:]
    assert [(g["entitlementID"], g["records"]) for g in sent_groups(sb)] == [(ent, {"cpu_hour": Decimal("7.5")})]
    sb.suger.run_forwarder()  # Suger's hourly job, now: 7 whole units to AWS, 0.5 carried
    day = start.strftime("%Y-%m-%d")

    text = run([str(BIN / "metronome-suger"), "reconcile", "--day", day], cwd=tmp_path, env=env)
    assert text.returncode == 0, text.stdout + text.stderr
    assert f"marketplace reconciliation of {day} (UTC): 1 usage record report(s)" in text.stdout
    assert f"- {ent} cpu_hour: carry -0.5" in text.stdout
    assert "every difference is explained" in text.stdout
    as_json = run([str(BIN / "metronome-suger"), "reconcile", "--day", day, "--entitlement", ent, "--json"],
                  cwd=tmp_path, env=env)
    assert as_json.returncode == 0, as_json.stderr
    payload = json.loads(as_json.stdout.split("\n", 1)[1])  # the first line announces the configuration
    [line] = payload["lines"]
    assert (line["converted"], line["sent"], line["told"], line["billed_dollars"], line["differences"]) == (
        "7.5", "7.5", "7", "0.84", {"carry": "-0.5"})
    reports = run([str(BIN / "dagster"), "asset", "materialize", "-m", "metronome_suger.reconciliation_definitions",
                   "--select", "*", "--partition", day], cwd=tmp_path, env=env)
    assert reports.returncode == 0, reports.stderr[-3000:]

    stranger = sb.suger.add_foreign_group(ent, {"cpu_hour": 2}, source="STRIPE", timestamp=start)["id"]
    sb.suger.run_forwarder()
    failing = run([str(BIN / "metronome-suger"), "reconcile", "--day", day], cwd=tmp_path, env=env)
    assert failing.returncode == 1, failing.stdout + failing.stderr
    assert f"- foreign group {stranger}:" in failing.stdout
    assert "1 line(s) with missing_report or unexplained" in failing.stdout
    for secret in sb.env().values():
        assert secret not in (window.stdout + window.stderr + text.stdout + as_json.stdout + failing.stdout
                              + reports.stdout + reports.stderr)


def test_an_unreachable_ledger_database_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    """`status` against a PostgreSQL ledger nobody listens for: our error line naming host and port, exit 1."""
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump({
        "suger": {"org_id": "org-1"}, "start": "2026-11-01T00:00:00Z",
        "storage": {"url": f"postgresql://ledger@127.0.0.1:{port}/ledger", "password_env": "LEDGER_PW"}}))
    proc = run([str(BIN / "metronome-suger"), "status"], cwd=tmp_path,
               env={"METRONOME_SUGER_CONFIG": str(config), "LEDGER_PW": "not-used-here-secret"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[0]  # libpq's own message may add a hint line
    assert line.startswith(f"metronome-suger: error: cannot open the ledger database postgresql://ledger@127.0.0.1:{port}/ledger")
    assert "not-used-here-secret" not in proc.stdout + proc.stderr
