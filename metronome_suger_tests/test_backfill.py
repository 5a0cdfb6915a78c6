"""``metronome-suger backfill``: real subprocesses against a running sandbox (real clock), and the range rules."""

import os
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.instance.ref import InstanceRef

from metronome_suger.backfill import BackfillError, parse_bound, resolve_range
from metronome_suger.config import AppConfig, parse_config_data
from metronome_suger.core.windows import Window, floor, iso, last_closed_windows
from metronome_suger.demo import DAGSTER_YAML
from metronome_suger.orchestration.sensors import TRIGGER_TAG
from metronome_suger.sandbox.server import Sandbox
from metronome_suger_tests.conftest import AWS_DIMS, sent_groups

CLI = Path(sys.executable).parent / "metronome-suger"
SETTLE = timedelta(minutes=15)  # the configuration's default settle_minutes
HOUR = timedelta(hours=1)


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("METRONOME_SUGER_CONFIG", "DAGSTER_HOME")}
    full_env.update(env)
    return subprocess.run([str(CLI), "backfill", *args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=300)


def write_config(path: Path, metronome_url: str, suger_url: str, org_id: str, db: Path, **extra) -> Path:
    data = {
        "metronome": {"base_url": metronome_url},
        "suger": {"base_url": suger_url, "org_id": org_id},
        "start": "2026-11-01T00:00:00Z",
        "dimension_conversion": {"AWS": {"cpu_hours": [{"dimension_key": "cpu_hour", "multiplier": 1}]}},
        "storage": {"duckdb_path": str(db)},
        **extra,
    }
    path.write_text(yaml.safe_dump(data))
    return path


@dataclass
class World:
    """Two linked AWS customers with usage in the last three hourly windows that closed ``SETTLE`` ago: Dana in
    all three (7.5, 8.5, 9.5 cpu hours), Eli (2) in the first and the last."""

    sb: Sandbox
    windows: list[Window]
    dana: str  # entitlement ids
    eli: str
    env: dict[str, str]
    tmp: Path


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with Sandbox(customers=0) as sb:  # real clock: the runs use wall time for deadlines and "closed"
        windows = last_closed_windows(datetime.now(timezone.utc), True, 3, SETTLE)
        cpu = sb.metronome.add_billable_metric("cpu_hours")["id"]
        ents = []
        for name in ("Dana", "Eli"):
            customer = sb.metronome.add_customer(name)["id"]
            buyer = sb.suger.add_buyer(f"{name} AWS", partner="AWS", metronome_customer_id=customer)["id"]
            ents.append(sb.suger.add_entitlement(buyer, partner="AWS", dimensions=AWS_DIMS)["id"])
            for i, window in enumerate(windows):
                if name == "Dana":
                    sb.metronome.set_usage(customer, cpu, window.start, Decimal("7.5") + i)
                elif i != 1:
                    sb.metronome.set_usage(customer, cpu, window.start, Decimal(2))
        config = write_config(tmp_path / "cfg.yaml", sb.metronome_url, sb.suger_url, sb.org_id,
                              tmp_path / "data" / "ledger.duckdb", http={"max_attempts": 1})
        yield World(sb, windows, ents[0], ents[1], {"METRONOME_SUGER_CONFIG": str(config), **sb.env()}, tmp_path)


def table_rows(stdout: str) -> list[list[str]]:
    """The per-window table's rows, split into cells (cells are separated by two spaces or more)."""
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("window (UTC)"))
    rows = []
    for line in lines[header + 2:]:
        if not re.match(r"\d{4}-\d{2}-\d{2}-\d{2}:\d{2}  ", line):
            break
        rows.append(re.split(r" {2,}", line.rstrip()))
    return rows


def assert_no_secrets(world: World, *procs: subprocess.CompletedProcess) -> None:
    for secret in world.sb.env().values():
        assert all(secret not in proc.stdout + proc.stderr for proc in procs)


def test_backfill_sends_each_window_once_and_a_rerun_sends_nothing(world: World) -> None:
    """Partition keys (both included) run the three windows: exit 0, progress on stderr, the demo's table on stdout,
    one group per entitlement × window at Suger. The same range again, as times (end excluded), on a DAGSTER_HOME
    instance: nothing new is sent, exit 0, and that instance records the three runs with their partitions."""
    w0, w1, w2 = world.windows
    keys = [w.partition_key for w in world.windows]
    first = run(["--from", keys[0], "--to", keys[2]], world.tmp, world.env)
    assert first.returncode == 0, first.stdout + first.stderr[-3000:]
    lines = first.stdout.splitlines()
    assert lines[0] == f"metronome-suger: using configuration {world.env['METRONOME_SUGER_CONFIG']}"
    assert lines[1] == (f"backfill: 3 hourly windows, {keys[0]} to {keys[2]} ({iso(w0.start)}..{iso(w2.end)}), "
                        "billing mode quantity; runs of metronome_suger_job on an ephemeral Dagster instance (set "
                        "DAGSTER_HOME to keep the runs)")
    rows = table_rows(first.stdout)
    assert [row[:7] for row in rows] == [
        [keys[0], "2", "2", "cpu_hour=9.5", "sent:2", "0/2 groups $0.00", "all 5 ok"],
        [keys[1], "1", "1", "cpu_hour=8.5", "sent:1", "0/1 groups $0.00", "all 5 ok"],
        [keys[2], "2", "2", "cpu_hour=11.5", "sent:2", "0/2 groups $0.00", "all 5 ok"],
    ]
    assert all(len(row) == 8 and row[7].endswith(" h") for row in rows), rows
    assert lines[-1] == "backfill: 3 windows run, 0 failed; 5 groups sent ($3.54), 5 of them by this backfill"
    err = first.stderr.splitlines()
    assert err[:3] == [f"{keys[0]}  ok  2 groups sent ($1.14), 2 new",
                       f"{keys[1]}  ok  1 group sent ($1.02), 1 new",
                       f"{keys[2]}  ok  2 groups sent ($1.38), 2 new"]
    assert re.fullmatch(r"backfill done ━+ 3/3 windows · 5 groups sent \(5 new\) · \$3\.54 · 0 failed \d+:\d\d:\d\d",
                        err[3].rstrip()), err
    assert len(err) == 4, err  # nothing else: no Dagster log lines, no traceback

    expected = Counter([(world.dana, iso(w0.start), (("cpu_hour", Decimal("7.5")),)),
                        (world.eli, iso(w0.start), (("cpu_hour", Decimal(2)),)),
                        (world.dana, iso(w1.start), (("cpu_hour", Decimal("8.5")),)),
                        (world.dana, iso(w2.start), (("cpu_hour", Decimal("9.5")),)),
                        (world.eli, iso(w2.start), (("cpu_hour", Decimal(2)),))])

    def at_suger() -> Counter:
        return Counter((g["entitlementID"], g["metaInfo"]["timestamp"], tuple(sorted(g["records"].items())))
                       for g in sent_groups(world.sb))

    assert at_suger() == expected

    home = world.tmp / "dagster_home"
    home.mkdir()  # as `metronome-suger dev` makes it: the DuckDB pool limited to one step at a time
    (home / "dagster.yaml").write_text(DAGSTER_YAML + "telemetry:\n  enabled: false\n")
    again = run(["--from", iso(w0.start), "--to", iso(w2.end)], world.tmp, {**world.env, "DAGSTER_HOME": str(home)})
    assert again.returncode == 0, again.stdout + again.stderr[-3000:]
    assert f"runs of metronome_suger_job on the Dagster instance in {home}" in again.stdout.splitlines()[1]
    assert [row[:7] for row in table_rows(again.stdout)] == [row[:7] for row in rows]
    assert again.stdout.splitlines()[-1] == ("backfill: 3 windows run, 0 failed; 5 groups sent ($3.54), 0 of them "
                                             "by this backfill")
    assert again.stderr.splitlines()[:3] == [f"{keys[0]}  ok  2 groups sent ($1.14), 0 new",
                                             f"{keys[1]}  ok  1 group sent ($1.02), 0 new",
                                             f"{keys[2]}  ok  2 groups sent ($1.38), 0 new"]
    assert at_suger() == expected  # exactly once: the re-run sent nothing

    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        records = instance.get_run_records()
        runs = sorted(((r.dagster_run.tags["dagster/partition"], r.dagster_run.job_name, r.dagster_run.status,
                        r.dagster_run.tags[TRIGGER_TAG]) for r in records))
    assert runs == [(key, "metronome_suger_job", dg.DagsterRunStatus.SUCCESS, "backfill") for key in keys]
    assert_no_secrets(world, first, again)


def test_a_failed_window_is_listed_and_exits_1(world: World) -> None:
    """Metronome refuses the first window's usage read (a 400, not retried): that window fails, the others are
    sent, the failure is listed after the table, and the exit code is 1."""
    keys = [w.partition_key for w in world.windows]
    world.sb.metronome_faults.inject("respond", times=1, method="POST", path_prefix="/v1/usage", status=400,
                                     body='{"message": "refused by the test"}',
                                     headers={"content-type": "application/json"})
    proc = run(["--from", keys[0], "--to", keys[2]], world.tmp, world.env)
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    rows = table_rows(proc.stdout)
    assert [row[:3] for row in rows] == [[keys[0], "0", "0"], [keys[1], "1", "1"], [keys[2], "2", "2"]]
    failures = [line for line in proc.stdout.splitlines() if line.startswith(f"{keys[0]}: ")]
    assert failures == [f"{keys[0]}: metronome_usage failed: metronome_suger.clients.errors.BadRequestError: "
                        "Metronome POST /v1/usage -> 400: refused by the test"], proc.stdout
    assert proc.stdout.splitlines()[-1] == "backfill: 3 windows run, 1 failed; 3 groups sent ($2.40), 3 of them by " \
                                           "this backfill"
    err = proc.stderr.splitlines()
    assert err[:3] == [f"{keys[0]}  FAILED  0 groups sent ($0.00), 0 new",
                       f"{keys[1]}  ok  1 group sent ($1.02), 1 new",
                       f"{keys[2]}  ok  2 groups sent ($1.38), 2 new"]
    assert "· 1 failed" in err[3]
    assert {g["metaInfo"]["timestamp"] for g in sent_groups(world.sb)} == {iso(world.windows[1].start),
                                                                           iso(world.windows[2].start)}
    assert_no_secrets(world, proc)


def test_ctrl_c_stops_the_backfill_after_the_window_it_interrupted(world: World) -> None:
    """SIGINT while the first window waits on Metronome: Dagster fails that run instead of raising, and the backfill
    stops there (the other windows are not run), prints what it did, and exits 130."""
    keys = [w.partition_key for w in world.windows]
    reading = threading.Event()
    log = world.sb.metronome_log
    append = log._append

    def noticed(entry) -> None:  # the usage read has reached the sandbox, which holds it for a while
        append(entry)
        if entry.path.startswith("/v1/usage"):
            reading.set()

    log._append = noticed  # type: ignore[method-assign]
    world.sb.metronome_faults.inject("latency", times=1, method="POST", path_prefix="/v1/usage", delay_seconds=5)
    env = {k: v for k, v in os.environ.items() if k not in ("METRONOME_SUGER_CONFIG", "DAGSTER_HOME")}
    proc = subprocess.Popen([str(CLI), "backfill", "--from", keys[0], "--to", keys[2]], cwd=world.tmp,
                            env={**env, **world.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert reading.wait(timeout=120), "the first window never read its usage"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, out + err[-3000:]
    assert [row[:3] for row in table_rows(out)] == [[keys[0], "0", "0"]]
    assert out.splitlines()[-1] == ("backfill: interrupted after 1 window of 3, 1 failed; 0 groups sent ($0.00), 0 of "
                                    "them by this backfill")
    assert err.splitlines()[0] == f"{keys[0]}  INTERRUPTED  0 groups sent ($0.00), 0 new"
    assert re.fullmatch(r"backfill interrupted ━+ +1/3 windows · 0 groups sent \(0 new\) · \$0\.00 · 1 failed "
                        r"\d+:\d\d:\d\d", err.splitlines()[1].rstrip()), err
    assert sent_groups(world.sb) == []


@pytest.fixture
def offline_config(tmp_path: Path) -> dict[str, str]:
    """A configuration whose APIs are never called: a refused range stops before any request or run."""
    config = write_config(tmp_path / "cfg.yaml", "http://127.0.0.1:9", "http://127.0.0.1:9", "org-x",
                          tmp_path / "ledger.duckdb")
    return {"METRONOME_SUGER_CONFIG": str(config)}


def _hour_key(at: datetime) -> str:
    return floor(at, True).strftime("%Y-%m-%d-%H:%M")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (lambda now: ["--from", "yesterday", "--to", "2026-11-02"],
         lambda now: "--from 'yesterday': not a partition key (2026-11-25-13:00 hourly, 2026-11-25 daily) or an "
                     "ISO-8601 time (2026-11-25T13:00:00Z)"),
        (lambda now: ["--from", "2026-11-02T10:30:00Z", "--to", "2026-11-02T12:00:00Z"],
         lambda now: "--from 2026-11-02T10:30:00Z: this time is not on a window boundary (2026-11-02T10:30:00Z), "
                     "and billing_mode quantity has hourly windows (a whole UTC hour)"),
        (lambda now: ["--from", "2026-11-02-12:00", "--to", "2026-11-02-11:00"],
         lambda now: "--to 2026-11-02-11:00 is not after --from 2026-11-02-12:00: the range is empty"),
        (lambda now: ["--from", "2026-11-02T12:00:00Z", "--to", "2026-11-02T12:00:00Z"],
         lambda now: "--to 2026-11-02T12:00:00Z is not after --from 2026-11-02T12:00:00Z: the range is empty (a "
                     "time given to --to is the end of the range, excluded)"),
        (lambda now: ["--from", "2026-10-31-23:00", "--to", "2026-11-01-01:00"],
         lambda now: "--from 2026-10-31-23:00 is before the configuration's start (2026-11-01T00:00:00Z): there "
                     "are no windows before it"),
        (lambda now: ["--from", _hour_key(now - 3 * HOUR), "--to", _hour_key(now)],
         lambda now: f"--to {_hour_key(now)}: the window {_hour_key(now)} has not closed yet (it is read from "
                     f"{iso(floor(now, True) + HOUR + SETTLE)}); the last window ready now is "
                     f"{_hour_key(now - SETTLE - HOUR)}"),
        (lambda now: ["--from", _hour_key(now - 3 * HOUR), "--to", _hour_key(now + 2 * HOUR)],
         lambda now: f"--to {_hour_key(now + 2 * HOUR)}: the window {_hour_key(now + 2 * HOUR)} is in the future "
                     f"(it is read from {iso(floor(now, True) + 3 * HOUR + SETTLE)}); the last window ready now is "
                     f"{_hour_key(now - SETTLE - HOUR)}"),
    ],
    ids=["not-a-time", "misaligned", "to-before-from", "empty-time-range", "before-start", "open-window", "future"],
)
def test_a_bad_range_is_one_line_naming_the_value(tmp_path: Path, offline_config: dict[str, str], args, message) -> None:
    for _ in range(2):  # again if the clock crossed an hour or a settle boundary while the command ran
        now = datetime.now(timezone.utc)
        proc = run(args(now), tmp_path, offline_config)
        after = datetime.now(timezone.utc)
        if all(floor(now - lag, True) == floor(after - lag, True) for lag in (timedelta(0), SETTLE)):
            break
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr == f"metronome-suger: error: {message(now)}\n"
    assert proc.stdout == f"metronome-suger: using configuration {offline_config['METRONOME_SUGER_CONFIG']}\n"
    assert not (tmp_path / "ledger.duckdb").exists()  # refused before anything was created or run


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"METRONOME_API_TOKEN": "", "SUGER_API_KEY": "x" * 12},
         "environment variable METRONOME_API_TOKEN is not set (it must hold the API token)"),
        ({"METRONOME_API_TOKEN": "x" * 12, "SUGER_API_KEY": "x" * 12, "DAGSTER_HOME": "/nonexistent/dagster_home"},
         '$DAGSTER_HOME "/nonexistent/dagster_home" is not a directory or does not exist. Dagster requires this '
         "environment variable to be set to an existing directory in your filesystem"),
    ],
    ids=["unset-token", "bad-dagster-home"],
)
def test_an_environment_problem_is_one_line_before_any_run(tmp_path: Path, offline_config: dict[str, str],
                                                            env: dict[str, str], message: str) -> None:
    key = last_closed_windows(datetime.now(timezone.utc), True, 1, SETTLE)[0].partition_key
    proc = run(["--from", key, "--to", key], tmp_path, {**offline_config, **env})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr == f"metronome-suger: error: {message}\n"
    assert not (tmp_path / "ledger.duckdb").exists()


def test_a_missing_bound_is_argparse_usage_error(tmp_path: Path, offline_config: dict[str, str]) -> None:
    proc = run(["--from", "2026-11-02-10:00"], tmp_path, offline_config)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == ("metronome-suger backfill: error: the following arguments are required: "
                                            "--to")


def test_hourly_keys_are_refused_in_the_daily_mode(tmp_path: Path) -> None:
    config = write_config(tmp_path / "cfg.yaml", "http://127.0.0.1:9", "http://127.0.0.1:9", "org-x",
                          tmp_path / "ledger.duckdb", billing_mode="amount_daily",
                          dimension_conversion={"AWS": {"metronome": [{"dimension_key": "usage_fee",
                                                                       "mapping_mode": "AMOUNT"}]}})
    proc = run(["--from", "2026-11-02-10:00", "--to", "2026-11-03"], tmp_path, {"METRONOME_SUGER_CONFIG": str(config)})
    assert proc.returncode == 1
    assert proc.stderr == ("metronome-suger: error: --from 2026-11-02-10:00: an hourly partition key, but billing_mode "
                           "amount_daily has daily windows (midnight UTC): give a day such as 2026-11-02\n")


# --- The range rules, in process, against a fixed clock -------------------------------------------------------------

NOW = datetime(2026, 11, 25, 14, 15, tzinfo=timezone.utc)


def config_of(**extra) -> AppConfig:
    return parse_config_data({"suger": {"org_id": "org-x"}, "start": "2026-11-01T00:00:00Z", **extra})


def windows(config: AppConfig, start: str, end: str, now: datetime = NOW) -> list[str]:
    return [w.partition_key for w in resolve_range(config, parse_bound("--from", start), parse_bound("--to", end), now)]


def test_keys_are_inclusive_and_times_end_exclusive() -> None:
    hourly = config_of()
    three = ["2026-11-25-10:00", "2026-11-25-11:00", "2026-11-25-12:00"]
    assert windows(hourly, "2026-11-25-10:00", "2026-11-25-12:00") == three
    assert windows(hourly, "2026-11-25T10:00:00Z", "2026-11-25T13:00:00Z") == three
    assert windows(hourly, "2026-11-25T12:00:00+02:00", "2026-11-25-12:00") == three  # an offset is converted to UTC
    assert windows(hourly, "2026-11-25T10:00:00", "2026-11-25T13:00") == three  # no offset: UTC
    assert windows(hourly, "2026-11-25-13:00", "2026-11-25-13:00") == ["2026-11-25-13:00"]


def test_a_day_is_the_whole_utc_day_in_every_mode() -> None:
    hourly = windows(config_of(), "2026-11-23", "2026-11-24")
    assert len(hourly) == 48 and (hourly[0], hourly[-1]) == ("2026-11-23-00:00", "2026-11-24-23:00")
    daily = config_of(billing_mode="amount_daily")
    assert windows(daily, "2026-11-23", "2026-11-24") == ["2026-11-23", "2026-11-24"]
    assert windows(daily, "2026-11-23T00:00:00Z", "2026-11-24T00:00:00Z") == ["2026-11-23"]
    with pytest.raises(BackfillError) as refused:
        windows(daily, "2026-11-23", "2026-11-24T12:00:00Z")
    assert str(refused.value) == ("--to 2026-11-24T12:00:00Z: this time is not on a window boundary "
                                  "(2026-11-24T12:00:00Z), and billing_mode amount_daily has daily windows (midnight "
                                  "UTC)")


def test_a_window_is_ready_settle_minutes_after_it_closed() -> None:
    config = config_of()  # settle_minutes 15
    assert windows(config, "2026-11-25-13:00", "2026-11-25-13:00", NOW) == ["2026-11-25-13:00"]
    with pytest.raises(BackfillError) as refused:
        windows(config, "2026-11-25-13:00", "2026-11-25-13:00", NOW - timedelta(microseconds=1))
    assert str(refused.value) == ("--to 2026-11-25-13:00: the window 2026-11-25-13:00 closed less than settle_minutes "
                                  "(15) ago (it is read from 2026-11-25T14:15:00Z); the last window ready now is "
                                  "2026-11-25-12:00")
    daily = config_of(billing_mode="amount_daily", settle_minutes=90)
    assert windows(daily, "2026-11-24", "2026-11-24", datetime(2026, 11, 25, 1, 30, tzinfo=timezone.utc)) == [
        "2026-11-24"]
    with pytest.raises(BackfillError) as early:
        windows(daily, "2026-11-24", "2026-11-24", datetime(2026, 11, 25, 1, 29, tzinfo=timezone.utc))
    assert str(early.value) == ("--to 2026-11-24: the window 2026-11-24 closed less than settle_minutes (90) ago (it "
                                "is read from 2026-11-25T01:30:00Z); the last window ready now is 2026-11-23")


def test_a_misaligned_partition_key_is_named() -> None:
    with pytest.raises(BackfillError) as refused:
        windows(config_of(), "2026-11-25-10:30", "2026-11-25-12:00")
    assert str(refused.value) == ("--from 2026-11-25-10:30: this partition key is not on a window boundary "
                                  "(2026-11-25T10:30:00Z), and billing_mode quantity has hourly windows (a whole UTC "
                                  "hour)")
