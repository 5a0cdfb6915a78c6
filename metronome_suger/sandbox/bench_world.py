"""The benchmark's world (issue 12): N customers × M SUM metrics, built into the emulators' states.

It lives in the sandbox so the emulator processes (`sandbox/process.py`) and the benchmark build the
same deterministic world: each customer is linked to one Suger entitlement (AWS / AZURE / GCP round
robin) and has either a deterministic hourly usage generator per metric (``quantity``) or one USD
invoice whose total rises in the middle of the benchmarked window (``amount_hourly``,
``amount_daily``). Ids are uuid5 / positional, so two processes building it agree on every id.
Building is linear: 10,000 × 20 takes a few seconds.
"""

from __future__ import annotations

import gc
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from metronome_suger.sandbox.metronome_state import MetronomeState, UsageGenerator
from metronome_suger.sandbox.suger_state import SugerState
from metronome_suger.sandbox.wire import mix64

SANDBOX_YAML = Path(__file__).resolve().parent / "sandbox.yaml"
MODES = ("quantity", "amount_hourly", "amount_daily")

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
BASE_DIMENSIONS: tuple[dict[str, Any], ...] = (
    {"key": "cpu_hour", "name": "CPU hours", "rate": Decimal("0.12")},
    {"key": "api_request", "name": "API requests", "rate": Decimal("0.0005")},
    {"key": "storage_gb", "name": "Storage GB-hours", "rate": Decimal("0.005")},
    {"key": "usage_fee", "name": "Usage fee", "rate": Decimal("0.01")},
)
NS = uuid.UUID("0b5e6c1e-8d3a-4f3e-9a51-6d1f2c0b7a11")


@lru_cache(maxsize=1)
def _hundredths() -> tuple[Decimal, ...]:
    """Decimal(i).scaleb(-2) for every 0 <= i < 100,000, shared: the emulator keeps millions of
    generated values, and one object per value was ~100 bytes each."""
    return tuple(Decimal(i).scaleb(-2) for i in range(100_000))


def usage_generator(position: int, metric_index: int) -> UsageGenerator:
    """Hourly value in hundredths, 0.00..999.99; about one hour in eleven is exactly zero."""
    values = _hundredths()
    zero = Decimal(0)

    def generate(hour: datetime) -> Decimal:
        h = mix64(position, metric_index, int(hour.timestamp()) // 3600)
        return zero if h % 11 == 0 else values[(h >> 8) % 100_000]

    return generate


def metric_names(count: int) -> list[str]:
    """The first three are the sandbox configuration's metrics; the rest ``extra_metric_<i>``."""
    return [BASE_METRICS[i] if i < len(BASE_METRICS) else f"extra_metric_{i}" for i in range(count)]


def extra_dimension(name: str) -> dict[str, Any]:
    """The Suger dimension an extra metric converts to (QUANTITY, multiplier 1)."""
    return {"key": f"{name}_unit", "name": f"{name} units", "rate": Decimal("0.001")}


def customer_id(position: int) -> str:
    return str(uuid.uuid5(NS, f"customer:{position}"))


def metric_id(name: str) -> str:
    return str(uuid.uuid5(NS, f"metric:{name}"))


def invoice_totals(position: int) -> list[tuple[datetime, int]]:
    """A running total (cents) that grew until mid-window: the first run reports it all."""
    base = 10_000 + mix64(position, 99) % 90_000
    return [
        (MONTH_START, base),
        (WINDOW_START + timedelta(minutes=30), base + 100 + mix64(position, 98) % 5_000),
    ]


def populate_bench(
    metronome: MetronomeState, suger: SugerState, *, customers: int, metrics: int, mode: str
) -> None:
    """N customers × 1 entitlement each, M metrics; usage generators or one invoice per customer."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if customers < 0 or metrics < 1:
        raise ValueError("customers must be >= 0 and metrics >= 1")
    # The world is hundreds of thousands of long-lived objects: without the cyclic collector's
    # repeated full scans while they are created, building it is ~1.5x faster.
    paused = gc.isenabled()
    gc.disable()
    try:
        _populate(metronome, suger, customers=customers, metrics=metrics, mode=mode)
    finally:
        if paused:
            gc.enable()


def _populate(
    metronome: MetronomeState, suger: SugerState, *, customers: int, metrics: int, mode: str
) -> None:
    names = metric_names(metrics)
    dimensions = [dict(d) for d in BASE_DIMENSIONS] + [extra_dimension(n) for n in names[3:]]
    metric_ids = [
        metronome.add_billable_metric(
            name, aggregation_type="SUM", aggregation_key=name, id=metric_id(name),
            unit_price_cents=Decimal(1),
        )["id"]
        for name in names
    ]
    created = MONTH_START - timedelta(days=30)
    started = MONTH_START - timedelta(days=60)
    for position in range(customers):
        cid = customer_id(position)
        partner = PARTNERS[position % len(PARTNERS)]
        metronome.add_customer(f"Bench customer {position}", id=cid, created_at=created)
        buyer = suger.add_buyer(
            f"Bench customer {position} ({partner})", partner=partner,
            metronome_customer_id=cid, id=f"buyer-{position}",
        )
        suger.add_entitlement(
            buyer["id"], partner=partner, dimensions=dimensions, id=f"ent-{position}",
            start_time=started,
        )
        if mode == "quantity":
            for index, mid in enumerate(metric_ids):
                metronome.set_usage_generator(cid, mid, usage_generator(position, index))
        else:
            metronome.add_invoice(
                cid, period_start=MONTH_START, period_end=MONTH_END,
                id=str(uuid.uuid5(NS, f"invoice:{position}")), totals=invoice_totals(position),
            )


def bench_config_data(
    metronome_url: str, suger_url: str, org_id: str, db_path: str | Path, metrics: int, mode: str
) -> dict[str, Any]:
    """The bundled sandbox configuration (as a dict, before parsing), pointed at these emulators and
    a DuckDB file, with the extra metrics' dimension rules added."""
    data: dict[str, Any] = yaml.safe_load(SANDBOX_YAML.read_text(encoding="utf-8"))
    data["metronome"]["base_url"] = metronome_url
    data["suger"]["base_url"] = suger_url
    data["suger"]["org_id"] = org_id
    data["billing_mode"] = mode
    data["storage"] = {"duckdb_path": str(db_path)}
    for name in metric_names(metrics)[3:]:
        key = extra_dimension(name)["key"]
        rule = [{"dimension_key": key, "mapping_mode": "QUANTITY", "multiplier": 1}]
        for partner in PARTNERS:
            data["dimension_conversion"][partner][name] = rule
    return data
