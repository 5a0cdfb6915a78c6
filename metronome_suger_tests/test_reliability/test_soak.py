"""The soak (issue 11): 7 simulated days, 168 hourly windows, driven through the schedule and the sensors with
a clock that moves. Every hour the schedule is evaluated at its cron time and the window it asks for is run for
real; every 6 hours the late-usage and Suger-status sensors are evaluated and what they ask for is run. On the
way: late usage (three rises, one into the last hour before a renewal), a renewal (a new entitlement replacing
an expiring one), a price change, a cancellation and one documented decrease. At the end ``usage_verification``
over the 168 windows shows only the documented over-reporting, Suger holds every group once and the exact sums,
every group was accepted, and the ledger grew linearly day by day (a table of its size per day is printed)."""

import functools
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import dagster as dg
import pytest

from metronome_suger.core.ids import record_group_id
from metronome_suger.core.windows import Window
from metronome_suger.orchestration.assets import conversion_of
from metronome_suger.orchestration.definitions import build_definitions
from metronome_suger.orchestration.resources import ClockResource
from metronome_suger.orchestration.sensors import LATE_USAGE_SENSOR, STATUS_SENSOR
from metronome_suger.sandbox.server import Sandbox
from metronome_suger.steps.records import verify_windows
from metronome_suger.storage.db import connect
from metronome_suger.storage.verification import Discrepancy
from metronome_suger_tests.conftest import AWS_DIMS, GCP_DIMS, HOUR, Pipeline, failure_text
from metronome_suger_tests.figures import record

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

UTC = timezone.utc
DAYS = 7
WINDOWS = 24 * DAYS
FIRST = datetime(2026, 11, 16, tzinfo=UTC)  # a Monday; the soak covers 16-22 November
SCHEDULE = "metronome_suger_job_schedule"
BYTES_FLOOR = 1024 * 1024  # growth below this is allocation noise (4 DuckDB blocks of 256 KiB)
SENSOR_EVERY = 6  # hours between sensor evaluations (at :30, after that hour's scheduled run at :15)
HTTP = {"timeout_seconds": 5, "max_attempts": 2, "initial_wait_seconds": 0.01, "max_wait_seconds": 0.05,
        "max_total_seconds": 10}
AZURE_DIMS = [{"key": "compute", "name": "Compute", "rate": 0.2}, {"key": "calls", "name": "Calls", "rate": 0.002}]
CUSTOMERS = (("Ann", "AWS", AWS_DIMS), ("Bo", "GCP", GCP_DIMS), ("Cy", "AZURE", AZURE_DIMS))
ANN, BO, CY = range(3)
CPU, API = "cpu_hours", "api_calls"
# source key → (dimension, multiplier) per marketplace: conftest's AWS and GCP rules, and Azure's added here
TARGETS = {"AWS": {CPU: ("cpu_hour", Decimal(1)), API: ("api_request", Decimal("0.001"))},
           "GCP": {CPU: ("vcpu_hours", Decimal(2)), API: ("requests", Decimal(1))},
           "AZURE": {CPU: ("compute", Decimal(1)), API: ("calls", Decimal("0.01"))}}

RENEWAL = FIRST + timedelta(days=3)  # Ann's first AWS entitlement ends; the renewal starts (announced a day before)
PRICE_CHANGE = FIRST + timedelta(days=4, minutes=20)  # Bo's GCP prices change after the 00:15 run
NEW_GCP_RATES = {"vcpu_hours": Decimal("0.125"), "requests": Decimal("0.0008")}
CANCELLED_AT = FIRST + timedelta(days=5, hours=10, minutes=20)  # Cy cancels: hours from 11:00 are never reported
LATE = [  # (when, customer, metric, hour, added): a rise after the window ran, picked up by the sensor at :30
    (FIRST + timedelta(days=1, hours=6, minutes=20), ANN, CPU, FIRST + timedelta(days=1, hours=4), Decimal(5)),
    (FIRST + timedelta(days=1, hours=6, minutes=20), CY, API, FIRST + timedelta(days=1, hours=1), Decimal(300)),
    (RENEWAL + timedelta(minutes=20), ANN, CPU, RENEWAL - HOUR, Decimal(2)),  # to the old entitlement
]
DECREASE = (FIRST + timedelta(days=4, hours=12, minutes=20), ANN, CPU, FIRST + timedelta(days=4, hours=10),
            Decimal(-2))  # documented: recorded as over-reported, never sent as a negative

Key = tuple[int, str, datetime]  # (customer, metric, hour)


def usage(customer: int, metric: str, hour: datetime) -> Decimal:
    """What Metronome first holds (never zero: every linked hour makes a group)."""
    h = int((hour - FIRST) / HOUR)
    return Decimal(3 + (7 * customer + 3 * h) % 6) if metric == CPU else Decimal(100 * (1 + (customer + h) % 4))


def hours() -> list[datetime]:
    return [FIRST + i * HOUR for i in range(WINDOWS)]


def key_of(hour: datetime) -> str:
    return f"{hour:%Y-%m-%d-%H:%M}"


def ts(hour: datetime) -> str:
    return f"{hour:%Y-%m-%dT%H:%M:%SZ}"


class World:
    """The emulators' state for the soak and the usage Metronome holds (``now``) or ever held (``peak``)."""

    def __init__(self, sb: Sandbox, pipeline: Pipeline) -> None:
        self.sb = sb
        sb.clock.set(FIRST - HOUR)
        pipeline.settings["http"] = HTTP
        pipeline.settings["dimension_conversion"]["AZURE"] = {
            source: [{"dimension_key": dim, "mapping_mode": "QUANTITY", "multiplier": str(mult)}]
            for source, (dim, mult) in TARGETS["AZURE"].items()}
        self.metrics = {m: sb.metronome.add_billable_metric(m)["id"] for m in (CPU, API)}
        self.customers: list[str] = []
        self.buyers: list[str] = []
        self.ents: list[str] = []
        for name, partner, dims in CUSTOMERS:
            self.customers.append(sb.metronome.add_customer(name)["id"])
            self.buyers.append(sb.suger.add_buyer(name, partner=partner,
                                                  metronome_customer_id=self.customers[-1])["id"])
            end = RENEWAL if name == "Ann" else None
            self.ents.append(sb.suger.add_entitlement(self.buyers[-1], partner=partner, dimensions=dims,
                                                      end_time=end)["id"])
        self.renewed = ""  # Ann's second AWS entitlement, once announced
        self.now: dict[Key, Decimal] = {}
        for c in range(len(CUSTOMERS)):
            for metric in (CPU, API):
                for hour in hours():
                    self.set(c, metric, hour, usage(c, metric, hour))
        self.peak = dict(self.now)

    def set(self, c: int, metric: str, hour: datetime, value: Decimal) -> None:
        self.now[c, metric, hour] = value
        self.sb.metronome.set_usage(self.customers[c], self.metrics[metric], hour, value)

    def change(self, c: int, metric: str, hour: datetime, delta: Decimal) -> None:
        self.set(c, metric, hour, self.now[c, metric, hour] + delta)
        self.peak[c, metric, hour] = max(self.peak[c, metric, hour], self.now[c, metric, hour])

    def announce_renewal(self) -> None:
        """The buyer's next subscription, starting when the first one ends: the same customer reports to it."""
        self.renewed = self.sb.suger.add_entitlement(self.buyers[ANN], partner="AWS", dimensions=AWS_DIMS,
                                                     start_time=RENEWAL)["id"]

    def change_prices(self) -> None:
        self.sb.suger.set_dimension_rates(self.ents[BO], NEW_GCP_RATES)

    def entitlement(self, c: int, hour: datetime) -> str | None:
        """Where (customer, hour) must be reported: Ann's renewal, Cy's cancellation (usage before it only)."""
        if c == ANN and hour >= RENEWAL:
            return self.renewed
        if c == CY and hour >= CANCELLED_AT:
            return None
        return self.ents[c]

    def expected(self, values: dict[Key, Decimal]) -> dict[tuple[str, str], Decimal]:
        """(entitlement, dimension) → the sum of ``values`` converted by the marketplace's rules."""
        out: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        for (c, metric, hour), value in values.items():
            ent = self.entitlement(c, hour)
            if ent is not None:
                dim, mult = TARGETS[CUSTOMERS[c][1]][metric]
                out[ent, dim] += value * mult
        return dict(out)


class Driver:
    """The daemon's part: evaluate the schedule at its cron times and the sensors at theirs, run what they ask
    for (each sensor run key once, as Dagster does), count runs and per-day run time."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.schedule = build_definitions(pipeline.config()).resolve_schedule_def(SCHEDULE)
        self.cursor: str | None = None
        self.run_keys: set[str] = set()
        self.runs = 0
        self.seconds = 0.0
        self.checks: dict[str, dict[str, bool]] = {}  # partition → check → passed, of its last run

    def run(self, key: str, at: datetime) -> None:
        started = time.perf_counter()
        result = self.pipeline.run(key, at=at)
        self.seconds += time.perf_counter() - started
        self.runs += 1
        assert result.success, f"{key} at {at}: {failure_text(result)}"
        self.checks[key] = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}

    def failing(self, check: str) -> list[str]:
        return [key for key, passed in self.checks.items() if not passed[check]]

    def scheduled(self, at: datetime) -> list[str]:
        data = self.schedule.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=at))
        keys = [r.partition_key for r in data.run_requests or []]
        for key in keys:
            assert key is not None
            self.run(key, at)
        return [k for k in keys if k is not None]

    def sensors(self, at: datetime) -> list[str]:
        late = self._tick(LATE_USAGE_SENSOR, at)
        self.cursor = late.cursor or self.cursor
        requested = [r for r in late.run_requests or [] if r.run_key not in self.run_keys]
        for request in requested:
            self.run_keys.add(request.run_key or "")
            self.run(request.partition_key or "", at)
        self._tick(STATUS_SENSOR, at + timedelta(minutes=5))
        return [r.partition_key or "" for r in requested]

    def _tick(self, name: str, at: datetime) -> Any:
        self.pipeline.sandbox.clock.set(at)
        defs = build_definitions(self.pipeline.config(), resources={"clock": ClockResource(frozen_at=at.isoformat())})
        context = dg.build_sensor_context(instance=self.pipeline.instance, cursor=self.cursor if name ==
                                          LATE_USAGE_SENSOR else None, definitions=defs, resources=defs.resources)
        return defs.resolve_sensor_def(name).evaluate_tick(context)


@dataclass(frozen=True)
class Day:
    day: int
    size: int  # the DuckDB file with its WAL, or pg_database_size
    live: int  # DuckDB: used blocks × block size; PostgreSQL: = size
    rows: int  # every row of every ledger table
    seconds: float  # in runs this day
    runs: int


def measure(pipeline: Pipeline, request: pytest.FixtureRequest) -> Callable[[int, float, int], Day]:
    """The ledger's size after a day: bytes as the backend counts them, and rows."""
    ledger = request.getfixturevalue("postgres_ledger") if pipeline.backend == "postgres" else None

    def day(number: int, seconds: float, runs: int) -> Day:
        with connect(pipeline.database(), read_only=True) as conn:
            tables = [t for (t,) in conn.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
                "AND schema_name IN ('main', 'public') AND NOT temporary").fetchall()]
            rows = sum(int(conn.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]) for t in tables)
            if ledger is None:
                [(block, used)] = conn.execute("SELECT block_size, used_blocks FROM pragma_database_size() "
                                               "WHERE database_name = current_database()").fetchall()
        if ledger is not None:
            size = live = int(ledger.server.execute(f"SELECT pg_database_size('{ledger.name}')").strip())
        else:
            wal = pipeline.db_path.with_name(pipeline.db_path.name + ".wal")
            size = pipeline.db_path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
            live = int(block) * int(used)
        return Day(number, size, live, rows, seconds, runs)

    return day


def growth(days: list[Day], field: str) -> list[int]:
    """Day-over-day increments of ``field`` for days 2..7 (day 1 carries the schema and the empty tables)."""
    values = [getattr(d, field) for d in days]
    return [b - a for a, b in zip(values, values[1:], strict=False)]


def verify_all(pipeline: Pipeline) -> list[tuple[datetime, Discrepancy]]:
    """``usage_verification``'s code path over all 168 windows at once: (window start, discrepancy)."""
    config = pipeline.config()
    windows = [Window(hour, hour + HOUR) for hour in hours()]
    found = verify_windows(functools.partial(connect, config.database()), windows, conversion_of(config))
    return [(window.start, d) for window, d in found]


def print_days(capsys: pytest.CaptureFixture[str], backend: str, driver: Driver, days: list[Day]) -> list[str]:
    table = ["day | ledger bytes | increment | live bytes |   rows | increment | runs | s per run"]
    for d, inc, rows in zip(days, [days[0].size, *growth(days, "size")], [days[0].rows, *growth(days, "rows")],
                            strict=True):
        table.append(f"{d.day:3} | {d.size:12,} | {inc:9,} | {d.live:10,} | {d.rows:6,} | {rows:9,} | {d.runs:4} | "
                     f"{d.seconds / d.runs:.2f}")
    with capsys.disabled():
        print(f"\nsoak on {backend}: {driver.runs} runs, {driver.seconds:.0f} s in runs")
        print("\n".join(table))
    return table


def test_seven_days_of_hourly_windows_end_exact_and_the_ledger_grows_linearly(
    sandbox: Sandbox, pipeline: Pipeline, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str],
) -> None:
    w = World(sandbox, pipeline)
    driver = Driver(pipeline)
    measure_day = measure(pipeline, request)
    events: list[tuple[datetime, Callable[[], object]]] = [
        (RENEWAL - timedelta(days=1) + timedelta(minutes=20), w.announce_renewal),
        (PRICE_CHANGE, w.change_prices),
        (CANCELLED_AT, lambda: sandbox.suger.cancel_entitlement(w.ents[CY], CANCELLED_AT)),
        *[(when, functools.partial(w.change, c, m, h, d)) for when, c, m, h, d in [*LATE, DECREASE]],
    ]
    reruns: list[str] = []
    days: list[Day] = []
    day_seconds, day_runs = 0.0, 0
    for i, hour in enumerate(hours()):
        tick = hour + HOUR + timedelta(minutes=15)  # the cron "15 * * * *" after the hour closed
        assert driver.scheduled(tick) == [key_of(hour)]  # the schedule asks for exactly the hour that closed
        for when, action in events:
            if tick < when <= tick + timedelta(minutes=10):
                sandbox.clock.set(when)
                action()
        if (hour + HOUR).hour % SENSOR_EVERY == 0:
            reruns += driver.sensors(tick + timedelta(minutes=15))
        if (i + 1) % 24 == 0:
            days.append(measure_day((i + 1) // 24, driver.seconds - day_seconds, driver.runs - day_runs))
            day_seconds, day_runs = driver.seconds, driver.runs
    end = FIRST + WINDOWS * HOUR + timedelta(hours=2, minutes=30)  # Suger's 01:00 report of the last groups
    driver.sensors(end)
    table = print_days(capsys, pipeline.backend, driver, days)

    # -- the figures: usage_verification over the 168 windows, and what Suger holds -------------------------------
    _, c, metric, hour, delta = DECREASE
    dim, mult = TARGETS[CUSTOMERS[c][1]][metric]
    found = verify_all(pipeline)
    under = [d for _, d in found if d.difference < 0]
    over = [(start, d) for start, d in found if d.difference > 0]
    undocumented = [d for start, d in over if (start, d.entitlement_id, d.dimension_key) != (hour, w.renewed, dim)]
    groups = sandbox.suger.groups()
    ids = Counter(g["id"] for g in groups)
    revisions = Counter((w.entitlement(c, h), ts(h)) for _, c, _, h, _ in LATE)
    wanted = {(ent, ts(h)): 1 + revisions[ent, ts(h)]
              for c in range(len(CUSTOMERS)) for h in hours() if (ent := w.entitlement(c, h)) is not None}
    held = Counter((g["entitlementID"], g["metaInfo"]["timestamp"]) for g in groups)
    duplicates = sum(n - 1 for n in ids.values()) + sum(max(0, n - wanted.get(k, 0)) for k, n in held.items())
    lost = sum(max(0, n - held[k]) for k, n in wanted.items())
    record("soak", windows=WINDOWS, runs=driver.runs, duplicates=duplicates, lost=lost, under=len(under),
           over=len(undocumented))  # over: beyond the documented decrease

    # -- the sensors found the late usage and the decrease, and nothing else ------------------------------------
    assert sorted(reruns) == sorted(key_of(h) for _, _, _, h, _ in [*LATE, DECREASE])
    assert driver.failing("usage_verification") == [key_of(hour)]  # the decrease's window, since its re-run
    # Cy's usage after the cancellation is named by customer_linkage, every hour from 11:00, never dropped silently
    assert driver.failing("customer_linkage") == [key_of(h) for h in hours() if h > CANCELLED_AT]

    # -- usage_verification: 0 under, and over exactly the documented decrease ----------------------------------
    assert (under, undocumented) == ([], [])
    aws_cpu_rate = Decimal(str(AWS_DIMS[0]["rate"]))
    assert [(s, d.customer_id, d.entitlement_id, d.dimension_key, d.metronome, d.reported, d.dollars)
            for s, d in over] == [(hour, w.customers[c], w.renewed, dim, w.now[c, metric, hour] * mult,
                                   w.peak[c, metric, hour] * mult, -delta * mult * aws_cpu_rate)]
    assert pipeline.query("SELECT window_start, entitlement_id, dimension_key, reported, current FROM over_reported") \
        == [(hour, w.renewed, dim, w.peak[c, metric, hour] * mult, w.now[c, metric, hour] * mult)]

    # -- Suger: every group once under its deterministic id, the exact sums, all accepted --------------------------
    assert (duplicates, lost) == (0, 0)
    assert set(ids) == {record_group_id(sandbox.org_id, ent, "quantity", datetime.fromisoformat(t), rev)
                        for (ent, t), n in wanted.items() for rev in range(n)}
    for _, c_late, m_late, h_late, rise in LATE:  # each late rise went out alone, as the next revision
        ent = w.entitlement(c_late, h_late)
        assert ent is not None
        target, factor = TARGETS[CUSTOMERS[c_late][1]][m_late]
        late = sandbox.suger.group(record_group_id(sandbox.org_id, ent, "quantity", h_late, 1))
        assert {k: Decimal(str(v)) for k, v in late["records"].items()} == {target: rise * factor}
    sums: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for g in groups:
        for key, qty in g["records"].items():
            sums[g["entitlementID"], key] += Decimal(str(qty))
    assert dict(sums) == w.expected(w.peak)  # what Metronome held at its highest × the multipliers
    assert w.expected(w.peak)[w.renewed, dim] - w.expected(w.now)[w.renewed, dim] == -delta * mult
    assert {g["status"] for g in groups} == {"REPORTED"}
    assert pipeline.query("SELECT status, count(*) FROM report_ledger GROUP BY 1") == [("accepted", len(groups))]

    # -- the renewal, the price change and the cancellation -------------------------------------------------------
    first_aws = {g["metaInfo"]["timestamp"] for g in groups if g["entitlementID"] == w.ents[ANN]}
    assert max(first_aws) == ts(RENEWAL - HOUR) and min(
        g["metaInfo"]["timestamp"] for g in groups if g["entitlementID"] == w.renewed) == ts(RENEWAL)
    cy = [g["metaInfo"]["timestamp"] for g in groups if g["entitlementID"] == w.ents[CY]]
    assert max(cy) == ts(CANCELLED_AT.replace(minute=0))  # its usage before 10:20, then nothing
    old = {str(d["key"]): Decimal(str(d["rate"])) for d in GCP_DIMS}
    bo = pipeline.query("SELECT window_start, dollars FROM report_ledger WHERE entitlement_id = ? ORDER BY 1",
                        [w.ents[BO]])
    assert len(bo) == WINDOWS
    for start, dollars in bo:  # each group priced at the entitlement's rates when its window ran
        rates = NEW_GCP_RATES if start >= PRICE_CHANGE.replace(minute=0) else old
        records = {TARGETS["GCP"][m][0]: w.now[BO, m, start] * TARGETS["GCP"][m][1] for m in (CPU, API)}
        assert dollars == sum((q * rates[k] for k, q in records.items()), Decimal(0)), start

    # -- linear growth -------------------------------------------------------------------------------------------
    # Rows: every day adds the same 24 windows with their snapshots, lines and statuses (a few reruns more, Cy's
    # rows fewer after the cancellation), so day 7 may add at most twice the median day; a table growing with
    # its own size per run (history copied per run) makes day 7 several times the median. Bytes move in units
    # and at their own times (DuckDB blocks of 256 KiB reused after checkpoints; PostgreSQL pages, relations
    # truncated by autovacuum: the size fell by ~0.6 MB on some days), so a single day's increment is noise:
    # the last three days may add at most twice what the three before them added, or 1 MiB (4 DuckDB blocks)
    # when that is less. Unreclaimed bloat or a table rewritten whole per run grows faster and fails this.
    rows_added = growth(days, "rows")
    assert min(rows_added) > 0 and rows_added[-1] <= 2 * statistics.median(rows_added), table
    for field in ("size", "live"):
        values = [getattr(d, field) for d in days]  # after days 1..7
        assert values[6] - values[3] <= 2 * max(values[3] - values[0], BYTES_FLOOR), (field, table)
