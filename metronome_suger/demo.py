"""``metronome-suger demo`` and ``dev``: the real pipeline, through Dagster, against the bundled sandbox."""

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg

from metronome_suger.config import AppConfig, LoadedConfig
from metronome_suger.core.amounts import cents_to_dollars, dollars_text
from metronome_suger.core.reconciliation import money
from metronome_suger.core.windows import Window, grain, last_closed_windows
from metronome_suger.orchestration.definitions import build_definitions, build_reconciliation_definitions
from metronome_suger.orchestration.failures import step_failure_text
from metronome_suger.orchestration.resources import ClockResource
from metronome_suger.storage.amounts import window_increase
from metronome_suger.storage.db import connect, fetch_one

DEMO_DB = Path("data/demo/metronome_suger.duckdb")
DAGSTER_YAML = "concurrency:\n  pools:\n    default_limit: 1\n"


def sandbox_config(config: AppConfig, *, metronome_url: str, suger_url: str, org_id: str,
                   duckdb_path: Path, start: datetime, mode: str | None) -> AppConfig:
    """The user's conversion and options, pointed at the sandbox and a fresh demo database."""
    data = config.model_dump(mode="json")
    data["metronome"]["base_url"] = metronome_url
    data["suger"].update(base_url=suger_url, org_id=org_id)
    data["storage"]["url"] = str(duckdb_path)
    data["start"] = min(config.start, start).isoformat()
    if mode:
        data["billing_mode"] = mode
    return AppConfig.model_validate(data)


@dataclass
class WindowSummary:
    window: Window
    success: bool
    checks: dict[str, str]
    error: str | None
    interrupted: bool = False  # Ctrl-C stopped the run (Dagster fails it instead of raising)


QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def run_window(defs: dg.Definitions, window: Window, instance: dg.DagsterInstance, *, job_name: str | None = None,
               tags: dict[str, str] | None = None) -> WindowSummary:
    """One window's run in this process (``job_name``: that job of ``defs``, else the implicit asset job)."""
    job = defs.resolve_job_def(job_name) if job_name else defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(
        partition_key=window.partition_key, instance=instance, raise_on_error=False, run_config=QUIET, tags=tags
    )
    checks = {
        e.check_name: "ok" if e.passed else ("warn" if e.severity == dg.AssetCheckSeverity.WARN else "FAIL")
        for e in result.get_asset_check_evaluations()
    }
    error = None
    if not result.success:
        failures = [e for e in result.all_events if e.is_step_failure]
        error = "; ".join(f"{f.step_key} failed{_failure_cause(f)}" for f in failures) or "run failed"
    return WindowSummary(window, result.success, checks, error, any(map(_interrupted, result.all_events)))


def _failure_cause(event: dg.DagsterEvent) -> str:
    """``: why``, from a step failure: the first line of its own words (``step_failure_text``)."""
    text = step_failure_text(event)
    message = text.splitlines()[0] if text else ""
    return f": {message}" if message else ""


INTERRUPTS = frozenset({"DagsterExecutionInterruptedError", "KeyboardInterrupt"})


def _interrupted(event: dg.DagsterEvent) -> bool:
    """Ctrl-C during the run: Dagster fails the step it hit, or the run, with the interrupt as the error."""
    if event.is_engine_event and (event.message or "").startswith("Execution was interrupted"):
        return True  # ... or only notes it, when the run had already failed
    error = (event.step_failure_data.error if event.is_step_failure and event.step_failure_data
             else event.job_failure_data.error if event.is_run_failure and event.job_failure_data else None)
    while error is not None:
        if error.cls_name in INTERRUPTS:
            return True
        error = error.cause
    return False


def _reconcile_day(config: AppConfig, day: str, at: datetime, instance: dg.DagsterInstance) -> None:
    """``suger_usage_record_reports`` for the day: the marketplace outcome of each group."""
    defs = build_reconciliation_definitions(config, resources={"clock": ClockResource(frozen_at=at.isoformat())})
    defs.resolve_implicit_global_asset_job_def().execute_in_process(
        partition_key=day, instance=instance, raise_on_error=False, run_config=QUIET)


def _poll_suger(defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
    sensor = defs.resolve_sensor_def("suger_status_sensor")
    sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources))


def failure_lines(summaries: list[WindowSummary]) -> list[str]:
    """One line per failed window: its partition key and what failed."""
    return [f"{s.window.partition_key}: {s.error}" for s in summaries if not s.success]


def _checks_text(checks: dict[str, str]) -> str:
    """All green in a word; otherwise only the checks that did not pass."""
    bad = [f"{name}:{verdict}" for name, verdict in sorted(checks.items()) if verdict != "ok"]
    return " ".join(bad) if bad else f"all {len(checks)} ok"


def window_table(config: AppConfig, summaries: list[WindowSummary]) -> str:
    """The per-window table of ``demo`` and ``backfill``: what the ledger holds for each window run."""
    headers = ["window (UTC)", "customers", "groups", "dimensions", "statuses", "marketplace billed", "checks", "delay"]
    if config.amount_mode:  # the dollars Metronome's invoice totals grew by, before conversion
        headers.insert(2, "invoice increase")
    rows = []
    with connect(config.database(), read_only=True) as conn:
        for s in summaries:
            w = s.window
            customers, groups = fetch_one(
                conn, "SELECT count(DISTINCT customer_id), count(*) FROM report_ledger WHERE window_start = ?",
                [w.start],
            )
            dims = conn.execute(
                """SELECT l.dimension_key, sum(l.quantity) FROM report_lines l
                JOIN report_ledger g USING (record_group_id) WHERE g.window_start = ? GROUP BY 1 ORDER BY 1""",
                [w.start],
            ).fetchall()
            statuses = conn.execute(
                "SELECT status, count(*) FROM report_ledger WHERE window_start = ? GROUP BY 1 ORDER BY 1",
                [w.start],
            ).fetchall()
            last = fetch_one(
                conn,
                "SELECT max(answered_at) FROM report_ledger WHERE window_start = ? AND status IN ('sent','accepted')",
                [w.start],
            )[0]
            quantity = ", ".join(f"{k}={v.normalize():f}" for k, v in dims) or "-"
            billed, billed_dollars = fetch_one(
                conn, "SELECT count(*), coalesce(sum(dollars), 0) FROM report_ledger WHERE window_start = ? "
                      "AND marketplace_status = 'billed'", [w.start])
            marketplace = f"{billed}/{groups} groups {money(billed_dollars)}"
            row = [
                w.partition_key,
                str(customers),
                str(groups),
                quantity,
                ", ".join(f"{k}:{n}" for k, n in statuses) or "-",
                marketplace,
                _checks_text(s.checks),
                f"{(last - w.end).total_seconds() / 3600:.1f} h" if last else "-",
            ]
            if config.amount_mode:
                cents, _ = window_increase(conn, w.start, w.end)
                row.insert(2, dollars_text(cents_to_dollars(cents)))
            rows.append(row)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(widths[i]) for i, c in enumerate(cells))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def run_demo(config: AppConfig, *, windows: int = 6, mode: str | None = None, seed: int = 0,
             customers: int = 6) -> int:
    from metronome_suger.sandbox.server import Sandbox

    hourly = (mode or config.billing_mode) != "amount_daily"
    now = datetime.now(timezone.utc)
    settle = timedelta(minutes=config.settle_minutes)
    chosen = last_closed_windows(now - settle, hourly, windows, timedelta(0))
    if DEMO_DB.parent.exists():
        shutil.rmtree(DEMO_DB.parent)
    with Sandbox(seed=seed, customers=customers, now=chosen[0].end) as sandbox:
        os.environ.update(sandbox.env())
        demo_config = sandbox_config(
            config, metronome_url=sandbox.metronome_url, suger_url=sandbox.suger_url,
            org_id=sandbox.suger.org_id, duckdb_path=DEMO_DB, start=chosen[0].start, mode=mode,
        )
        print(f"sandbox: Metronome {sandbox.metronome_url}, Suger {sandbox.suger_url}, "
              f"billing mode {demo_config.billing_mode}, {len(chosen)} windows", flush=True)
        instance = dg.DagsterInstance.ephemeral()
        summaries = []
        for window in chosen:  # replay each window as the schedule runs it: at close + settle time
            tick = window.end + timedelta(minutes=demo_config.settle_minutes)
            sandbox.clock.set(tick)
            defs = build_definitions(demo_config, resources={"clock": ClockResource(frozen_at=tick.isoformat())})
            _poll_suger(defs, instance)  # the status sensor's tick: Suger forwarded last hour's groups
            summaries.append(run_window(defs, window, instance))
        tick = chosen[-1].end + grain(hourly) + timedelta(minutes=demo_config.settle_minutes)
        sandbox.clock.set(tick)
        _poll_suger(build_definitions(demo_config, resources={"clock": ClockResource(frozen_at=tick.isoformat())}),
                    instance)
        for day in sorted({w.start.date() for w in chosen}):  # what Suger told the marketplaces, per day
            _reconcile_day(demo_config, day.isoformat(), tick, instance)
    print(window_table(demo_config, summaries))
    if demo_config.amount_mode:
        print("(amount modes: the first window reports each open invoice's total so far, the pipeline had not "
              "seen it before; later windows report only growth above the highest total seen)")
    for line in failure_lines(summaries):
        print(line)
    print("(marketplace: what the marketplaces billed of each window, per Suger's usage record reports)")
    print(f"\nDuckDB file: {DEMO_DB} (tables: usage_records, report_ledger, marketplace_reports, ...)")
    return 0


def run_dev(loaded: LoadedConfig) -> int:
    """Sandbox on its fixed ports plus ``dagster dev``; the instance limits the DuckDB pool to 1."""
    from metronome_suger.sandbox.server import Sandbox

    home = Path(".dagster_home").resolve()
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    with Sandbox(metronome_port=8701, suger_port=8702) as sandbox:
        env = {**os.environ, **sandbox.env(), "DAGSTER_HOME": str(home)}
        print(f"sandbox: Metronome {sandbox.metronome_url}, Suger {sandbox.suger_url}; "
              "Dagster UI on http://127.0.0.1:3000 (Ctrl-C stops both)", flush=True)
        dagster = Path(sys.executable).with_name("dagster")
        try:
            return subprocess.call(
                [str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", "3000"], env=env
            )
        except KeyboardInterrupt:
            return 0
