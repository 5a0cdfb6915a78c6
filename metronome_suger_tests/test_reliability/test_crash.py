"""Crash consistency with real ``kill -9`` (issue 11). A real ``dagster asset materialize`` (or ``dagster sensor
preview`` for the status poll) runs in a subprocess with ``METRONOME_SUGER_CRASH_AT`` naming a crash point of the
reporting path; the process SIGKILLs itself there. The state it leaves is checked (Suger, the ledger, the window
claims of the dead process), then the window runs again without the variable and Suger must hold exactly the
expected groups, 0 duplicates and 0 missing, with every ledger row in the state the state machine says and no claim
left held. Each test runs its DuckDB and PostgreSQL variants side by side (one sandbox and one ledger each).

The runs use Dagster's in-process executor, so the kill hits the ``dagster`` process itself (the default
multiprocess executor would put each step in a child process: the same kill, about eight times the cost per run here).
``max_concurrency: 1`` makes the POSTs sequential, so each kill leaves a known number of groups at Suger (the ledger
saves answers in batches: see ``REPORT_KILLS``).
"""

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from metronome_suger.core.windows import floor
from metronome_suger.crashpoints import CRASH_ENV
from metronome_suger.orchestration.keys import STATUS_SENSOR
from metronome_suger.sandbox.faults import RecordedRequest
from metronome_suger.sandbox.server import Sandbox
from metronome_suger.storage.db import Database, connect
from metronome_suger_tests.conftest import AWS_DIMS, HOUR, PostgresLedger, sent_groups
from metronome_suger_tests.figures import record

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

BIN = Path(sys.executable).parent
PASSWORD_ENV = "CRASH_LEDGER_PASSWORD"
IN_PROCESS = json.dumps({"execution": {"config": {"in_process": {}}}})
HTTP = {"timeout_seconds": 15, "max_attempts": 3, "initial_wait_seconds": 0.05, "max_wait_seconds": 0.2,
        "max_total_seconds": 30}
FAR = datetime(2100, 1, 1, tzinfo=timezone.utc)
AZURE_DIMS = [{"key": "usage_fee", "name": "Usage fee", "rate": "0.25"}]
# name, marketplace, cpu_hours in the window (quantity mode), invoice total in cents (amount mode)
CUSTOMERS = (("Ann", "AWS", Decimal("4.25"), 1234), ("Ben", "AWS", Decimal(9), 50000),
             ("Cid", "AZURE", Decimal("2.5"), 1075))
QUANTITY_CONVERSION = {"AWS": {"cpu_hours": [{"dimension_key": "cpu_hour", "multiplier": 1}]},
                       "AZURE": {"cpu_hours": [{"dimension_key": "usage_fee", "multiplier": 1}]}}
AMOUNT_CONVERSION = {  # AWS: dollars × 100 units of $0.01; AZURE: dollars ÷ the entitlement's rate ($0.25)
    "AWS": {"metronome": [{"dimension_key": "usage_fee", "mapping_mode": "QUANTITY", "multiplier": 100}]},
    "AZURE": {"metronome": [{"dimension_key": "usage_fee", "mapping_mode": "AMOUNT"}]}}


@dataclass
class Done:
    """A finished subprocess: its exit code (negative: killed by that signal), pid and output."""

    returncode: int
    pid: int
    out: str
    err: str

    def crash_line(self, point: str, nth: int) -> bool:
        return f"crash point {point} (pass {nth}): SIGKILL" in self.err


@dataclass
class Case:
    """One backend's side of a test: its own sandbox (real clock), config file, DAGSTER_HOME and ledger."""

    backend: str
    sb: Sandbox
    root: Path
    env: dict[str, str]
    database: Database
    key: str
    expected: dict[str, dict[str, Decimal]]  # entitlement → the records Suger must hold for the window

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple]:
        with connect(self.database, read_only=True) as conn:  # closed at once: a later run needs the DuckDB file
            return conn.execute(sql, params or []).fetchall()

    def ledger(self) -> dict[str, tuple]:
        """record_group_id → (status, suger_status, retries, message)."""
        rows = self.query("SELECT record_group_id, status, suger_status, retries, message FROM report_ledger")
        return {r[0]: r[1:] for r in rows}

    def held_claims(self) -> dict[str, str]:
        return dict(self.query("SELECT claim_key, holder FROM window_claims WHERE holder IS NOT NULL"))

    def pin_held_leases(self) -> None:
        """Push the dead holder's lease far out: only the check that its process is gone can free the claims
        (a re-run within the 2-minute lease is the case that matters; this one may start later on a busy box)."""
        with connect(self.database) as conn:
            conn.execute("UPDATE window_claims SET lease_until = ? WHERE holder IS NOT NULL", [FAR])

    def group_posts(self) -> list[RecordedRequest]:
        return [e for e in self.sb.suger_log.find(method="POST") if e.path.endswith("/usageRecordGroup")]

    def retry_posts(self) -> list[str]:
        return [e.path for e in self.sb.suger_log.find(method="POST") if e.path.endswith("/retry")]


def run_all(cases: list[Case], argv: list[str], crash_at: str | None = None) -> list[Done]:
    """Run ``argv`` once per case, all at the same time; output goes to files (no pipe can fill up)."""
    running = []
    for n, case in enumerate(cases):
        env = {**case.env, CRASH_ENV: crash_at} if crash_at else case.env
        out, err = (case.root / f"{argv[1]}-{n}-{len(os.listdir(case.root))}.{s}" for s in ("out", "err"))
        with open(out, "w") as out_file, open(err, "w") as err_file:
            running.append((subprocess.Popen([str(BIN / argv[0]), *argv[1:]], cwd=case.root, env=env,
                                             stdout=out_file, stderr=err_file), out, err))
    done = []
    for proc, out, err in running:
        try:
            proc.wait(timeout=300)  # a run here takes seconds; a claim never taken over would wait 600 s
        except subprocess.TimeoutExpired:
            for other, _, _ in running:
                other.kill()
                other.wait()
            pytest.fail(f"{' '.join(argv[:3])} did not finish in 300 s: {err.read_text()[-3000:]}")
        done.append(Done(proc.returncode, proc.pid, out.read_text(), err.read_text()))
    return done


def materialize(cases: list[Case], crash_at: str | None = None) -> list[Done]:
    return run_all(cases, ["dagster", "asset", "materialize", "-m", "metronome_suger.definitions", "--select", "*",
                           "--partition", cases[0].key, "--config-json", IN_PROCESS], crash_at)


def add_world(sb: Sandbox, start: datetime, mode: str) -> dict[str, dict[str, Decimal]]:
    """Three customers (two on AWS, one on Azure) with usage (or a DRAFT invoice) in the window at ``start``."""
    cpu = sb.metronome.add_billable_metric("cpu_hours")["id"]
    month = start.replace(day=1, hour=0)
    expected = {}
    for name, partner, cpu_hours, cents in CUSTOMERS:
        customer = sb.metronome.add_customer(name)["id"]
        buyer = sb.suger.add_buyer(name, partner=partner, metronome_customer_id=customer)["id"]
        dims = AWS_DIMS if partner == "AWS" else AZURE_DIMS
        ent = sb.suger.add_entitlement(buyer, partner=partner, dimensions=dims)["id"]
        if mode == "quantity":
            sb.metronome.set_usage(customer, cpu, start, cpu_hours)
            expected[ent] = {"cpu_hour" if partner == "AWS" else "usage_fee": cpu_hours}
        else:
            invoice = sb.metronome.add_invoice(customer, period_start=month,
                                               period_end=(month + timedelta(days=32)).replace(day=1))["id"]
            sb.metronome.set_invoice_total(invoice, cents, effective_at=start + timedelta(minutes=1))
            expected[ent] = {"usage_fee": Decimal(cents) if partner == "AWS" else Decimal(cents) / 25}
    return expected


@contextmanager
def crash_cases(tmp_path: Path, ledger: PostgresLedger, mode: str = "quantity") -> Iterator[list[Case]]:
    """The DuckDB case and the PostgreSQL case of one window (the last closed hour), with running sandboxes."""
    start = floor(datetime.now(timezone.utc), True) - HOUR
    base = {k: v for k, v in os.environ.items() if k not in ("METRONOME_SUGER_CONFIG", CRASH_ENV)}
    with ExitStack() as stack:
        cases = []
        for backend in ("duckdb", "postgres"):
            root = tmp_path / backend
            (root / "dagster_home").mkdir(parents=True)
            sb = stack.enter_context(Sandbox(customers=0))  # the real clock: the CLI runs use wall time
            expected = add_world(sb, start, mode)
            if backend == "duckdb":
                database, storage = Database(str(root / "ledger.duckdb")), {"url": str(root / "ledger.duckdb")}
            else:
                database = Database(ledger.url, SecretStr(ledger.password))
                storage = {"url": ledger.url, "password_env": PASSWORD_ENV}
            config = root / "metronome_suger.yaml"
            config.write_text(yaml.safe_dump({
                "metronome": {"base_url": sb.metronome_url}, "suger": {"base_url": sb.suger_url, "org_id": sb.org_id},
                "start": "2026-11-01T00:00:00Z", "billing_mode": mode, "max_concurrency": 1, "http": HTTP,
                "dimension_conversion": QUANTITY_CONVERSION if mode == "quantity" else AMOUNT_CONVERSION,
                "storage": storage}))
            env = {**base, **sb.env(), "DAGSTER_HOME": str(root / "dagster_home"),
                   "METRONOME_SUGER_CONFIG": str(config), PASSWORD_ENV: ledger.password}
            cases.append(Case(backend, sb, root, env, database, start.strftime("%Y-%m-%d-%H:%M"), expected))
        yield cases


def assert_killed(done: Done, point: str, nth: int = 1) -> None:
    assert done.crash_line(point, nth), done.err[-3000:]
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.err[-3000:])


def assert_exact(case: Case) -> tuple[int, int]:
    """Suger holds exactly the window's groups, each once, with exact quantities, and the ledger knows each of
    them by id; returns (duplicates, lost) after asserting both are 0."""
    groups = sent_groups(case.sb)
    per_key = Counter((g["entitlementID"], g["metaInfo"]["timestamp"]) for g in groups)
    duplicates = sum(n - 1 for n in per_key.values())
    lost = len(case.expected) - len({ent for ent, _ in per_key})
    assert (duplicates, lost) == (0, 0), (case.backend, per_key)
    assert {g["entitlementID"]: g["records"] for g in groups} == case.expected, case.backend
    assert {ts for _, ts in per_key} == {f"{case.key[:10]}T{case.key[11:]}:00Z"}
    ledger = case.ledger()
    assert sorted(ledger) == sorted(g["id"] for g in groups), case.backend  # one row per group, same ids
    created = Counter(e.body["id"] for e in case.group_posts() if e.status == 200)
    assert set(created.values()) == {1}, created  # over all runs, Suger stored each group once
    assert case.held_claims() == {}, case.backend  # the dead process's claim was taken over, then released
    return duplicates, lost


# (point, pass) → the possible numbers of groups at Suger after the kill, and of them recorded as sent in the ledger
# (``None``: all of them). Answers are saved in batches, when 100 wait or the oldest waited 1 s, and at the end: on a
# machine that stalls a second between two POSTs a batch is saved earlier, which the sets allow. Whatever was
# saved, the re-run must send each unsaved group again and be answered 409.
REPORT_KILLS: dict[tuple[str, int], tuple[set[int], set[int] | None]] = {
    ("report.before_post", 1): ({0}, {0}),  # nothing handed over
    ("report.after_post", 2): ({2}, {0, 1}),  # the 2nd group is at Suger, its answer died unsaved (the 1st's too)
    ("report.between_groups", 2): ({2}, {0, 1, 2}),  # two groups answered, their batch unsaved; the third not sent
    ("report.after_ledger_write", 1): ({1, 2, 3}, None),  # the batch saved (normally all 3), the claim still held
}


@pytest.mark.parametrize(("point", "nth"), list(REPORT_KILLS), ids=[p for p, _ in REPORT_KILLS])
def test_a_kill_on_the_reporting_path_then_a_rerun_sends_each_group_exactly_once(
    tmp_path: Path, postgres_ledger: PostgresLedger, point: str, nth: int,
) -> None:
    possible_at_suger, possible_recorded = REPORT_KILLS[point, nth]
    kept: dict[str, tuple[int, int]] = {}
    with crash_cases(tmp_path, postgres_ledger) as cases:
        for case, killed in zip(cases, materialize(cases, crash_at=f"{point}@{nth}"), strict=True):
            assert_killed(killed, point, nth)
            suger_ids = {g["id"] for g in sent_groups(case.sb)}
            ledger = case.ledger()
            sent = {gid for gid, row in ledger.items() if row[0] == "sent"}
            at_suger, recorded = len(suger_ids), len(sent)
            kept[case.backend] = (at_suger, recorded)
            assert len(ledger) == 3 and at_suger in possible_at_suger, (case.backend, ledger, suger_ids)
            assert recorded in (possible_recorded or {at_suger}), (case.backend, ledger)
            assert sent <= suger_ids  # the ledger never says sent before Suger has it
            assert {row[0] for gid, row in ledger.items() if gid not in sent} <= {"pending"}
            assert suger_ids <= set(ledger)  # nothing reached Suger that the ledger does not know
            assert [e.status for e in case.group_posts()] == [200] * at_suger
            [(claim, holder)] = case.held_claims().items()  # the report step died holding its window
            assert claim == f"quantity:{case.key}" and f"(process {killed.pid} on " in holder, holder
            case.pin_held_leases()
        for case, rerun in zip(cases, materialize(cases), strict=True):
            assert rerun.returncode == 0 and "crash point" not in rerun.err, rerun.err[-3000:]
            at_suger, recorded = kept[case.backend]
            limbo = at_suger - recorded  # at Suger, pending in the ledger: the re-run's POST is answered 409
            again = case.group_posts()[at_suger:]  # the re-run's POSTs
            assert Counter(e.status for e in again) == Counter({200: 3 - at_suger, 409: limbo})
            duplicates, lost = assert_exact(case)
            ledger = case.ledger()
            assert {row[0] for row in ledger.values()} == {"sent"}, ledger
            answered_409 = [e.body["id"] for e in again if e.status == 409]
            assert [ledger[gid][3] for gid in answered_409] == ["Suger already had this group (409)"] * limbo
            record("crash", kills=1, windows=1, duplicates=duplicates, lost=lost)


def test_a_kill_inside_the_high_water_update_leaves_nothing_half_written(
    tmp_path: Path, postgres_ledger: PostgresLedger,
) -> None:
    """amount_hourly: the invoice snapshot and the high water of the window are written in one transaction; a kill
    before its commit leaves neither, and the re-run reports each invoice's whole increase once."""
    point = "invoices.inside_high_water"
    with crash_cases(tmp_path, postgres_ledger, mode="amount_hourly") as cases:
        for case, killed in zip(cases, materialize(cases, crash_at=point), strict=True):
            assert_killed(killed, point)
            assert case.query("SELECT count(*) FROM invoice_high_water") == [(0,)]
            assert case.query("SELECT count(*) FROM invoice_snapshots") == [(0,)]
            assert case.query("SELECT count(*) FROM report_ledger") == [(0,)]
            assert case.sb.suger_log.find(method="POST") == [] and sent_groups(case.sb) == []
            held = case.held_claims()
            assert set(held) == {f"amount_hourly:{case.key}", "invoice_high_water"}, held
            assert all(f"(process {killed.pid} on " in holder for holder in held.values()), held
            case.pin_held_leases()
        for case, rerun in zip(cases, materialize(cases), strict=True):
            assert rerun.returncode == 0 and "crash point" not in rerun.err, rerun.err[-3000:]
            duplicates, lost = assert_exact(case)
            assert {row[0] for row in case.ledger().values()} == {"sent"}
            increases = case.query("SELECT increase_cents, high_water_cents FROM invoice_high_water ORDER BY 1")
            assert increases == [(Decimal(c), Decimal(c)) for c in sorted(c for *_, c in CUSTOMERS)]
            record("crash", kills=1, windows=1, duplicates=duplicates, lost=lost)


def test_a_kill_of_the_status_poll_between_sugers_answer_and_the_ledger_update(
    tmp_path: Path, postgres_ledger: PostgresLedger,
) -> None:
    """The Suger-status sensor, evaluated by ``dagster sensor preview`` in its code server, dies after reading
    Suger's statuses: the ledger is untouched and no retry was requested; the next tick records every status and
    calls the retry endpoint once for the REPORT_FAILED group."""
    point = "status.after_answer"
    preview = ["dagster", "sensor", "preview", STATUS_SENSOR, "-m", "metronome_suger.definitions"]
    with crash_cases(tmp_path, postgres_ledger) as cases:
        for setup in materialize(cases):
            assert setup.returncode == 0, setup.err[-3000:]
        verdicts: dict[str, dict[str, str]] = {}  # backend → group id → the status Suger gives it
        for case in cases:
            assert {row[:3] for row in case.ledger().values()} == {("sent", "CREATED", 0)}
            ids = sorted(g["id"] for g in sent_groups(case.sb))
            verdicts[case.backend] = dict(zip(ids, ("REPORTED", "INVALID", "REPORT_FAILED"), strict=True))
            for gid, status in verdicts[case.backend].items():
                case.sb.suger.set_group_status(gid, status)
        for case, killed in zip(cases, run_all(cases, preview, crash_at=point), strict=True):
            assert killed.crash_line(point, 1), killed.err[-3000:]
            assert "DagsterUserCodeUnreachableError" in killed.out + killed.err  # the code server died mid-tick
            assert "accepted" not in killed.out  # the tick never returned its summary
            assert {row[:3] for row in case.ledger().values()} == {("sent", "CREATED", 0)}
            assert case.retry_posts() == []
        for case, tick in zip(cases, run_all(cases, preview), strict=True):
            assert "crash point" not in tick.err, tick.err[-3000:]
            assert "1 accepted, 1 retried, 1 rejected, 0 expired" in tick.out, tick.out[-3000:] + tick.err[-3000:]
            verdict = verdicts[case.backend]
            rows = {"REPORTED": ("accepted", "REPORTED", 0), "INVALID": ("rejected", "INVALID", 0),
                    "REPORT_FAILED": ("sent", "CREATED", 1)}  # retried once: Suger queued it again
            assert {gid: row[:3] for gid, row in case.ledger().items()} == {g: rows[v] for g, v in verdict.items()}
            [failed] = [gid for gid, status in verdict.items() if status == "REPORT_FAILED"]
            assert case.retry_posts() == [f"/org/{case.sb.org_id}/usageRecordGroup/{failed}/retry"]  # once
            assert case.sb.suger.group(failed)["status"] == "CREATED"
            assert len(case.group_posts()) == 3  # the poll never re-sends usage
            duplicates, lost = assert_exact(case)
            record("crash", kills=1, windows=1, duplicates=duplicates, lost=lost)
