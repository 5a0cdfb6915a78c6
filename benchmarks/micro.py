"""Micro benchmarks for issue 12 (measured, never asserted on wall-clock time).

* ``conversion_ratio``: usage rows → usage records by the product's DuckDB path (``compute_records``, what the
  ``suger_usage_records`` asset calls) versus a per-row ``Decimal`` loop in Python over the same DuckDB table
  (read, look up, multiply, round, sum per entitlement × dimension, insert back); the results must be equal.
* ``definitions_ratio``: ``dagster definitions validate`` of this repository's code location versus one of a
  single trivial asset (``benchmarks/one_asset.py``), and where the project's extra import time goes.

    .venv/bin/python benchmarks/micro.py [--rows 1000000] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal, localcontext
from functools import partial
from pathlib import Path
from typing import Any

import duckdb

from metronome_suger.config import DimensionMapping
from metronome_suger.core.ids import record_group_id
from metronome_suger.core.linkage import reports_usage
from metronome_suger.core.windows import Window, window_at
from metronome_suger.steps.records import Conversion, compute_records
from metronome_suger.storage.db import QTY, bulk_insert, connect
from metronome_suger.storage.snapshots import store_links, store_metrics
from metronome_suger.storage.usage import latest_metrics

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# -- conversion: the data ---------------------------------------------------------------------------------

METRICS, HOURS, DIMENSIONS = 20, 5, 16  # metrics 16-19 share dimensions 0-3: totals aggregate several metrics
PARTNERS = ("AWS", "AZURE", "GCP")
MULTIPLIERS = ("1", "0.001", "1.5", "0.0166666667", "3600", "0.25", "100", "0.0000001", "2.75", "0.3333333333")
FIRST_HOUR = datetime(2026, 11, 25, 8, tzinfo=timezone.utc)
SNAPSHOT_AT = datetime(2026, 11, 25, 14, 1, tzinfo=timezone.utc)
NOW = datetime(2026, 11, 25, 14, 5, tzinfo=timezone.utc)
ORG, BILLING_MODE = "org-micro", "quantity"
STEP = Decimal("1e-10")  # DECIMAL(38,10): the ledger's scale


def _metric(j: int) -> str:
    return f"metric_{j:02d}"


def _dimension(k: int) -> str:
    return f"dim_{k:02d}"


def _customers(rows: int) -> int:
    return max(1, math.ceil(rows / (METRICS * HOURS)))


def _conversion() -> dict[str, dict[str, list[DimensionMapping]]]:
    """Each partner maps every metric to one dimension with its own multipliers; metric_00 also feeds a
    second dimension (one source row, two records), as a usage fee alongside a unit often does."""
    out = {partner: {_metric(j): [DimensionMapping(dimension_key=_dimension(j % DIMENSIONS),
                                                   multiplier=Decimal(MULTIPLIERS[(j + 3 * p) % len(MULTIPLIERS)]))]
                     for j in range(METRICS)} for p, partner in enumerate(PARTNERS)}
    for table in out.values():
        table[_metric(0)].append(DimensionMapping(dimension_key=_dimension(DIMENSIONS - 1), multiplier=Decimal("0.01")))
    return out


def _value(c: int, j: int, h: int) -> Decimal:
    """Deterministic usage with up to 6 decimal places; one value in 20 is 0 (not converted)."""
    n = (c * 7919 + j * 104729 + h * 15485863) % 1_000_003
    return Decimal(0) if n % 20 == 0 else Decimal(n * 37).scaleb(-6)


_USAGE_COLUMNS = {
    "window_start": "TIMESTAMPTZ", "window_end": "TIMESTAMPTZ", "customer_id": "VARCHAR", "metric_id": "VARCHAR",
    "metric_name": "VARCHAR", "value": QTY, "value_was_null": "BOOLEAN", "fetched_at": "TIMESTAMPTZ",
}


@contextmanager
def _connect(db: Path, **kwargs: Any) -> Iterator[duckdb.DuckDBPyConnection]:
    """The product's connection, without DuckDB's progress bar (it floods the terminal on long statements)."""
    with connect(db, **kwargs) as conn:
        conn.execute("SET enable_progress_bar = false")
        yield conn


def _build(db: Path, customers: int, windows: Sequence[Window]) -> None:
    """The state the records asset reads, written by the product's own storage functions."""
    with _connect(db) as conn:
        store_metrics(conn, SNAPSHOT_AT, [(f"m-{j}", _metric(j), "SUM", False, True) for j in range(METRICS)])
        links = [(f"cust-{c}", f"buyer-{c}", f"ent-{c}", PARTNERS[c % 3], "ACTIVE", None, None, None, "buyer", None)
                 for c in range(customers)]
        dims = [(f"ent-{c}", _dimension(k), f"Dimension {k}", Decimal(k + 1).scaleb(-3))
                for c in range(customers) for k in range(DIMENSIONS)]
        store_links(conn, SNAPSHOT_AT, links, dims)
        # The usage step's own writer is being reworked (issue 12); the product's bulk insert fills the same table.
        bulk_insert(conn, "usage", _USAGE_COLUMNS,
                    ((w.start, w.end, f"cust-{c}", f"m-{j}", _metric(j), _value(c, j, h), False, SNAPSHOT_AT)
                     for h, w in enumerate(windows) for c in range(customers) for j in range(METRICS)))


def _reset(db: Path) -> None:
    """Each timed run starts from an empty ledger, as the window's first run does."""
    with _connect(db) as conn:
        for table in ("usage_records", "report_lines", "report_ledger", "over_reported"):
            conn.execute(f"DELETE FROM {table}")
        conn.execute("CHECKPOINT")


# -- conversion: the naive loop ---------------------------------------------------------------------------

NAIVE_LINES = "micro_naive_lines"
NAIVE_GROUP_LINES = "micro_naive_group_lines"
_LINE_COLUMNS = {
    "record_group_id": "VARCHAR", "revision": "INTEGER", "window_start": "TIMESTAMPTZ", "entitlement_id": "VARCHAR",
    "customer_id": "VARCHAR", "partner": "VARCHAR", "source_key": "VARCHAR", "origin_quantity": QTY,
    "dimension_key": "VARCHAR", "mapping_mode": "VARCHAR", "multiplier": QTY, "rate": QTY, "quantity": QTY,
}
_GROUP_LINE_COLUMNS = {"record_group_id": "VARCHAR", "dimension_key": "VARCHAR", "quantity": QTY}


def python_records(db: Path, windows: Sequence[Window], conversion: dict[str, dict[str, list[DimensionMapping]]]
                   ) -> int:
    """What a naive implementation does: every usage row through Python (lookup, multiply, round, sum per
    entitlement × dimension), then the lines and the groups' lines inserted back. Returns the lines. The insert
    goes through the product's NDJSON ``bulk_insert``, not ``executemany`` (~6 ms a row here: hours per million),
    so the loop is the fastest naive version and the ratio a lower bound."""
    lines_out = 0
    with _connect(db) as conn, localcontext() as ctx:
        ctx.prec = 80  # exact products of two DECIMAL(38,10) values before rounding to the ledger's scale
        names = {m.id: m.name for m in latest_metrics(conn)}  # a metric id in the config means its name
        mapping: dict[tuple[str, str], list[tuple[str, str, Decimal]]] = {}
        for partner, configured in conversion.items():
            for key, targets in configured.items():
                mapping[(partner, names.get(key, key))] = [(t.dimension_key, t.mapping_mode, t.multiplier)
                                                           for t in targets]
        snapshot = "(SELECT max(snapshot_at) FROM entitlements)"
        rates = {(e, k): r for e, k, r in conn.execute(
            f"SELECT entitlement_id, dimension_key, rate FROM entitlement_dimensions WHERE snapshot_at = {snapshot}"
        ).fetchall()}
        all_links = conn.execute(
            "SELECT DISTINCT metronome_customer_id, entitlement_id, partner, status, start_time, end_time "
            f"FROM entitlements WHERE snapshot_at = {snapshot}").fetchall()
        for table, columns in ((NAIVE_LINES, _LINE_COLUMNS), (NAIVE_GROUP_LINES, _GROUP_LINE_COLUMNS)):
            conn.execute(f"CREATE OR REPLACE TABLE {table} ("
                         + ", ".join(f"{n} {t}" for n, t in columns.items()) + ")")
        for window in windows:
            links: dict[str, list[tuple[str, str]]] = {}
            for cust, ent, partner, status, start, end in all_links:
                if reports_usage(status, end) and (start is None or start < window.end) \
                        and (end is None or end > window.start):
                    links.setdefault(cust, []).append((ent, partner))
            usage = conn.execute(
                """SELECT u.customer_id, m.name, u.value
                FROM usage u JOIN billable_metrics m ON m.metric_id = u.metric_id
                WHERE m.snapshot_at = (SELECT max(snapshot_at) FROM billable_metrics) AND m.whitelisted
                  AND u.window_start = ?""", [window.start]).fetchall()
            lines: list[tuple[Any, ...]] = []
            totals: dict[str, dict[str, Decimal]] = {}
            for cust, key, value in usage:
                if value == 0:
                    continue
                for ent, partner in links.get(cust, ()):
                    for dim, mode, mult in mapping.get((partner, key), ()):
                        qty = (value * mult).quantize(STEP, rounding=ROUND_HALF_UP)
                        lines.append((ent, cust, partner, key, value, dim, mode, mult, rates.get((ent, dim)), qty))
                        per_ent = totals.setdefault(ent, {})
                        per_ent[dim] = per_ent.get(dim, Decimal(0)) + qty
            group_ids = {ent: record_group_id(ORG, ent, BILLING_MODE, window.start, 0)
                         for ent, dims in totals.items() if any(q > 0 for q in dims.values())}
            lines_out += bulk_insert(conn, NAIVE_LINES, _LINE_COLUMNS,
                                     ((group_ids[line[0]], 0, window.start, *line) for line in lines
                                      if line[0] in group_ids))
            bulk_insert(conn, NAIVE_GROUP_LINES, _GROUP_LINE_COLUMNS,
                        ((gid, dim, qty) for ent, gid in group_ids.items()
                         for dim, qty in sorted(totals[ent].items()) if qty > 0))
    return lines_out


def _check_same(db: Path) -> int:
    """Both paths gave the same lines and the same per-group totals; raises otherwise."""
    cols = ", ".join(_LINE_COLUMNS)
    with _connect(db) as conn:
        for what, product, naive in (
            ("lines", f"SELECT {cols} FROM usage_records", f"SELECT {cols} FROM {NAIVE_LINES}"),
            ("group lines", "SELECT record_group_id, dimension_key, quantity FROM report_lines",
             f"SELECT record_group_id, dimension_key, quantity FROM {NAIVE_GROUP_LINES}"),
        ):
            only_product = conn.execute(f"SELECT count(*) FROM ({product} EXCEPT ALL {naive})").fetchall()[0][0]
            only_naive = conn.execute(f"SELECT count(*) FROM ({naive} EXCEPT ALL {product})").fetchall()[0][0]
            count = conn.execute(f"SELECT count(*) FROM ({product})").fetchall()[0][0]
            if only_product or only_naive or not count:
                raise RuntimeError(f"conversion {what} differ: {only_product} only in DuckDB's, {only_naive} only "
                                   f"in the Python loop's, {count} in DuckDB's")
        return int(conn.execute("SELECT count(*) FROM usage_records").fetchall()[0][0])


def _timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """Wall and CPU seconds of this process (DuckDB's threads included): CPU is steadier on a shared machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


@contextmanager
def _world(rows: int) -> Iterator[tuple[Path, list[Window], float]]:
    """A DuckDB file in a temp dir holding ``rows`` usage rows (customers × 20 metrics × 5 hours), the
    windows, and the setup's seconds."""
    customers = _customers(rows)
    windows = [window_at(FIRST_HOUR + timedelta(hours=h), True) for h in range(HOURS)]
    with tempfile.TemporaryDirectory(prefix="micro_conversion_") as tmp:
        db = Path(tmp) / "micro.duckdb"
        setup, _ = _timed(lambda: _build(db, customers, windows))
        yield db, windows, setup


def _product_records(db: Path, windows: Sequence[Window]) -> None:
    """What the ``suger_usage_records`` asset runs for these windows."""
    out = compute_records(partial(_connect, db), windows, Conversion(_conversion(), amount_mode=False), org_id=ORG,
                          billing_mode=BILLING_MODE, now=NOW)
    if out.problems:
        raise RuntimeError("the product refused the windows: " + "; ".join(out.problems))


def conversion_ratio(rows: int = 1_000_000, *, repeat: int = 3) -> dict[str, Any]:
    """Median seconds of the product's DuckDB conversion and of the per-row Python loop over the same
    ``rows`` usage rows (customers × 20 metrics × 5 hours), and their ratio (loop / DuckDB)."""
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    conversion = _conversion()
    with _world(rows) as (db, windows, setup):
        duck: list[tuple[float, float]] = []
        loop: list[tuple[float, float]] = []
        for _ in range(repeat):
            _reset(db)
            duck.append(_timed(lambda: _product_records(db, windows)))
            loop.append(_timed(lambda: python_records(db, windows, conversion)))
            lines = _check_same(db)  # raises unless both gave the same records
    return {"rows": _customers(rows) * METRICS * HOURS, "lines": lines, **_medians("python", loop, "duckdb", duck),
            "setup_seconds": round(setup, 1)}


def _medians(num: str, num_runs: list[tuple[float, float]], den: str, den_runs: list[tuple[float, float]]
             ) -> dict[str, Any]:
    """Median wall and CPU seconds of both sides, the ratios ``num`` / ``den``, and the wall time of each run."""
    out: dict[str, Any] = {}
    for name, runs in ((num, num_runs), (den, den_runs)):
        out[f"{name}_seconds"] = round(statistics.median(t[0] for t in runs), 3)
        out[f"{name}_cpu_seconds"] = round(statistics.median(t[1] for t in runs), 3)
        out[f"{name}_runs"] = [round(t[0], 3) for t in runs]
    out["ratio"] = round(out[f"{num}_seconds"] / out[f"{den}_seconds"], 2)
    out["cpu_ratio"] = round(out[f"{num}_cpu_seconds"] / out[f"{den}_cpu_seconds"], 2)
    return out


# -- dagster definitions validate ---------------------------------------------------------------------------


def _env() -> dict[str, str]:
    """As the test suite runs it: the bundled configuration, no tokens (loading must not need them)."""
    env = {k: v for k, v in os.environ.items() if k != "METRONOME_SUGER_CONFIG"}
    return {**env, "METRONOME_API_TOKEN": "", "SUGER_API_KEY": ""}


def _validate(target: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one ``dagster definitions validate`` from the repository root with a fresh
    DAGSTER_HOME; raises if it fails."""
    with tempfile.TemporaryDirectory(prefix="micro_dagster_home_") as home:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run([str(BIN / "dagster"), "definitions", "validate", *target], cwd=ROOT,
                              env={**_env(), "DAGSTER_HOME": home}, capture_output=True, text=True, timeout=600)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0 or "All code locations passed validation" not in proc.stdout + proc.stderr:
        raise RuntimeError(f"dagster definitions validate {' '.join(target)} failed:\n{proc.stderr[-3000:]}")
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+\d+ \| *(\S+)")


def import_times(code: str) -> dict[str, float]:
    """Self import time (ms) of each module ``python -X importtime -c code`` imports, in a fresh process."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"python -X importtime -c {code!r} failed:\n{proc.stderr[-3000:]}")
    found = (_IMPORT_LINE.match(line) for line in proc.stderr.splitlines())
    return {m.group(2): int(m.group(1)) / 1000 for m in found if m}


def _fastest(code: str, runs: int) -> tuple[dict[str, float], dict[str, float]]:
    """Per module the least of ``runs`` measurements (the others waited for a busy machine), and per package."""
    modules: dict[str, float] = {}
    for _ in range(runs):
        for module, ms in import_times(code).items():
            modules[module] = min(ms, modules.get(module, ms))
    packages: dict[str, float] = {}
    for module, ms in modules.items():
        packages[module.split(".")[0]] = packages.get(module.split(".")[0], 0.0) + ms
    return modules, packages


def definitions_ratio(*, repeat: int = 3, top: int = 8) -> dict[str, Any]:
    """Median seconds of validating the project's code location and a one-asset one, their ratio, and where
    the project's extra import time goes (ms, project import minus one-asset import, per package and module)."""
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    project: list[tuple[float, float]] = []
    one: list[tuple[float, float]] = []
    for _ in range(repeat):  # interleaved: a busy moment of the machine weighs on both
        project.append(_validate(["-w", "workspace.yaml"]))
        one.append(_validate(["-f", "benchmarks/one_asset.py"]))
    proj, proj_pkg = _fastest("import metronome_suger.definitions", repeat)
    base, base_pkg = _fastest("import runpy; runpy.run_path('benchmarks/one_asset.py')", repeat)
    packages = sorted(((p, ms - base_pkg.get(p, 0.0), ms) for p, ms in proj_pkg.items()), key=lambda t: -t[1])
    modules = sorted(((m, ms) for m, ms in proj.items() if m not in base), key=lambda t: -t[1])
    return {
        **_medians("project", project, "one_asset", one),
        "import_ms": {"project": round(sum(proj.values())), "one_asset": round(sum(base.values()))},
        "top_imports": [{"package": p, "extra_ms": round(x), "project_ms": round(ms)} for p, x, ms in packages[:top]],
        "top_extra_modules": [{"module": m, "ms": round(ms)} for m, ms in modules[:top]],
    }


# -- command line -------------------------------------------------------------------------------------------


def _table(results: dict[str, Any]) -> str:
    conv, defs = results["conversion"], results["definitions"]
    rows = [("benchmark", "product", "baseline", "ratio (wall; CPU)"),
            (f"records from {conv['rows']:,} usage rows", f"{conv['duckdb_seconds']:.2f} s DuckDB",
             f"{conv['python_seconds']:.2f} s Python loop", f"{conv['ratio']:.2f}x; {conv['cpu_ratio']:.2f}x"),
            ("dagster definitions validate", f"{defs['project_seconds']:.2f} s project",
             f"{defs['one_asset_seconds']:.2f} s one asset", f"{defs['ratio']:.2f}x; {defs['cpu_ratio']:.2f}x")]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    text = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    text.insert(1, "-+-".join("-" * w for w in widths))
    ms = defs["import_ms"]
    text.append(f"\nimport time: project {ms['project']} ms, one asset {ms['one_asset']} ms; the project adds most in:")
    text += [f"  {t['package']:<28} +{t['extra_ms']:>5} ms" for t in defs["top_imports"]]
    text += [f"  module {t['module']:<40} {t['ms']:>5} ms" for t in defs["top_extra_modules"]]
    return "\n".join(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000, help="usage rows to convert (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each side (median; default 3)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = parser.parse_args(argv)
    results = {"conversion": conversion_ratio(args.rows, repeat=args.repeat),
               "definitions": definitions_ratio(repeat=args.repeat)}
    print(json.dumps(results, indent=2) if args.json else _table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
