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
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from metronome_suger.sandbox.clock import SandboxClock
from metronome_suger.sandbox.metronome_invoice_state import InvoicesMixin
from metronome_suger.sandbox.metronome_invoices import InvoiceRecord, PricedMetric
from metronome_suger.sandbox.metronome_usage import AGGREGATION_TYPES
from metronome_suger.sandbox.metronome_usage_state import HourKey, UsageGenerator, UsageMixin
from metronome_suger.sandbox.wire import fmt, require_utc, to_decimal

__all__ = ["MetronomeState", "UsageGenerator"]


def _json_copy(value: Any) -> Any:
    """`copy.deepcopy` of JSON-like data (dicts and lists of immutable leaves), several times
    faster: metrics are copied on every listing."""
    if type(value) is dict:
        return {k: _json_copy(v) for k, v in value.items()}
    if type(value) is list:
        return [_json_copy(v) for v in value]
    if isinstance(value, (str, int, float, Decimal, datetime)) or value is None:
        return value
    return copy.deepcopy(value)


def _copy_customer(record: dict[str, Any]) -> dict[str, Any]:
    """A private copy of a stored customer (its nested values are one level deep): as
    `copy.deepcopy`, ~20x faster, which matters on every listed page."""
    return {
        **record,
        "ingest_aliases": list(record["ingest_aliases"]),
        "customer_config": dict(record["customer_config"]),
        "custom_fields": dict(record["custom_fields"]),
    }


class MetronomeState(UsageMixin, InvoicesMixin):
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
        # Generated values by (customer, metric), then UTC day, in 24 hourly slots (a day of
        # 10,000 customers × 20 metrics is 4.8M values: a dict entry each cost ~1 GB); instants
        # that are not whole hours by (customer, metric), then instant. A generator change drops
        # its pair.
        self._generated: dict[tuple[str, str], dict[int, list[Any]]] = {}
        self._generated_odd: dict[tuple[str, str], dict[datetime, Decimal | None]] = {}
        self._aliases: dict[str, str] = {}  # ingest alias -> customer id (aliases are unique)
        self._archived: set[str] = set()  # archived customers (none is ever un-archived)
        self._id_tuple: tuple[str, ...] = ()  # customer ids, rebuilt when one is added
        self._ingested: dict[HourKey, Decimal] = {}
        self._unique: dict[HourKey, set[str]] = {}
        self._latest_at: dict[HourKey, datetime] = {}
        self._events: dict[str, dict[str, Any]] = {}
        self._invoices: dict[str, InvoiceRecord] = {}
        self._by_customer: dict[str, list[str]] = {}
        self._monthly: list[tuple[str, dict[str, str], timedelta, datetime]] = []
        self._materialized: tuple[int, datetime] | None = None

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
            if any(alias in self._aliases for alias in aliases):
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
            if archived:
                self._archived.add(customer_id)
            for alias in aliases:
                self._aliases[alias] = customer_id
            return _copy_customer(record)

    def archive_customer(self, customer_id: str) -> None:
        with self._lock:
            record = self._customers[customer_id]
            record["archived_at"] = record["updated_at"] = fmt(self.clock.now())
            self._archived.add(customer_id)

    def customers(self) -> list[dict[str, Any]]:
        """All customers (active and archived), in creation order."""
        with self._lock:
            return [_copy_customer(record) for record in self._customers.values()]

    def customer_ids(self) -> list[str]:
        """Ids of all customers, in creation order (no copies: cheap on every page)."""
        with self._lock:
            return list(self._customers)

    def customer_ids_view(self, *, archived: bool | None = None) -> Sequence[str]:
        """Customer ids in creation order (None: all; else only archived / only active) as an
        immutable sequence that is shared, not copied, while no customer is added or archived:
        what a usage page or a customer page without other filters needs, for ~nothing."""
        with self._lock:
            if len(self._id_tuple) != len(self._customers):
                self._id_tuple = tuple(self._customers)
            if archived is None or not self._archived:
                return () if archived else self._id_tuple
            return tuple(cid for cid in self._id_tuple if (cid in self._archived) == archived)

    def customer_ids_where(self, keep: Callable[[dict[str, Any]], bool]) -> list[str]:
        """Ids of the customers `keep` accepts, in creation order. `keep` sees the stored record
        and must not change it; nothing is copied, so a listing pays only for the page it serves."""
        with self._lock:
            return [cid for cid, record in self._customers.items() if keep(record)]

    def get_customer(self, customer_id: str) -> dict[str, Any] | None:
        with self._lock:
            record = self._customers.get(customer_id)
            return _copy_customer(record) if record else None

    def get_customers(self, customer_ids: Iterable[str]) -> list[dict[str, Any]]:
        """Copies of these (known) customers, in the order given."""
        with self._lock:
            return [_copy_customer(self._customers[cid]) for cid in customer_ids]

    def unknown_customer(self, customer_ids: Iterable[str]) -> str | None:
        """The first id that names no customer, or None (a set lookup each: no copies)."""
        with self._lock:
            return next((cid for cid in customer_ids if cid not in self._customers), None)

    def resolve_customer(self, id_or_alias: str) -> str | None:
        """Metronome id for an id or ingest alias, as ingest matches events."""
        with self._lock:
            if id_or_alias in self._customers:
                return id_or_alias
            return self._aliases.get(id_or_alias)

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
            return [
                _json_copy(m)
                for m in self._metrics.values()
                if include_archived or m["archived_at"] is None
            ]

    def metric_names(self, *, include_archived: bool = True) -> list[tuple[str, str]]:
        """(id, name) of the metrics, in creation order: what a usage row names, without copies."""
        with self._lock:
            return [
                (m["id"], m["name"])
                for m in self._metrics.values()
                if include_archived or m["archived_at"] is None
            ]

    def get_metric(self, metric_id: str) -> dict[str, Any] | None:
        with self._lock:
            record = self._metrics.get(metric_id)
            return _json_copy(record) if record else None

    def unit_price_cents(self, metric_id: str) -> Decimal:
        with self._lock:
            return self._prices[metric_id]

    def _check_pair(self, customer_id: str, metric_id: str) -> None:
        if customer_id not in self._customers:
            raise KeyError(f"unknown customer {customer_id}")
        if metric_id not in self._metrics:
            raise KeyError(f"unknown billable metric {metric_id}")

    def _priced_metrics(self) -> list[PricedMetric]:
        return [
            PricedMetric(m["id"], m["name"], self._prices[m["id"]]) for m in self._metrics.values()
        ]
