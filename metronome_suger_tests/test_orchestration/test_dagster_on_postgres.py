"""Dagster itself on PostgreSQL, as ``deploy/dagster.yaml`` documents it: a 24-window job backfill launched the
way the UI launches one (GraphQL ``launchPartitionBackfill``, through the ``dagster-graphql`` command), its runs
created by a real ``dagster-daemon run`` (backfill daemon), queued by the QueuedRunCoordinator
(``max_concurrent_runs: 4``) and launched by the same daemon; each run on the multiprocess executor (one process
per step); the ledger on another database of the same PostgreSQL server. Everything that runs is a real process:
the test only builds the data, reads Dagster's run storage and the ledger, and asks the Suger emulator what it
received."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.dagster_run import DagsterRunStatus, RunRecord
from pydantic import SecretStr

from metronome_suger.config import parse_config_data
from metronome_suger.core.windows import floor
from metronome_suger.orchestration.keys import JOB, LATE_USAGE_SENSOR, STATUS_SENSOR
from metronome_suger.sandbox.server import Sandbox
from metronome_suger.storage.db import Database, connect
from metronome_suger_tests.conftest import (
    AWS_DIMS,
    GCP_DIMS,
    LEDGER_PASSWORD_ENV,
    PostgresLedger,
    sent_groups,
)
from metronome_suger_tests.postgres import PostgresServer

pytestmark = pytest.mark.slow

UTC = timezone.utc
HOUR = timedelta(hours=1)
BIN = Path(sys.executable).parent
DEPLOY_YAML = Path(__file__).resolve().parents[2] / "deploy" / "dagster.yaml"
WINDOWS = 24
MAX_RUNS = 4
RUNS_TIMEOUT = 900.0  # seconds for the whole backfill (3-5 min on 2 CPUs: 24 runs of 11 step processes)
CLI_TIMEOUT = 180
LOCATION = "metronome_suger.definitions"  # `-m` module: also the code location's name
# The backfill's run config, as deploy/dagster.yaml recommends it: the multiprocess executor (Dagster's default
# for the job) with its step processes forked from a server that has already imported the code location (with
# the default `spawn` every step imports it again: about 2.5 s of CPU per step, 11 steps per run).
RUN_CONFIG = {"execution": {"config": {"multiprocess": {
    "max_concurrent": 3, "start_method": {"forkserver": {"preload_modules": [LOCATION, "dagster_postgres"]}}}}}}
BACKFILL_MUTATION = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on PartitionSetNotFoundError { message }
    ... on PartitionKeysNotFoundError { message }
  }
}"""
AZURE_DIMS = [{"key": "compute", "name": "Compute", "rate": 0.2},
              {"key": "calls", "name": "API calls", "rate": 0.0001}]
DIMENSIONS = {"AWS": AWS_DIMS, "GCP": GCP_DIMS, "AZURE": AZURE_DIMS}
# source key -> (target dimension, multiplier), per marketplace
CONVERSION = {
    "AZURE": {"cpu_hours": ("compute", Decimal(1)), "api_calls": ("calls", Decimal(1))},
    "AWS": {"cpu_hours": ("cpu_hour", Decimal(1)), "api_calls": ("api_request", Decimal("0.001"))},
    "GCP": {"cpu_hours": ("vcpu_hours", Decimal(2)), "api_calls": ("requests", Decimal(1))},
}
# Azure keeps every window of the backfill (24 h deadline); AWS (6 h) and GCP (1 h after the hour) only the
# recent ones: with the real clock the older windows of those two are past their deadline and must be expired.
CUSTOMERS = [("Ada", "AZURE"), ("Bruno", "AZURE"), ("Chen", "AWS"), ("Dina", "GCP")]
TERMINAL = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


@dataclass(frozen=True)
class World:
    windows: list[datetime]
    expected: dict[tuple[str, datetime], dict[str, Decimal]]  # (entitlement, window start) -> records


def usage(customer: int, window: int) -> dict[str, Decimal]:
    """A different value for every customer and window, so a group landing in the wrong window shows."""
    return {"cpu_hours": Decimal(f"{customer + 1}.{window + 1:02d}"), "api_calls": Decimal(1000 * (window + 1) + customer)}


def build_world(sb: Sandbox) -> World:
    """24 hourly windows ending at the last full hour, usage in every one for every customer."""
    last = floor(datetime.now(UTC), True) - HOUR
    windows = [last - HOUR * (WINDOWS - 1 - i) for i in range(WINDOWS)]
    metrics = {name: sb.metronome.add_billable_metric(name)["id"] for name in ("cpu_hours", "api_calls")}
    expected = {}
    for c, (name, partner) in enumerate(CUSTOMERS):
        customer = sb.metronome.add_customer(name)["id"]
        buyer = sb.suger.add_buyer(f"{name} {partner}", partner=partner, metronome_customer_id=customer)["id"]
        ent = sb.suger.add_entitlement(buyer, partner=partner, dimensions=DIMENSIONS[partner])["id"]
        for w, start in enumerate(windows):
            values = usage(c, w)
            for metric, value in values.items():
                sb.metronome.set_usage(customer, metrics[metric], start, value)
            expected[(ent, start)] = {CONVERSION[partner][k][0]: v * CONVERSION[partner][k][1]
                                      for k, v in values.items()}
    return World(windows, expected)


def app_settings(sb: Sandbox, ledger: PostgresLedger, first: datetime) -> dict[str, Any]:
    return {
        "metronome": {"base_url": sb.metronome_url},
        "suger": {"base_url": sb.suger_url, "org_id": sb.org_id},
        "start": first.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "dimension_conversion": {
            partner: {key: [{"dimension_key": dim, "mapping_mode": "QUANTITY", "multiplier": str(mult)}]
                      for key, (dim, mult) in mapping.items()}
            for partner, mapping in CONVERSION.items()},
        "storage": {"url": ledger.url, "password_env": LEDGER_PASSWORD_ENV},
    }


@pytest.fixture
def dagster_database(postgres_server: PostgresServer) -> Iterator[str]:
    """Dagster's own storage: a fresh database of the session's server, next to (not in) the ledger's."""
    name = f"dagster_{uuid.uuid4().hex[:16]}"
    postgres_server.create_database(name)
    try:
        yield name
    finally:
        postgres_server.drop_database(name)


def dagster_env(server: PostgresServer, database: str) -> dict[str, str]:
    """The variables deploy/dagster.yaml reads (``env:``) for Dagster's storage."""
    return {"DAGSTER_PG_USERNAME": server.user, "DAGSTER_PG_PASSWORD": server.password,
            "DAGSTER_PG_HOST": server.host, "DAGSTER_PG_DB": database, "DAGSTER_PG_PORT": str(server.port)}


def run_cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False)


def stop_process_group(proc: subprocess.Popen[bytes]) -> None:
    """The daemon first (SIGINT: it shuts its threads and code server down), then whatever it started that is
    still alive (its session: the code server, run workers of an unfinished run)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def wait_for_runs(instance: dg.DagsterInstance, daemon: subprocess.Popen[bytes], daemon_log: Path) -> list[RunRecord]:
    """Poll the run storage until every run of the backfill has finished (bounded; fails early if the daemon
    exits)."""
    deadline = time.monotonic() + RUNS_TIMEOUT
    records: list[RunRecord] = []
    while time.monotonic() < deadline:
        records = list(instance.get_run_records())
        if len(records) >= WINDOWS and all(r.dagster_run.status in TERMINAL for r in records):
            return records
        if daemon.poll() is not None:
            pytest.fail(f"dagster-daemon exited ({daemon.returncode}):\n{daemon_log.read_text()[-5000:]}")
        time.sleep(1.0)  # polling interval of a bounded wait on the run storage, not a synchronization
    statuses = sorted(str(r.dagster_run.status) for r in records)
    pytest.fail(f"backfill not finished after {RUNS_TIMEOUT:g} s: {statuses}\n{daemon_log.read_text()[-5000:]}")


def launched_intervals(instance: dg.DagsterInstance, records: list[RunRecord]) -> list[tuple[float, float]]:
    """Each run from the moment the daemon launched it (RUN_STARTING, what the queue counts) to its end."""
    intervals = []
    for record in records:
        [starting] = instance.all_logs(record.dagster_run.run_id, of_type=dg.DagsterEventType.RUN_STARTING)
        assert record.end_time is not None
        intervals.append((starting.timestamp, record.end_time))
    return intervals


def step_processes(instance: dg.DagsterInstance, run_id: str) -> tuple[int, set[int]]:
    """How many steps the run started, and the distinct processes they started in."""
    starts = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)
    return len(starts), {e.dagster_event.pid for e in starts if e.dagster_event and e.dagster_event.pid is not None}


def failure_messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """What a failed run said (its step failures and failed checks), for the assertion message."""
    out = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        data = entry.dagster_event.step_failure_data if entry.dagster_event else None
        error, messages = data.error if data else None, []
        while error is not None:  # Dagster's wrapper first, then what our code raised
            messages.append(error.message.strip())
            error = error.cause
        out.append(f"{entry.step_key}: {' <- '.join(messages) or entry.message}"[:3000])
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        check = entry.dagster_event.event_specific_data if entry.dagster_event else None
        if isinstance(check, dg.AssetCheckEvaluation) and not check.passed:
            out.append(f"{check.check_name}: {check.description}"[:3000])
    return out


def peak_overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at one instant (an end at the same instant as a start counts as before it)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    peak = running = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


def test_deploy_dagster_yaml_is_postgres_queued_and_private() -> None:
    """The documented file itself: the three storages on dagster-postgres from env vars only, the queue at 4,
    no `concurrency:` block (it would clash with run_coordinator's limits), no telemetry."""
    config = yaml.safe_load(DEPLOY_YAML.read_text())
    assert set(config) == {"run_storage", "event_log_storage", "schedule_storage", "run_coordinator", "telemetry"}
    for key, module in (("run_storage", "dagster_postgres.run_storage"),
                        ("event_log_storage", "dagster_postgres.event_log"),
                        ("schedule_storage", "dagster_postgres.schedule_storage")):
        assert config[key]["module"] == module
        db = config[key]["config"]["postgres_db"]
        # Every connection value from the environment (no secret in the file); the driver named, since
        # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, which dagster-postgres does not install.
        assert db.pop("scheme") == "postgresql+psycopg2"
        assert set(db) == {"username", "password", "hostname", "db_name", "port"}
        assert all(set(value) == {"env"} for value in db.values()), db
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["run_coordinator"]["config"]["max_concurrent_runs"] == MAX_RUNS
    assert config["telemetry"] == {"enabled": False}


def test_backfill_of_24_windows_on_dagster_on_postgres(
    postgres_server: PostgresServer, postgres_ledger: PostgresLedger, dagster_database: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """24 successful runs, one per window, each step in a process of its own; never more than 4 runs between
    launch and end; every window exact (one group per entitlement and window in the ledger, its lines the
    converted Metronome usage; sent or expired as its marketplace's deadline stood during its run); at Suger
    exactly the ledger's sent groups, each once; every window claim released; no secret in any output."""
    with Sandbox(customers=0) as sb:  # the real clock: the daemon's runs use wall time for deadlines
        world = build_world(sb)
        keys = [w.strftime("%Y-%m-%d-%H:%M") for w in world.windows]

        # DAGSTER_HOME with deploy/dagster.yaml as documented (its env vars point at Dagster's database).
        home = tmp_path / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text(DEPLOY_YAML.read_text())
        settings = app_settings(sb, postgres_ledger, world.windows[0])
        config_file = tmp_path / "metronome_suger.yaml"
        config_file.write_text(yaml.safe_dump(settings))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "METRONOME_SUGER"))}
        env.update(sb.env(), DAGSTER_HOME=str(home), METRONOME_SUGER_CONFIG=str(config_file),
                   **{LEDGER_PASSWORD_ENV: postgres_ledger.password},
                   **dagster_env(postgres_server, dagster_database))
        for name, value in env.items():
            if name.startswith("DAGSTER_"):
                monkeypatch.setenv(name, value)  # this process reads the same instance, to watch the runs
        location = ["-m", LOCATION]

        # Only the backfill's runs in this test: the schedule and the sensors (RUNNING by default) are stopped
        # before the daemon starts, as an operator would. The first command creates Dagster's tables.
        stop_schedule = run_cli([str(BIN / "dagster"), "schedule", "stop", f"{JOB}_schedule", *location], tmp_path, env)
        assert stop_schedule.returncode == 0, stop_schedule.stdout[-3000:] + stop_schedule.stderr[-3000:]
        stops = [subprocess.Popen([str(BIN / "dagster"), "sensor", "stop", name, *location], cwd=tmp_path, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for name in (LATE_USAGE_SENSOR, STATUS_SENSOR)]
        # The backfill, as the UI launches it: 24 partitions of the job, with the run config above.
        answer = tmp_path / "backfill.json"
        params = {"selector": {"partitionSetName": f"{JOB}_partition_set",
                               "repositorySelector": {"repositoryLocationName": LOCATION,
                                                      "repositoryName": "__repository__"}},
                  "partitionNames": keys, "runConfigData": RUN_CONFIG, "title": "24 windows"}
        launch = run_cli([str(BIN / "dagster-graphql"), *location, "-t", BACKFILL_MUTATION,
                          "-v", json.dumps({"params": params}), "-o", str(answer)], tmp_path, env)
        for proc in stops:
            out, _ = proc.communicate(timeout=CLI_TIMEOUT)
            assert proc.returncode == 0, out[-3000:]
        assert launch.returncode == 0, launch.stdout[-3000:] + launch.stderr[-3000:]
        result = json.loads(answer.read_text())["data"]["launchPartitionBackfill"]
        assert result["__typename"] == "LaunchBackfillSuccess", result
        backfill_id = result["backfillId"]

        instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
        try:
            assert not instance.get_run_records()  # requested: the daemon creates the runs

            daemon_log = tmp_path / "daemon.log"
            with daemon_log.open("wb") as log:
                daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", *location], cwd=tmp_path, env=env,
                                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                records = wait_for_runs(instance, daemon, daemon_log)
            finally:
                stop_process_group(daemon)
            failures = {r.dagster_run.tags.get("dagster/partition"): failure_messages(instance, r.dagster_run.run_id)
                        for r in records if r.dagster_run.status != DagsterRunStatus.SUCCESS}
            intervals = launched_intervals(instance, records)
            step_pids = {r.dagster_run.run_id: step_processes(instance, r.dagster_run.run_id) for r in records}
        finally:
            instance.dispose()

        # 24 successful runs, one per window, all from the backfill, with its run config, each step in a
        # process of its own (the multiprocess executor).
        assert not failures, failures
        assert sorted(r.dagster_run.tags["dagster/partition"] for r in records) == keys
        assert {r.dagster_run.tags["dagster/backfill"] for r in records} == {backfill_id}
        assert all(r.dagster_run.run_config == RUN_CONFIG for r in records)
        for run_id, (steps, pids) in step_pids.items():
            assert steps >= 6 and len(pids) == steps, (run_id, steps, pids)
        # Never more than 4 runs between launch and end, and the queue did run them side by side.
        assert 2 <= peak_overlap(intervals) <= MAX_RUNS, intervals

        # Every window exact in the ledger: one group per entitlement and window (revision 0), its lines the
        # converted Metronome usage, sent when its marketplace still took it at the time of its run, else expired.
        deadlines = parse_config_data(settings, origin="test").deadlines
        run_span = {r.dagster_run.tags["dagster/partition"]: span for r, span in zip(records, intervals, strict=True)}
        database = Database(postgres_ledger.url, SecretStr(postgres_ledger.password))
        with connect(database, read_only=True) as conn:
            ledger = conn.execute("SELECT record_group_id, entitlement_id, partner, window_start, timestamp, "
                                  "revision, status FROM report_ledger").fetchall()
            lines: dict[str, dict[str, Decimal]] = {}
            for group, dim, qty in conn.execute("SELECT record_group_id, dimension_key, quantity "
                                                "FROM report_lines").fetchall():
                lines.setdefault(group, {})[dim] = qty
            claims = conn.execute("SELECT claim_key, holder FROM window_claims").fetchall()
        by_key = {(ent, start.astimezone(UTC)): (group, partner, stamp, revision, status)
                  for group, ent, partner, start, stamp, revision, status in ledger}
        assert len(by_key) == len(ledger) == len(world.expected)
        assert set(by_key) == set(world.expected)
        for (ent, start), (group, partner, stamp, revision, status) in by_key.items():
            assert revision == 0
            assert lines[group] == world.expected[(ent, start)], (partner, start)
            launched, ended = run_span[start.strftime("%Y-%m-%d-%H:%M")]
            due = deadlines.deadline(stamp.astimezone(UTC), partner).timestamp()
            if due <= launched:
                assert status == "expired", (partner, start, status)
            elif due > ended:
                assert status == "sent", (partner, start, status)
            else:  # its deadline fell during its run: either is right
                assert status in ("sent", "expired"), (partner, start, status)
        statuses = {(partner, status) for _, partner, _, _, status in by_key.values()}
        assert {("AZURE", "sent"), ("AWS", "sent"), ("AWS", "expired"), ("GCP", "expired")} <= statuses
        # The window claims were taken in the shared database and all released.
        assert sorted(key for key, _ in claims) == sorted(f"quantity:{k}" for k in keys)
        assert all(holder is None for _, holder in claims)

        # At Suger: exactly the ledger's sent groups, each once, with the same records; nothing expired was sent.
        groups = sent_groups(sb)
        ids = [g["id"] for g in groups]
        assert len(ids) == len(set(ids)), "duplicate record groups at Suger"
        sent = {group: key for key, (group, _, _, _, status) in by_key.items() if status == "sent"}
        assert set(ids) == set(sent)
        for g in groups:
            ent, start = sent[g["id"]]
            assert g["entitlementID"] == ent
            assert g["records"] == world.expected[(ent, start)]

        # No password reached the processes' output.
        outputs = launch.stdout + launch.stderr + answer.read_text() + daemon_log.read_text()
        for secret in (postgres_server.password, postgres_ledger.password, *sb.env().values()):
            assert secret not in outputs
