"""`make bench`: the issue-12 benchmark. One window of the real pipeline per billing mode against emulators in
their own processes with a fixed latency per request, compared with the round-trip bound.

Not a test: it measures and prints, and never fails on a ratio (targets are printed next to them, pass/miss). It
exits 1 only if a run fails or a re-run sends anything to Suger (exactly-once broken).

Per mode: emulators at the size and latency, a fresh DuckDB file and Dagster instance (temp dirs), the window
run end to end in this process (``execute_in_process`` of the job ``build_definitions`` builds), then its re-run.
Per run and step: requests made (emulator stats by route template), the LOWER BOUND (the fewest requests the
APIs allow for this world), the bound in time (sum over steps of ceil(requests / concurrency) x latency, steps
one after another), wall time (event log), their ratio, CPU of this process and of each emulator, peak RSS.
Then the micro-benchmarks (benchmarks/micro.py) and the DuckDB file size after consecutive hourly windows.

    .venv/bin/python benchmarks/bench.py                 # what `make bench` runs (2,000 customers: fits 10 min)
    .venv/bin/python benchmarks/bench.py --customers 10000 --size-customers 1000   # the issue's size, ~30 min
    .venv/bin/python benchmarks/bench.py --customers 1000 --modes quantity --skip-micro --json /tmp/b.json
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore")  # Dagster's preview/beta warnings are noise here

import dagster as dg  # noqa: E402
import duckdb  # noqa: E402

from metronome_suger.clients.metronome import MetronomeClient  # noqa: E402
from metronome_suger.clients.suger import SugerClient  # noqa: E402
from metronome_suger.config import AppConfig, parse_config_data  # noqa: E402
from metronome_suger.orchestration.definitions import build_definitions  # noqa: E402
from metronome_suger.orchestration.keys import JOB, Keys  # noqa: E402
from metronome_suger.orchestration.resources import ClockResource  # noqa: E402
from metronome_suger.sandbox.bench_world import BASE_DIMENSIONS, BASE_METRICS, bench_config_data  # noqa: E402
from metronome_suger.sandbox.metronome_usage_routes import USAGE_PAGE_SIZE  # noqa: E402
from metronome_suger.sandbox.process import emulator_processes  # noqa: E402
from metronome_suger.sandbox.procstats import cpu_seconds, peak_rss_bytes, reset_peak_rss  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START, END = "<!-- performance:start -->", "<!-- performance:end -->"
MODES = ("quantity", "amount_hourly", "amount_daily")
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}  # events still go to the event log
GIB = 1024**3
HOUR = timedelta(hours=1)
# Metronome's pages: customers and metrics take limit <= 100 (the client sends its page_limit); POST /v1/usage
# takes no limit and answers USAGE_PAGE_SIZE rows. Suger's plain-array listings end on a short page.
METRONOME_LIMIT: int = inspect.signature(MetronomeClient).parameters["page_limit"].default
SUGER_LIMIT: int = inspect.signature(SugerClient).parameters["page_limit"].default
DAY_HOURS = 24  # Metronome answers whole UTC days with window_size HOUR
# The issue's size (10,000 customers) takes ~18 min for the three modes alone on the 2-core machine, and 1,000
# customers x 24 windows of the size run ~8 min more: `make bench` must fit in 10 min, so its defaults are smaller
# (about 6-7 min there when the machine is otherwise idle). The full size: --customers 10000 --size-customers 1000.
DEFAULT_CUSTOMERS, ISSUE_CUSTOMERS = 2_000, 10_000


@dataclass(frozen=True)
class Plan:
    """Which window a mode runs, the emulators' clock when the world is built, and the clock of both runs."""

    partition: str
    start: datetime
    end: datetime
    world_now: datetime
    run_at: datetime


HOURLY = Plan("2026-11-25-13:00", datetime(2026, 11, 25, 13, tzinfo=timezone.utc),
              datetime(2026, 11, 25, 14, tzinfo=timezone.utc), datetime(2026, 11, 25, 14, 5, tzinfo=timezone.utc),
              datetime(2026, 11, 25, 14, 20, tzinfo=timezone.utc))  # window end + settle (15) + 5
DAILY = Plan("2026-11-24", datetime(2026, 11, 24, tzinfo=timezone.utc), datetime(2026, 11, 25, tzinfo=timezone.utc),
             datetime(2026, 11, 25, 0, 20, tzinfo=timezone.utc), datetime(2026, 11, 25, 0, 20, tzinfo=timezone.utc))
PLANS = {"quantity": HOURLY, "amount_hourly": HOURLY, "amount_daily": DAILY}
# Which step makes each request (route templates as the emulators' stats name them); the rest is "other".
ROUTE_STEPS = {
    "GET /v1/customers": "metronome_customers",
    "GET /v1/billable-metrics": "metronome_billable_metrics",
    "POST /v1/usage": "metronome_usage",
    "GET /v1/customers/{id}/invoices": "metronome_invoice_snapshots",
    "GET /v1/customers/{id}/invoices/{id}": "metronome_invoice_snapshots",  # an invoice no longer listed
    "GET /org/{org}/buyer": "suger_entitlements",
    "GET /org/{org}/entitlement": "suger_entitlements",
    "GET /org/{org}/product/{id}/dimension": "suger_entitlements",
    "POST /org/{org}/entitlement/{id}/usageRecordGroup": "suger_usage_report",
}


# ------------------------------------------------------------------------------------------------ machine
def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    ram = next((int(line.split()[1]) * 1024 for line in _read("/proc/meminfo").splitlines()
                if line.startswith("MemTotal:")), None)
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_bytes": ram, "python": platform.python_version(),
            "dagster": dg.__version__, "duckdb": duckdb.__version__,
            "system": f"{platform.system()} {platform.release()}"}


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    try:
        return git("rev-parse", "--short", "HEAD") + ("+dirty" if git("status", "--porcelain") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError:
        return ""


# ------------------------------------------------------------------------------------------------- bounds
def pages(items: int, limit: int) -> int:
    """Requests of a cursor listing: the last page says it is the last, so ceil (an empty list: one)."""
    return max(1, math.ceil(items / limit))


def array_pages(items: int, limit: int) -> int:
    """Requests of a Suger plain-array listing: only a short page ends it, so floor + 1."""
    return items // limit + 1


def lower_bounds(world: dict[str, int], mode: str, posts: int) -> dict[str, int]:
    """The fewest requests each step can make for this world (not what was sent); ``posts`` the groups to send."""
    n, m = world["customers"], world["metrics"]
    out = {
        # active customers, then the archived listing (1 page: the world has none archived)
        "metronome_customers": pages(n, METRONOME_LIMIT) + pages(world["archived"], METRONOME_LIMIT),
        "metronome_billable_metrics": pages(m, METRONOME_LIMIT),
        "suger_entitlements": array_pages(world["buyers"], SUGER_LIMIT)
        + array_pages(world["entitlements"], SUGER_LIMIT) + world["oversized_products"],
    }
    if mode == "quantity":  # the whole UTC day, every customer x metric x hour, 100 rows a page
        out["metronome_usage"] = math.ceil(n * m * DAY_HOURS / USAGE_PAGE_SIZE)
    else:  # one listing per linked customer (its DRAFT invoices: one page each in this world)
        out["metronome_invoice_snapshots"] = world["linked"] * pages(world["invoices_per_customer"], METRONOME_LIMIT)
    out["suger_usage_report"] = posts
    return out


BOUND_RULES = (
    f"lower bounds, from the world: metronome_customers ceil(N/{METRONOME_LIMIT}) + 1 (the archived listing, none "
    f"archived); metronome_billable_metrics ceil(M/{METRONOME_LIMIT}); metronome_usage ceil(N*M*24/{USAGE_PAGE_SIZE}) "
    f"(whole UTC days, {USAGE_PAGE_SIZE} rows a page); metronome_invoice_snapshots one listing per linked customer; "
    f"suger_entitlements floor(B/{SUGER_LIMIT}) + 1 buyers + floor(E/{SUGER_LIMIT}) + 1 entitlements (a plain-array "
    "listing ends only on a short page) + one dimension list per product of an entitlement over 50 dimensions; "
    "suger_usage_report one POST per group the ledger made (re-run: 0). Bound in time: sum over steps of "
    "ceil(requests / concurrency) x latency, steps one after another."
)


def time_bound(requests: int, concurrency: int, latency: float) -> float:
    return math.ceil(requests / concurrency) * latency


# ---------------------------------------------------------------------------------------------------- runs
def by_step(*stats: dict[str, Any]) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """Requests per step, the unmapped ones per route, and every route's count."""
    steps: dict[str, int] = {}
    other: dict[str, int] = {}
    routes: dict[str, int] = {}
    for stat in stats:
        for route, count in stat["requests"].items():
            routes[route] = routes.get(route, 0) + count
            step = ROUTE_STEPS.get(route)
            if step is None:
                other[route] = other.get(route, 0) + count
            else:
                steps[step] = steps.get(step, 0) + count
    return steps, other, routes


def step_seconds(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    """Step key -> STEP_START to its end event (event log), in start order."""
    starts: dict[str, float] = {}
    out: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and event.step_key in starts:
            out[event.step_key] = entry.timestamp - starts[event.step_key]
    return out


def ledger(db: Path, plan: Plan) -> tuple[int, int]:
    """(groups of the window, of which pending) in the ledger; (0, 0) before the first run."""
    if not db.exists():
        return 0, 0
    with duckdb.connect(str(db), read_only=True) as conn:
        if not conn.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'report_ledger'").fetchall()[0][0]:
            return 0, 0
        row = conn.execute("SELECT count(*), count(*) FILTER (status = 'pending') FROM report_ledger "
                           "WHERE window_start >= ? AND window_start < ?", [plan.start, plan.end]).fetchall()[0]
    return int(row[0]), int(row[1])


def measure(sandbox: Any, job: Any, instance: dg.DagsterInstance, plan: Plan, db: Path) -> dict[str, Any]:
    """Run the window once: wall time, steps, requests per step, CPU (here and in each emulator), peak RSS."""
    groups_before, pending_before = ledger(db, plan)
    sandbox.set_clock(plan.run_at)
    sandbox.reset_stats()
    emu_before = {name: sandbox.stats(name)["cpu_seconds"] for name in ("metronome", "suger")}
    gc.collect()
    rss_per_run = reset_peak_rss()
    cpu_before, started = cpu_seconds(), time.perf_counter()
    result = job.execute_in_process(partition_key=plan.partition, instance=instance, raise_on_error=False,
                                    run_config=QUIET)
    wall = time.perf_counter() - started
    cpu, rss = cpu_seconds() - cpu_before, peak_rss_bytes()
    stats = {name: sandbox.stats(name) for name in ("metronome", "suger")}
    requests, other, routes = by_step(*stats.values())
    errors = [f"{e.step_key}: {e.step_failure_data.error.message.strip()[:300]}" for e in result.all_events
              if e.is_step_failure and e.step_failure_data and e.step_failure_data.error]
    return {
        "success": result.success, "errors": errors, "wall_s": wall, "durations": step_seconds(instance, result.run_id),
        "by_step": requests, "other": other, "routes": routes,
        "suger_sends": sum(n for route, n in stats["suger"]["requests"].items() if not route.startswith("GET ")),
        "posts_due": ledger(db, plan)[0] - groups_before + pending_before,
        "cpu_s": {"bench": cpu, **{n: stats[n]["cpu_seconds"] - emu_before[n] for n in stats}},
        "rss_peak_bytes": rss, "rss_per_run": rss_per_run,
    }


def assess(run: dict[str, Any], world: dict[str, int], mode: str, concurrency: int, latency: float) -> None:
    """Add each step's lower bound, its bound in time and the ratios to a measured run."""
    bounds = lower_bounds(world, mode, run["posts_due"])
    steps: dict[str, dict[str, Any]] = {}
    for step in dict.fromkeys([*run["durations"], *bounds]):
        lb = bounds.get(step, 0)
        bound_s, seconds = time_bound(lb, concurrency, latency), run["durations"].get(step)
        steps[step] = {"requests": run["by_step"].get(step, 0), "lower_bound": lb, "bound_s": bound_s,
                       "seconds": seconds, "ratio": seconds / bound_s if seconds is not None and bound_s else None}
    run["steps"] = steps
    run["requests"] = sum(run["by_step"].values()) + sum(run["other"].values())
    run["lower_bound"] = sum(bounds.values())
    run["bound_s"] = sum(s["bound_s"] for s in steps.values())
    run["ratio"] = run["wall_s"] / run["bound_s"] if run["bound_s"] else None


def world_of(customers: int, metrics: int) -> dict[str, int]:
    """The world populate_bench builds: N customers, none archived, each with one buyer, one entitlement (4 base
    dimensions + one per metric past the 3rd; Suger keeps 50 on an entitlement, more need the product's list)
    and, in the amount modes, one DRAFT invoice."""
    dimensions = len(BASE_DIMENSIONS) + max(0, metrics - len(BASE_METRICS))
    return {"customers": customers, "archived": 0, "metrics": metrics, "buyers": customers,
            "entitlements": customers, "linked": customers, "invoices_per_customer": 1, "dimensions": dimensions,
            "oversized_products": int(customers > 0 and dimensions > 50)}


def check_world(db: Path, world: dict[str, int]) -> list[str]:
    """What the last run stored must be the world the bound assumes; a note for each difference."""
    latest = "snapshot_at = (SELECT max(snapshot_at) FROM {0})"
    with duckdb.connect(str(db), read_only=True) as conn:
        seen = conn.execute(
            f"SELECT (SELECT count(*) FILTER (NOT archived) FROM customers WHERE {latest.format('customers')}), "
            f"(SELECT count(*) FILTER (archived) FROM customers WHERE {latest.format('customers')}), "
            f"(SELECT count(*) FROM billable_metrics WHERE {latest.format('billable_metrics')}), "
            f"(SELECT count(DISTINCT entitlement_id) FROM entitlements WHERE {latest.format('entitlements')}), "
            f"(SELECT count(DISTINCT metronome_customer_id) FROM entitlements WHERE {latest.format('entitlements')})"
        ).fetchall()[0]
    names = ("customers", "archived", "metrics", "entitlements", "linked")
    return [f"the last run stored {got} {name}, the bound assumes {world[name]}"
            for name, got in zip(names, seen, strict=True) if got != world[name]]


def config_for(sandbox: Any, db: Path, args: argparse.Namespace, mode: str) -> AppConfig:
    data = bench_config_data(sandbox.metronome_url, sandbox.suger_url, sandbox.org_id, db, args.metrics, mode)
    if args.concurrency is not None:
        data["max_concurrency"] = args.concurrency
    return parse_config_data(data, origin="benchmark config")


def job_of(config: AppConfig, at: datetime) -> Any:
    defs = build_definitions(config, resources={"clock": ClockResource(frozen_at=at.isoformat())})
    return defs.resolve_job_def(Keys.of(config.key_prefix).name(JOB))


def bench_mode(args: argparse.Namespace, mode: str, tmp: Path) -> dict[str, Any]:
    """Fresh emulators, DuckDB file and Dagster instance; the window's first run, then its re-run."""
    plan, started = PLANS[mode], time.perf_counter()
    print(f"\n== {mode}: {args.customers} customers x {args.metrics} metrics, latency {args.latency * 1000:g} ms, "
          f"partition {plan.partition} run at {plan.run_at:%Y-%m-%dT%H:%MZ}", flush=True)
    db = tmp / mode / "metronome_suger.duckdb"
    with emulator_processes(world="bench", customers=args.customers, metrics=args.metrics, mode=mode,
                            latency=args.latency, now=plan.world_now, seed=0) as sandbox:
        setup_s = time.perf_counter() - started
        os.environ.update(sandbox.env())
        config = config_for(sandbox, db, args, mode)
        built = time.perf_counter()
        job = job_of(config, plan.run_at)
        build_s = time.perf_counter() - built
        instance = dg.DagsterInstance.ephemeral(tempdir=str(tmp / mode / "dagster"))
        runs = {"first": measure(sandbox, job, instance, plan, db)}
        print(f"   first run {runs['first']['wall_s']:.1f} s", flush=True)
        runs["rerun"] = measure(sandbox, job, instance, plan, db)
        print(f"   re-run {runs['rerun']['wall_s']:.1f} s", flush=True)
    world = world_of(args.customers, args.metrics)
    notes = check_world(db, world) if db.exists() else ["no DuckDB file: the first run stored nothing"]
    for run in runs.values():
        assess(run, world, mode, config.max_concurrency, args.latency)
    return {"mode": mode, "partition": plan.partition, "run_at": plan.run_at.isoformat(), "world": world,
            "concurrency": config.max_concurrency, "latency_s": args.latency, "setup_s": setup_s,
            "build_definitions_s": build_s, "runs": runs, "notes": notes,
            "total_s": time.perf_counter() - started}


def db_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in (db, db.with_name(db.name + ".wal")) if p.exists())


def size_run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """The DuckDB file after ``--size-windows`` consecutive hourly windows (quantity, ``--size-customers``),
    the emulators' clock moved to each window's run time. Size, not time: no latency is injected."""
    count, customers = args.size_windows, args.size_customers
    starts = [HOURLY.end - HOUR * (count - k) for k in range(count)]
    print(f"\n== DuckDB size: {count} hourly windows at {customers} customers x {args.metrics} metrics "
          f"(a smaller world than above), quantity, no latency", flush=True)
    db, started = tmp / "size" / "metronome_suger.duckdb", time.perf_counter()
    sizes: list[int] = []
    failed: list[str] = []
    with emulator_processes(world="bench", customers=customers, metrics=args.metrics, mode="quantity",
                            latency=0.0, now=starts[0] + HOUR + timedelta(minutes=5), seed=0) as sandbox:
        os.environ.update(sandbox.env())
        config = config_for(sandbox, db, args, "quantity")
        instance = dg.DagsterInstance.ephemeral(tempdir=str(tmp / "size" / "dagster"))
        for start in starts:
            at = start + HOUR + timedelta(minutes=20)
            sandbox.set_clock(at)
            result = job_of(config, at).execute_in_process(partition_key=f"{start:%Y-%m-%d-%H:%M}", instance=instance,
                                                           raise_on_error=False, run_config=QUIET)
            if not result.success:
                failed.append(f"{start:%Y-%m-%d-%H:%M}")
            sizes.append(db_bytes(db))
    with duckdb.connect(str(db), read_only=True) as conn:
        tables = [t for (t,) in conn.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall()]
        rows = {t: int(conn.execute(f'SELECT count(*) FROM "{t}"').fetchall()[0][0]) for t in tables}
    per_window = [b - a for a, b in zip([0, *sizes], sizes, strict=False)]
    print(f"   {count} windows in {time.perf_counter() - started:.1f} s", flush=True)
    return {"windows": count, "customers": customers, "metrics": args.metrics, "latency_s": 0.0,
            "total_bytes": sizes[-1] if sizes else 0, "bytes_per_window": (sizes[-1] / count) if sizes else 0,
            "bytes_after_each": sizes, "growth_each": per_window, "rows": rows, "failed_windows": failed,
            "seconds": time.perf_counter() - started}


def micro_figures(args: argparse.Namespace) -> dict[str, Any]:
    import micro  # benchmarks/micro.py, next to this file (sys.path[0] when run as a script)

    print(f"\n== micro: conversion of {args.micro_rows} rows, dagster definitions validate "
          f"({args.micro_repeat} repeat(s))", flush=True)
    started = time.perf_counter()
    out: dict[str, Any] = {"conversion": micro.conversion_ratio(args.micro_rows, repeat=args.micro_repeat),
           "definitions": micro.definitions_ratio(repeat=args.micro_repeat)}
    out["seconds"] = time.perf_counter() - started
    return out


# ------------------------------------------------------------------------------------------------- figures
def _x(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _s(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} s"


def figures(out: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per figure: what was measured, its bound or baseline, the ratio, the target and whether it is met
    (None: no target)."""
    rows: list[dict[str, Any]] = []

    def add(figure: str, measured: str, bound: str, ratio: float | None, target: str,
            met: bool | None) -> None:
        rows.append({"figure": figure, "measured": measured, "bound": bound, "ratio": ratio, "target": target,
                     "met": met})

    for mode, res in out["modes"].items():
        first, rerun = res["runs"]["first"], res["runs"]["rerun"]
        limit = 1.5 if mode in ("quantity", "amount_hourly") else None
        add(f"{mode}: window, wall vs round-trip bound", _s(first["wall_s"]), _s(first["bound_s"]), first["ratio"],
            f"≤ {limit}×" if limit else "–",
            None if limit is None or first["ratio"] is None else first["ratio"] <= limit)
        relimit = 1.1 if mode == "amount_hourly" else None
        add(f"{mode}: re-run, wall vs its reads' bound", _s(rerun["wall_s"]), _s(rerun["bound_s"]), rerun["ratio"],
            f"≤ {relimit}×" if relimit else "–",
            None if relimit is None or rerun["ratio"] is None else rerun["ratio"] <= relimit)
        add(f"{mode}: re-run sends to Suger", str(rerun["suger_sends"]), "0", None, "0", rerun["suger_sends"] == 0)
        if mode == "quantity":
            rss = first["rss_peak_bytes"]
            add("quantity: peak RSS of the pipeline process", f"{rss / 2**20:.0f} MiB", "–", None, "≤ 1 GiB",
                rss <= GIB)
    micro = out.get("micro")
    if micro:
        conv, defs = micro["conversion"], micro["definitions"]
        add(f"conversion of {conv['rows']:,} rows: DuckDB vs a Python loop", _s(conv["duckdb_seconds"]),
            _s(conv["python_seconds"]), conv["ratio"], "≥ 20×", conv["ratio"] >= 20)
        add("definitions validate: project vs one asset", _s(defs["project_seconds"]), _s(defs["one_asset_seconds"]),
            defs["ratio"], "≤ 1.5×", defs["ratio"] <= 1.5)
    size = out.get("size")
    if size:
        add(f"DuckDB file per hourly window ({size['customers']:,} customers x {size['metrics']})",
            f"{size['bytes_per_window'] / 2**20:.2f} MiB", "–", None, "–", None)
    return rows


def print_run(name: str, run: dict[str, Any]) -> None:
    print(f"\n   {name}: wall {run['wall_s']:.2f} s, bound {run['bound_s']:.2f} s, ratio {_x(run['ratio'])}; "
          f"requests {run['requests']} (lower bound {run['lower_bound']}); CPU s: "
          + ", ".join(f"{k} {v:.1f}" for k, v in run["cpu_s"].items())
          + f"; peak RSS {run['rss_peak_bytes'] / 2**20:.0f} MiB{'' if run['rss_per_run'] else ' (lifetime)'}; "
          f"Suger sends {run['suger_sends']}{'' if run['success'] else '; RUN FAILED'}")
    table = [["step", "requests", "lower bound", "bound s", "wall s", "ratio"]]
    for step, s in run["steps"].items():
        table.append([step, str(s["requests"]) if s["lower_bound"] or s["requests"] else "",
                      str(s["lower_bound"] or ""), f"{s['bound_s']:.2f}" if s["bound_s"] else "",
                      "–" if s["seconds"] is None else f"{s['seconds']:.2f}", _x(s["ratio"]) if s["ratio"] else ""])
    if run["other"]:
        table.append(["other: " + ", ".join(f"{r} {n}" for r, n in run["other"].items()),
                      str(sum(run["other"].values())), "", "", "", ""])
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for row in table:
        print("     " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                                    strict=True))))
    for error in run["errors"]:
        print(f"     error: {error}")


def print_figures(rows: list[dict[str, Any]]) -> None:
    print("\n== figures (targets are informational: the benchmark never fails on a ratio)")
    for r in rows:
        met = {True: "met", False: "MISSED", None: ""}[r["met"]]
        print(f"   {r['figure']}: {r['measured']} (bound/baseline {r['bound']}, ratio {_x(r['ratio'])}) "
              f"target {r['target']} {met}")


def readme_table(out: dict[str, Any]) -> str:
    m, o = out["machine"], out["options"]
    concurrency = sorted({res["concurrency"] for res in out["modes"].values()})
    lines = [f"Windows of {o['customers']:,} customers × {o['metrics']} metrics, {o['latency'] * 1000:g} ms per "
             f"request, max_concurrency {', '.join(map(str, concurrency))}.", "",
             "| figure | measured | bound / baseline | ratio | target | met? |", "|---|---:|---:|---:|---:|:-:|"]
    for r in out["figures"]:
        met = {True: "yes", False: "**no**", None: "–"}[r["met"]]
        lines.append(f"| {r['figure']} | {r['measured']} | {r['bound']} | {_x(r['ratio'])} | {r['target']} | {met} |")
    options = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in o.items() if v not in (None, False))
    lines += ["", f"Produced by `make bench` on {out['date']}, commit `{out['commit']}`, {m['nproc']} vCPU "
              f"({m['cpu']}), {(m['ram_bytes'] or 0) / GIB:.0f} GiB RAM, Python {m['python']}, Dagster "
              f"{m['dagster']}, DuckDB {m['duckdb']}; options `{options}`; {out['seconds']:.0f} s in all. The "
              "bound is Σ over steps ⌈fewest requests ÷ concurrency⌉ × latency; the size row uses a smaller "
              "world without latency."]
    return "\n".join(lines)


def write_readme(out: dict[str, Any]) -> None:
    text = README.read_text(encoding="utf-8")
    body = f"{START}\n{readme_table(out)}\n{END}"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + body + rest.split(END, 1)[1]
    elif "\n## Reliability\n" in text:
        head, rest = text.split("\n## Reliability\n", 1)
        text = f"{head}\n## Performance\n\n{body}\n\n## Reliability\n{rest}"
    else:
        text = text.rstrip("\n") + f"\n\n## Performance\n\n{body}\n"
    README.write_text(text, encoding="utf-8")
    print(f"\nwrote the Performance table of {README}")


# ---------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add = parser.add_argument
    add("--customers", type=int, default=DEFAULT_CUSTOMERS,
        help=f"Metronome customers, one entitlement each ({DEFAULT_CUSTOMERS}; the issue's size is {ISSUE_CUSTOMERS})")
    add("--metrics", type=int, default=20, help="billable metrics (20)")
    add("--latency", type=float, default=0.02, help="seconds the emulators add to every request (0.02)")
    add("--concurrency", type=int, default=None, help="max_concurrency (default: the configuration's default)")
    add("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)} (all)")
    add("--size-windows", type=int, default=24, help="hourly windows of the DuckDB size run (24; 0 skips it)")
    add("--size-customers", type=int, default=200, help="customers of the DuckDB size run (200)")
    add("--skip-micro", action="store_true", help="skip benchmarks/micro.py's two ratios")
    add("--micro-rows", type=int, default=1_000_000, help="usage rows of the conversion micro-benchmark")
    add("--micro-repeat", type=int, default=1, help="repeats of each micro-benchmark (median; 1)")
    add("--json", type=Path, default=None, help="write every figure to this file")
    add("--write-readme", action="store_true", help="rewrite README.md's Performance table from this run")
    args = parser.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not args.modes or any(m not in MODES for m in args.modes):
        parser.error(f"--modes takes a comma-separated list of {', '.join(MODES)}")
    if args.customers < 1 or args.metrics < 1 or args.latency < 0 or args.size_windows < 0 or args.micro_repeat < 1:
        parser.error("--customers, --metrics and --micro-repeat must be at least 1; --latency, --size-windows >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    options = {k: (str(v) if isinstance(v, Path) else ",".join(v) if isinstance(v, list) else v)
               for k, v in vars(args).items() if k not in ("json", "write_readme")}
    out: dict[str, Any] = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "commit": commit(),
                           "machine": machine(), "options": options, "modes": {}}
    m = out["machine"]
    print(f"metronome-suger benchmark (issue 12), commit {out['commit']}; {m['nproc']} CPUs ({m['cpu']}), "
          f"{(m['ram_bytes'] or 0) / GIB:.1f} GiB RAM, Python {m['python']}, Dagster {m['dagster']}, "
          f"DuckDB {m['duckdb']}", flush=True)
    print(BOUND_RULES, flush=True)
    with tempfile.TemporaryDirectory(prefix="metronome_suger_bench_") as name:
        tmp = Path(name)
        for mode in args.modes:
            res = out["modes"][mode] = bench_mode(args, mode, tmp)
            print(f"   concurrency {res['concurrency']}; emulators up (world built) in {res['setup_s']:.1f} s, "
                  f"build_definitions {res['build_definitions_s']:.2f} s (not in wall)")
            for label, run in res["runs"].items():
                print_run("first run" if label == "first" else "re-run", run)
            for note in res["notes"]:
                print(f"   NOTE: {note}")
        if not args.skip_micro:
            out["micro"] = micro_figures(args)
            conv, defs = out["micro"]["conversion"], out["micro"]["definitions"]
            print(f"   conversion: DuckDB {conv['duckdb_seconds']} s, Python loop {conv['python_seconds']} s, "
                  f"ratio {conv['ratio']}×; definitions: project {defs['project_seconds']} s, one asset "
                  f"{defs['one_asset_seconds']} s, ratio {defs['ratio']}×; imports the project adds (ms): "
                  + ", ".join(f"{t['package']} {t['extra_ms']}" for t in defs["top_imports"]))
        if args.size_windows:
            size = out["size"] = size_run(args, tmp)
            print(f"   {size['total_bytes'] / 2**20:.1f} MiB after {size['windows']} windows, "
                  f"{size['bytes_per_window'] / 2**20:.2f} MiB per window; rows: "
                  + ", ".join(f"{t} {n}" for t, n in size["rows"].items() if n))
    out["figures"] = figures(out)
    print_figures(out["figures"])
    runs = [run for res in out["modes"].values() for run in res["runs"].values()]
    failures = [f"{mode} {label}" for mode, res in out["modes"].items() for label, run in res["runs"].items()
                if not run["success"]] + [f"size window {w}" for w in out.get("size", {}).get("failed_windows", [])]
    resent = [f"{mode}: {res['runs']['rerun']['suger_sends']}" for mode, res in out["modes"].items()
              if res["runs"]["rerun"]["suger_sends"]]
    out["ok"] = not failures and not resent and all(run["success"] for run in runs)
    out["seconds"] = time.perf_counter() - started
    if failures:
        print(f"\nFAILED runs: {', '.join(failures)}")
    if resent:
        print(f"\nEXACTLY-ONCE BROKEN: re-runs sent to Suger ({', '.join(resent)})")
    print(f"\n{out['seconds']:.0f} s in all")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2, default=str), encoding="utf-8")
    if args.write_readme:
        write_readme(out)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
