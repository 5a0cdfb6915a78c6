"""Benchmark: one hourly window of the real pipeline at scale, against the bundled sandbox.

Not a test: nothing is asserted on wall-clock time. It builds a sandbox with N customers (each
linked to exactly one Suger entitlement, marketplaces spread over AWS / AZURE / GCP) and M billable
metrics with deterministic hourly usage (``quantity``) or one USD invoice per customer
(``amount_hourly``), and runs the whole Dagster job for partition
2026-11-25-13:00 twice:

* ``first``  - the window as the schedule runs it (everything is computed and sent);
* ``re-run`` - the same window again (exactly once: it must send nothing to Suger).

A *pass* is a fresh sandbox, DuckDB file (in a temp dir) and Dagster instance, then those two runs.
``--repeat K`` timed passes run without tracemalloc (it slows this workload 3-4x); then
one more ``traced`` pass measures peak Python memory under tracemalloc (skip it: --no-tracemalloc).

Per run: wall time of ``execute_in_process``, each step's duration (STEP_START to STEP_SUCCESS /
STEP_FAILURE in the run's event log), the HTTP requests each emulator received, CPU seconds of the
two emulator threads (they share this process and its GIL with the pipeline: that much of the wall
time is the sandbox, not the plugin), rows in ``usage`` / ``usage_records`` / ``report_ledger``,
peak traced Python memory (all threads, emulators included) and peak RSS (``VmHWM``, reset before
each run where Linux allows; else ``ru_maxrss``, the process-lifetime peak, marked ``*``).

    .venv/bin/python benchmarks/bench_window.py                     # 1000 customers, 3 metrics
    .venv/bin/python benchmarks/bench_window.py --mode amount_hourly
    .venv/bin/python benchmarks/bench_window.py --customers 5000 --repeat 3 --no-tracemalloc -v

See benchmarks/README.md for measured numbers.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore")  # Dagster preview/beta warnings are noise here

import dagster as dg  # noqa: E402
import duckdb  # noqa: E402
import yaml  # noqa: E402

from metronome_suger.config import AppConfig, parse_config_data  # noqa: E402
from metronome_suger.orchestration.definitions import build_definitions  # noqa: E402
from metronome_suger.orchestration.resources import ClockResource  # noqa: E402
from metronome_suger.sandbox.server import Sandbox  # noqa: E402

SANDBOX_YAML = Path(__file__).resolve().parents[1] / "metronome_suger" / "sandbox" / "sandbox.yaml"

# Same instant as the test suite; the benchmarked window is the last closed hour before it.
NOW = datetime(2026, 11, 25, 14, 5, tzinfo=timezone.utc)
PARTITION = "2026-11-25-13:00"
WINDOW_START = datetime(2026, 11, 25, 13, tzinfo=timezone.utc)
WINDOW_END = WINDOW_START + timedelta(hours=1)
MONTH_START = datetime(2026, 11, 1, tzinfo=timezone.utc)
MONTH_END = datetime(2026, 12, 1, tzinfo=timezone.utc)
PARTNERS = ("AWS", "AZURE", "GCP")
# The sandbox configuration's source keys, in order; metrics beyond these get their own dimension.
BASE_METRICS = ("cpu_hours", "api_calls", "peak_storage_gb")
BASE_DIMENSIONS = (
    {"key": "cpu_hour", "name": "CPU hours", "rate": Decimal("0.12")},
    {"key": "api_request", "name": "API requests", "rate": Decimal("0.0005")},
    {"key": "storage_gb", "name": "Storage GB-hours", "rate": Decimal("0.005")},
    {"key": "usage_fee", "name": "Usage fee", "rate": Decimal("0.01")},
)
# Dagster's console logger prints every event at DEBUG; keep the terminal to warnings (events are
# still stored in the instance's event log, which is where step timings are read from).
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
NS = uuid.UUID("0b5e6c1e-8d3a-4f3e-9a51-6d1f2c0b7a11")
MASK64 = (1 << 64) - 1


# ----------------------------------------------------------------------------------- the world
def _hash(*parts: int) -> int:
    """splitmix64 over the parts: stable across runs and platforms."""
    x = 0
    for part in parts:
        x = (x + part + 0x9E3779B97F4A7C15) & MASK64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
        x ^= x >> 31
    return x


def usage_generator(position: int, metric_index: int):  # type: ignore[no-untyped-def]
    """Hourly value in hundredths, 0.00..999.99; about one hour in eleven is exactly zero."""

    def generate(hour: datetime) -> Decimal:
        h = _hash(position, metric_index, int(hour.timestamp()) // 3600)
        return Decimal(0) if h % 11 == 0 else Decimal((h >> 8) % 100_000).scaleb(-2)

    return generate


def metric_names(count: int) -> list[str]:
    return [BASE_METRICS[i] if i < len(BASE_METRICS) else f"extra_metric_{i}" for i in range(count)]


def extra_dimension(name: str) -> dict[str, Any]:
    return {"key": f"{name}_unit", "name": f"{name} units", "rate": Decimal("0.001")}


def populate(sandbox: Sandbox, customers: int, metrics: int, mode: str) -> None:
    """N customers x 1 entitlement each, M metrics; usage generators or one invoice per customer."""
    metronome, suger = sandbox.metronome, sandbox.suger
    names = metric_names(metrics)
    dimensions = [dict(d) for d in BASE_DIMENSIONS] + [extra_dimension(n) for n in names[3:]]
    metric_ids = [
        metronome.add_billable_metric(
            name, aggregation_type="SUM", aggregation_key=name,
            id=str(uuid.uuid5(NS, f"metric:{name}")), unit_price_cents=Decimal(1),
        )["id"]
        for name in names
    ]
    for position in range(customers):
        customer_id = str(uuid.uuid5(NS, f"customer:{position}"))
        partner = PARTNERS[position % len(PARTNERS)]
        metronome.add_customer(
            f"Bench customer {position}", id=customer_id,
            created_at=MONTH_START - timedelta(days=30),
        )
        buyer = suger.add_buyer(
            f"Bench customer {position} ({partner})", partner=partner,
            metronome_customer_id=customer_id, id=f"buyer-{position}",
        )
        suger.add_entitlement(
            buyer["id"], partner=partner, dimensions=dimensions, id=f"ent-{position}",
            start_time=MONTH_START - timedelta(days=60),
        )
        if mode == "quantity":
            for index, metric_id in enumerate(metric_ids):
                generator = usage_generator(position, index)
                metronome.set_usage_generator(customer_id, metric_id, generator)
        else:
            invoice = metronome.add_invoice(
                customer_id, period_start=MONTH_START, period_end=MONTH_END,
                id=str(uuid.uuid5(NS, f"invoice:{position}")),
            )
            # A running total (cents) that grew until mid-window: the first run reports it all.
            base = 10_000 + _hash(position, 99) % 90_000
            metronome.set_invoice_total(invoice["id"], base, effective_at=MONTH_START)
            metronome.set_invoice_total(
                invoice["id"], base + 100 + _hash(position, 98) % 5_000,
                effective_at=WINDOW_START + timedelta(minutes=30),
            )


def build_config(sandbox: Sandbox, db_path: Path, metrics: int, mode: str) -> AppConfig:
    """The bundled sandbox configuration, pointed at this sandbox and a DuckDB file in tmp."""
    data = yaml.safe_load(SANDBOX_YAML.read_text(encoding="utf-8"))
    data["metronome"]["base_url"] = sandbox.metronome_url
    data["suger"]["base_url"] = sandbox.suger_url
    data["suger"]["org_id"] = sandbox.org_id
    data["billing_mode"] = mode
    data["storage"] = {"duckdb_path": str(db_path)}
    for name in metric_names(metrics)[3:]:
        key = extra_dimension(name)["key"]
        rule = [{"dimension_key": key, "mapping_mode": "QUANTITY", "multiplier": 1}]
        for partner in PARTNERS:
            data["dimension_conversion"][partner][name] = rule
    return parse_config_data(data, origin="benchmark config")


# --------------------------------------------------------------------------------- measurement
def _thread_cpu_seconds(native_id: int | None) -> float | None:
    """User + system CPU of one thread of this process (Linux /proc); None elsewhere."""
    if native_id is None:
        return None
    try:
        with open(f"/proc/self/task/{native_id}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def emulator_cpu() -> dict[str, float | None]:
    """CPU seconds so far of the uvicorn threads (named ``sandbox-<emulator>-<port>``)."""
    out: dict[str, float | None] = {"metronome": None, "suger": None}
    for thread in threading.enumerate():
        for name in out:
            if thread.name.startswith(f"sandbox-{name}-"):
                out[name] = _thread_cpu_seconds(thread.native_id)
    return out


def reset_peak_rss() -> bool:
    """Reset VmHWM (Linux: writing 5 to clear_refs) so the next read is this run's peak."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb(per_run: bool) -> float:
    if per_run:
        try:
            with open("/proc/self/status", encoding="ascii") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / (1024 * 1024) if sys.platform == "darwin" else maxrss / 1024


def process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def step_durations(instance: dg.DagsterInstance, run_id: str) -> dict[str, tuple[float, str]]:
    """step key -> (seconds from STEP_START to its end event, outcome), in start order."""
    starts: dict[str, float] = {}
    out: dict[str, tuple[float, str]] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        kind = event.event_type_value
        if kind == "STEP_START":
            starts[event.step_key] = entry.timestamp
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE") and event.step_key in starts:
            outcome = "ok" if kind == "STEP_SUCCESS" else "FAILED"
            out[event.step_key] = (entry.timestamp - starts[event.step_key], outcome)
    return out


def request_counts(log: Any) -> tuple[int, dict[str, int]]:
    """Total requests and a count per (method, route) with ids folded into ``{id}``."""
    by_route: dict[str, int] = {}
    entries = log.entries()
    for entry in entries:
        parts = entry.path.strip("/").split("/")
        if parts[:1] == ["org"] and len(parts) > 1:
            parts[1] = "{org}"
            if len(parts) > 3 and parts[2] in ("entitlement", "buyer", "usageRecordGroup"):
                parts[3] = "{id}"
        elif parts[:2] == ["v1", "customers"] and len(parts) > 2:
            parts[2] = "{id}"
        key = f"{entry.method} /{'/'.join(parts)}"
        by_route[key] = by_route.get(key, 0) + 1
    return len(entries), by_route


def table_rows(db_path: Path) -> dict[str, Any]:
    if not db_path.exists():
        return {"usage": 0, "usage_records": 0, "report_ledger": 0, "ledger_status": {}}
    with duckdb.connect(str(db_path), read_only=True) as conn:
        rows = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
                for t in ("usage", "usage_records", "report_ledger")}
        rows["ledger_status"] = dict(conn.execute(
            "SELECT status, count(*) FROM report_ledger GROUP BY 1 ORDER BY 1").fetchall())
    return rows


@dataclass
class RunResult:
    label: str
    success: bool
    build_s: float
    wall_s: float
    cpu_s: float
    steps: dict[str, tuple[float, str]]
    metronome_requests: int
    suger_requests: int
    metronome_routes: dict[str, int]
    suger_routes: dict[str, int]
    suger_posts: int
    emulator_cpu_s: dict[str, float | None]
    rows: dict[str, Any]
    traced_peak_mb: float | None
    rss_peak_mb: float
    rss_per_run: bool
    notes: list[str] = field(default_factory=list)


def run_window(label: str, sandbox: Sandbox, config: AppConfig, instance: dg.DagsterInstance,
               at: datetime, *, trace: bool) -> RunResult:
    """Build the definitions and run the partition once, measuring everything listed above."""
    sandbox.clock.set(at)
    sandbox.metronome_log.clear()
    sandbox.suger_log.clear()
    started = time.perf_counter()
    defs = build_definitions(config, resources={"clock": ClockResource(frozen_at=at.isoformat())})
    job = defs.resolve_implicit_global_asset_job_def()
    build_s = time.perf_counter() - started

    gc.collect()
    per_run_rss = reset_peak_rss()
    cpu_before, emu_before = process_cpu(), emulator_cpu()
    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    result = job.execute_in_process(
        partition_key=PARTITION, instance=instance, raise_on_error=False, run_config=QUIET,
    )
    wall_s = time.perf_counter() - started
    traced_peak = None
    if trace:
        traced_peak = tracemalloc.get_traced_memory()[1] / (1024 * 1024)
        tracemalloc.stop()
    cpu_s = process_cpu() - cpu_before
    emu_after = emulator_cpu()
    emu = {name: (None if emu_before[name] is None or emu_after[name] is None
                  else emu_after[name] - emu_before[name])  # type: ignore[operator]
           for name in emu_before}

    metronome_n, metronome_routes = request_counts(sandbox.metronome_log)
    suger_n, suger_routes = request_counts(sandbox.suger_log)
    suger_posts = sum(n for route, n in suger_routes.items() if route.startswith("POST "))
    notes = []
    if not result.success:
        notes.append(f"run failed: steps {result.get_failed_step_keys()}")
    return RunResult(
        label=label, success=result.success, build_s=build_s, wall_s=wall_s, cpu_s=cpu_s,
        steps=step_durations(instance, result.run_id),
        metronome_requests=metronome_n, suger_requests=suger_n,
        metronome_routes=metronome_routes, suger_routes=suger_routes, suger_posts=suger_posts,
        emulator_cpu_s=emu, rows=table_rows(config.duckdb_path),
        traced_peak_mb=traced_peak, rss_peak_mb=peak_rss_mb(per_run_rss), rss_per_run=per_run_rss,
        notes=notes,
    )


def one_pass(args: argparse.Namespace, name: str, *, trace: bool) -> list[RunResult]:
    """A fresh sandbox, DuckDB file and Dagster instance; the window run, then its re-run."""
    at = WINDOW_END + timedelta(minutes=20)  # window end + settle_minutes (15) + a little
    with tempfile.TemporaryDirectory(prefix="metronome_suger_bench_") as tmp:
        started = time.perf_counter()
        sandbox = Sandbox(customers=0, now=NOW)
        populate(sandbox, args.customers, args.metrics, args.mode)
        setup_s = time.perf_counter() - started
        os.environ.update(sandbox.env())
        db_path = Path(tmp) / "data" / "metronome_suger.duckdb"
        instance = dg.DagsterInstance.ephemeral()
        with sandbox:  # ports (hence URLs) are known once the servers listen
            config = build_config(sandbox, db_path, args.metrics, args.mode)
            first = run_window(f"{name} first", sandbox, config, instance, at, trace=trace)
            rerun = run_window(f"{name} re-run", sandbox, config, instance, at, trace=trace)
            if rerun.suger_posts:
                rerun.notes.append(f"re-run sent {rerun.suger_posts} POSTs to Suger (expected 0)")
    print(f"pass {name}: sandbox setup {setup_s:.1f} s (not timed), "
          f"first run {first.wall_s:.1f} s, re-run {rerun.wall_s:.1f} s", flush=True)
    return [first, rerun]


# ------------------------------------------------------------------------------------- output
def _fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        cells = zip(row, widths, strict=False)
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(cells)))


def report(
    args: argparse.Namespace, runs: list[list[RunResult]], traced: list[RunResult] | None
) -> None:
    every = [*runs, *([traced] if traced else [])]
    print()
    print(f"metronome-suger window benchmark: {args.customers} customers, {args.metrics} metrics, "
          f"mode {args.mode}, {args.repeat} repeat(s), partition {PARTITION}")
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, dagster {dg.__version__}, "
          f"duckdb {duckdb.__version__}")
    print("timed passes run without tracemalloc; 'traced' is one more pass under tracemalloc, for "
          "memory only (its times are inflated)" if traced else "tracemalloc off: no traced pass")
    print()
    headers = ["run", "wall s", "cpu s", "metronome emu cpu s", "suger emu cpu s", "metronome req",
               "suger req", "suger POST", "usage", "usage_records", "report_ledger", "py peak MB",
               "rss peak MB", "ok"]
    table = []
    for pair in every:
        for r in pair:
            table.append([
                r.label, f"{r.wall_s:.2f}", f"{r.cpu_s:.2f}",
                _fmt_s(r.emulator_cpu_s["metronome"]), _fmt_s(r.emulator_cpu_s["suger"]),
                str(r.metronome_requests), str(r.suger_requests), str(r.suger_posts),
                str(r.rows["usage"]), str(r.rows["usage_records"]), str(r.rows["report_ledger"]),
                "-" if r.traced_peak_mb is None else f"{r.traced_peak_mb:.0f}",
                f"{r.rss_peak_mb:.0f}{'' if r.rss_per_run else '*'}",
                "yes" if r.success else "NO",
            ])
    print_table(headers, table)
    if any(not r.rss_per_run for pair in every for r in pair):
        print("* ru_maxrss: process-lifetime peak (VmHWM could not be reset)")

    print()
    labels = [r.label.split(" ", 1)[1] for r in runs[0]]
    step_keys = list(dict.fromkeys(k for pair in runs for r in pair for k in r.steps))
    passes = f"{len(runs)} timed pass{'es' if len(runs) > 1 else ''}"
    headers = [f"step (median of {passes}, s)", *labels]
    table = []
    for key in step_keys:
        cells = []
        for i in range(len(labels)):
            values = [pair[i].steps[key][0] for pair in runs if key in pair[i].steps]
            failed = any(pair[i].steps.get(key, (0, "ok"))[1] != "ok" for pair in runs)
            cell = "-" if not values else f"{statistics.median(values):.2f}"
            cells.append(cell + (" FAILED" if failed else ""))
        table.append([key, *cells])
    sums = [statistics.median(sum(d for d, _ in pair[i].steps.values()) for pair in runs)
            for i in range(len(labels))]
    walls = [statistics.median(pair[i].wall_s for pair in runs) for i in range(len(labels))]
    builds = [statistics.median(pair[i].build_s for pair in runs) for i in range(len(labels))]
    table.append(["sum of steps", *(f"{s:.2f}" for s in sums)])
    table.append(["run overhead (wall - steps)", *(f"{w - s:.2f}" for w, s in zip(walls, sums, strict=True))])
    table.append(["build_definitions (not in wall)", *(f"{b:.2f}" for b in builds)])
    print_table(headers, table)

    if args.verbose:
        for label_index, label in enumerate(labels):
            last = runs[-1][label_index]
            print()
            print(f"requests per route, last repeat, {label}:")
            for route, count in sorted({**last.metronome_routes, **last.suger_routes}.items()):
                print(f"  {count:7d}  {route}")
            print(f"  ledger status: {last.rows['ledger_status']}")
    notes = [f"{r.label}: {n}" for pair in every for r in pair for n in r.notes]
    if notes:
        print()
        print("notes:")
        for note in notes:
            print(f"  {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1000,
                        help="customers, one entitlement each")
    parser.add_argument("--metrics", type=int, default=3, help="billable metrics (quantity mode)")
    parser.add_argument("--mode", choices=("quantity", "amount_hourly"), default="quantity")
    parser.add_argument("--repeat", type=int, default=1,
                        help="timed passes (each: fresh sandbox, DuckDB file and Dagster "
                             "instance; the run, then its re-run)")
    parser.add_argument("--no-tracemalloc", dest="tracemalloc", action="store_false",
                        help="skip the extra pass under tracemalloc (peak Python memory)")
    parser.add_argument("-v", "--verbose", action="store_true", help="requests per route")
    args = parser.parse_args(argv)
    if args.customers < 1 or args.metrics < 1 or args.repeat < 1:
        parser.error("--customers, --metrics and --repeat must be at least 1")
    runs = [one_pass(args, f"#{i}", trace=False) for i in range(1, args.repeat + 1)]
    traced = one_pass(args, "traced", trace=True) if args.tracemalloc else None
    report(args, runs, traced)
    every = [*runs, *([traced] if traced else [])]
    return 0 if all(r.success and not r.notes for pair in every for r in pair) else 1


if __name__ == "__main__":
    sys.exit(main())
