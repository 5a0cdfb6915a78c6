"""In-memory Metronome data behind the emulator, mutable from tests.

Everything is stored timeless and rendered "as of" `clock.now()`: usage hours become visible
once closed, invoices appear when created, grow while DRAFT, freeze when FINALIZED or VOID. One
lock guards all of it, so tests may mutate while the server thread reads. Usage edits are not
versioned: a late `set_usage` changes every view that includes that hour.
"""

from __future__ import annotations

import copy
import random
import threading
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from metronome_suger.sandbox.clock import SandboxClock
from metronome_suger.sandbox.metronome_invoice_state import InvoicesMixin
from metronome_suger.sandbox.metronome_invoices import InvoiceRecord, PricedMetric
from metronome_suger.sandbox.metronome_usage import (
    AGGREGATION_TYPES,
    aggregate,
    combine_hour,
    event_amount,
    event_matches,
)
from metronome_suger.sandbox.wire import (
    HOUR,
    floor_hour,
    fmt,
    parse_rfc3339,
    require_utc,
    to_decimal,
)

UsageGenerator = Callable[[datetime], "Decimal | int | None"]
HourKey = tuple[str, str, datetime]
_MISSING = object()


def _hour(dt: datetime, what: str) -> datetime:
    dt = require_utc(dt, what)
    if dt != floor_hour(dt):
        raise ValueError(f"{what} must be aligned to a UTC hour, got {dt.isoformat()}")
    return dt


class MetronomeState(InvoicesMixin):
    """Customers, billable metrics, hourly usage, ingested events and invoices."""

    def __init__(self, clock: SandboxClock, *, seed: int = 0) -> None:
        self.clock = clock
        self._lock = threading.RLock()
        self._rng = random.Random(f"metronome-state:{seed}")
        self._id_ns = uuid.uuid5(uuid.NAMESPACE_URL, f"metronome-suger-sandbox:{seed}")
        self._customers: dict[str, dict[str, Any]] = {}
        self._metrics: dict[str, dict[str, Any]] = {}
        self._prices: dict[str, Decimal] = {}
        self._usage: dict[HourKey, Decimal | None] = {}
        self._generators: dict[tuple[str, str], UsageGenerator] = {}
        self._generated: dict[HourKey, Decimal | None] = {}
        self._ingested: dict[HourKey, Decimal] = {}
        self._unique: dict[HourKey, set[str]] = {}
        self._latest_at: dict[HourKey, datetime] = {}
        self._events: dict[str, dict[str, Any]] = {}
        self._invoices: dict[str, InvoiceRecord] = {}
        self._monthly: list[tuple[str, dict[str, str], timedelta, datetime]] = []

    # ----------------------------------------------------------------- ids
    def new_id(self) -> str:
        """A UUID4 string drawn from the seeded generator (deterministic for a seed)."""
        with self._lock:
            return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    # ----------------------------------------------------------- customers
    def add_customer(
        self,
        name: str,
        *,
        id: str | None = None,
        external_id: str | None = None,
        ingest_aliases: list[str] | None = None,
        archived: bool = False,
        custom_fields: dict[str, str] | None = None,
        created_at: datetime | None = None,
        salesforce_account_id: str | None = None,
    ) -> dict[str, Any]:
        with self._lock:
            customer_id = id or self.new_id()
            if customer_id in self._customers:
                raise ValueError(f"customer {customer_id} already exists")
            aliases = list(ingest_aliases or [])
            for other in self._customers.values():
                if set(other["ingest_aliases"]) & set(aliases):
                    raise ValueError("ingest aliases must be unique across customers")
            created = fmt(require_utc(created_at, "created_at") if created_at else self.clock.now())
            record = {
                "id": customer_id,
                "external_id": external_id or (aliases[0] if aliases else customer_id),
                "ingest_aliases": aliases,
                "name": name[:160],
                "customer_config": {"salesforce_account_id": salesforce_account_id},
                "custom_fields": dict(custom_fields or {}),
                "created_at": created,
                "updated_at": created,
                "archived_at": created if archived else None,
            }
            self._customers[customer_id] = record
            return copy.deepcopy(record)

    def archive_customer(self, customer_id: str) -> None:
        with self._lock:
            record = self._customers[customer_id]
            record["archived_at"] = record["updated_at"] = fmt(self.clock.now())

    def customers(self) -> list[dict[str, Any]]:
        """All customers (active and archived), in creation order."""
        with self._lock:
            return copy.deepcopy(list(self._customers.values()))

    def customer_ids(self) -> list[str]:
        """Ids of all customers, in creation order (no copies: cheap on every page)."""
        with self._lock:
            return list(self._customers)

    def get_customer(self, customer_id: str) -> dict[str, Any] | None:
        with self._lock:
            record = self._customers.get(customer_id)
            return copy.deepcopy(record) if record else None

    def resolve_customer(self, id_or_alias: str) -> str | None:
        """Metronome id for an id or ingest alias, as ingest matches events."""
        with self._lock:
            if id_or_alias in self._customers:
                return id_or_alias
            for record in self._customers.values():
                if id_or_alias in record["ingest_aliases"]:
                    return str(record["id"])
            return None

    # ------------------------------------------------------------- metrics
    def add_billable_metric(
        self,
        name: str,
        *,
        aggregation_type: str = "SUM",
        aggregation_key: str | None = None,
        id: str | None = None,
        archived: bool = False,
        unit_price_cents: Decimal | int = 0,
        event_type: str | None = None,
        group_keys: list[list[str]] | None = None,
    ) -> dict[str, Any]:
        """Add a metric; `unit_price_cents` only prices invoices and is never served."""
        agg = aggregation_type.upper()
        if agg not in AGGREGATION_TYPES:
            raise ValueError(f"aggregation_type must be one of {AGGREGATION_TYPES}")
        with self._lock:
            metric_id = id or self.new_id()
            if metric_id in self._metrics:
                raise ValueError(f"billable metric {metric_id} already exists")
            key = None if agg == "COUNT" else aggregation_key
            record = {
                "id": metric_id,
                "name": name,
                "aggregation_type": agg,
                "aggregation_key": key,
                "event_type_filter": {"in_values": [event_type or name]},
                "property_filters": [{"name": key, "exists": True}] if key else [],
                "group_keys": [list(g) for g in group_keys or []],
                "custom_fields": {},
                "archived_at": fmt(self.clock.now()) if archived else None,
            }
            self._metrics[metric_id] = record
            self._prices[metric_id] = to_decimal(unit_price_cents)
            return copy.deepcopy(record)

    def archive_metric(self, metric_id: str) -> None:
        with self._lock:
            self._metrics[metric_id]["archived_at"] = fmt(self.clock.now())

    def metrics(self, *, include_archived: bool = True) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(
                [m for m in self._metrics.values() if include_archived or m["archived_at"] is None]
            )

    def get_metric(self, metric_id: str) -> dict[str, Any] | None:
        with self._lock:
            record = self._metrics.get(metric_id)
            return copy.deepcopy(record) if record else None

    def unit_price_cents(self, metric_id: str) -> Decimal:
        with self._lock:
            return self._prices[metric_id]

    # --------------------------------------------------------------- usage
    def set_usage(
        self,
        customer_id: str,
        metric_id: str,
        hour_start: datetime,
        value: Decimal | int | float | None,
    ) -> None:
        """Set one UTC hour's value (None = null); overrides the generator and earlier calls."""
        hour = _hour(hour_start, "hour_start")
        with self._lock:
            self._check_pair(customer_id, metric_id)
            self._usage[(customer_id, metric_id, hour)] = (
                None if value is None else to_decimal(value)
            )

    def set_usage_generator(
        self, customer_id: str, metric_id: str, generator: UsageGenerator
    ) -> None:
        """Deterministic value for hours without an explicit `set_usage` (None = null hour)."""
        with self._lock:
            self._check_pair(customer_id, metric_id)
            self._generators[(customer_id, metric_id)] = generator
            for key in [k for k in self._generated if k[:2] == (customer_id, metric_id)]:
                del self._generated[key]

    def usage_value(self, customer_id: str, metric_id: str, hour_start: datetime) -> Decimal | None:
        """The hour's value regardless of visibility: explicit, else generated, else 0; plus
        what was ingested."""
        hour = _hour(hour_start, "hour_start")
        with self._lock:
            return self._hour_value(customer_id, metric_id, hour)

    def window_value(
        self, customer_id: str, metric_id: str, start: datetime, end: datetime
    ) -> Decimal | None:
        """Aggregate of the hours in [start, end) that have closed by `clock.now()`."""
        now = self.clock.now()
        with self._lock:
            agg = self._metrics[metric_id]["aggregation_type"]
            hours: list[datetime] = []
            hour = floor_hour(start)
            while hour < end and hour + HOUR <= now:
                hours.append(hour)
                hour += HOUR
            return aggregate(agg, (self._hour_value(customer_id, metric_id, h) for h in hours))

    def _check_pair(self, customer_id: str, metric_id: str) -> None:
        if customer_id not in self._customers:
            raise KeyError(f"unknown customer {customer_id}")
        if metric_id not in self._metrics:
            raise KeyError(f"unknown billable metric {metric_id}")

    def _hour_value(self, customer_id: str, metric_id: str, hour: datetime) -> Decimal | None:
        key = (customer_id, metric_id, hour)
        base = self._usage.get(key, _MISSING)
        if base is _MISSING:
            base = self._generated.get(key, _MISSING)
            if base is _MISSING:
                generator = self._generators.get((customer_id, metric_id))
                raw = generator(hour) if generator else 0
                base = None if raw is None else to_decimal(raw)
                if generator:
                    self._generated[key] = base
        agg = self._metrics[metric_id]["aggregation_type"]
        assert base is None or isinstance(base, Decimal)
        return combine_hour(agg, base, self._ingested.get(key))

    # -------------------------------------------------------------- ingest
    def ingest(self, events: Iterable[dict[str, Any]]) -> int:
        """Store validated events (dedup on transaction_id) and add them to matching metrics.

        Returns how many were new. Events for unknown customers are stored but count nowhere."""
        added = 0
        with self._lock:
            for event in events:
                if event["transaction_id"] in self._events:
                    continue
                self._events[event["transaction_id"]] = copy.deepcopy(event)
                added += 1
                customer_id = self.resolve_customer(event["customer_id"])
                if customer_id is None:
                    continue
                timestamp = parse_rfc3339(event["timestamp"])
                for metric in self._metrics.values():
                    if event_matches(metric, event):
                        self._apply(customer_id, metric, floor_hour(timestamp), timestamp, event)
        return added

    def _apply(
        self,
        customer_id: str,
        metric: dict[str, Any],
        hour: datetime,
        at: datetime,
        event: dict[str, Any],
    ) -> None:
        amount = event_amount(metric, event)
        if amount is None:
            return
        key = (customer_id, str(metric["id"]), hour)
        agg = metric["aggregation_type"]
        if agg == "UNIQUE":
            self._unique.setdefault(key, set()).add(str(amount))
            self._ingested[key] = Decimal(len(self._unique[key]))
            return
        assert isinstance(amount, Decimal)
        current = self._ingested.get(key)
        if agg == "MAX":
            self._ingested[key] = amount if current is None else max(current, amount)
        elif agg == "LATEST":
            if key not in self._latest_at or at >= self._latest_at[key]:
                self._latest_at[key] = at
                self._ingested[key] = amount
        else:
            self._ingested[key] = (current or Decimal(0)) + amount

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(list(self._events.values()))

    def _priced_metrics(self) -> list[PricedMetric]:
        return [
            PricedMetric(m["id"], m["name"], self._prices[m["id"]]) for m in self._metrics.values()
        ]
