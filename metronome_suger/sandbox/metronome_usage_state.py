"""Hourly usage of `MetronomeState` (a mixin, to keep each module small): explicit values,
deterministic generators (their values cached per day), ingested events, window aggregates.

Relies on the host class for the lock, the clock, customers and metrics.
"""

from __future__ import annotations

import copy
import threading
from abc import abstractmethod
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from decimal import Decimal
from functools import lru_cache
from typing import Any

from metronome_suger.sandbox.clock import SandboxClock
from metronome_suger.sandbox.metronome_usage import (
    aggregate,
    combine_hour,
    event_amount,
    event_matches,
)
from metronome_suger.sandbox.wire import (
    HOUR,
    floor_hour,
    parse_rfc3339,
    require_utc,
    to_decimal,
)

UsageGenerator = Callable[[datetime], "Decimal | int | None"]
HourKey = tuple[str, str, datetime]
_MISSING = object()


@lru_cache(maxsize=65_536)  # the same few window starts, on every usage row
def _day_slot(hour: datetime) -> tuple[int, int] | None:
    """(UTC day number, hour of day) of a whole UTC hour; None for any other instant."""
    seconds = hour.timestamp()
    if seconds % 3600:
        return None
    return divmod(int(seconds) // 3600, 24)


def _hour(dt: datetime, what: str) -> datetime:
    dt = require_utc(dt, what)
    if dt != floor_hour(dt):
        raise ValueError(f"{what} must be aligned to a UTC hour, got {dt.isoformat()}")
    return dt


class UsageMixin:
    """Usage: explicit hours, generators, ingest, and what a usage window aggregates to."""

    clock: SandboxClock
    _lock: threading.RLock
    _metrics: dict[str, dict[str, Any]]
    _usage: dict[HourKey, Decimal | None]
    _generators: dict[tuple[str, str], UsageGenerator]
    _generated: dict[tuple[str, str], dict[int, list[Any]]]
    _generated_odd: dict[tuple[str, str], dict[datetime, Decimal | None]]
    _ingested: dict[HourKey, Decimal]
    _unique: dict[HourKey, set[str]]
    _latest_at: dict[HourKey, datetime]
    _events: dict[str, dict[str, Any]]

    @abstractmethod
    def _check_pair(self, customer_id: str, metric_id: str) -> None: ...

    @abstractmethod
    def resolve_customer(self, id_or_alias: str) -> str | None: ...

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
            self._generated.pop((customer_id, metric_id), None)
            self._generated_odd.pop((customer_id, metric_id), None)

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
            return self._aggregate(customer_id, metric_id, start, end, now)

    def _aggregate(
        self, customer_id: str, metric_id: str, start: datetime, end: datetime, now: datetime
    ) -> Decimal | None:
        """The aggregate of the closed hours in [start, end); the caller holds the lock."""
        agg = self._metrics[metric_id]["aggregation_type"]
        hours: list[datetime] = []
        hour = floor_hour(start)
        while hour < end and hour + HOUR <= now:
            hours.append(hour)
            hour += HOUR
        return aggregate(agg, (self._hour_value(customer_id, metric_id, h) for h in hours))

    def window_values(
        self, keys: Iterable[tuple[str, str, datetime, datetime]]
    ) -> list[Decimal | None]:
        """`window_value` of each (customer, metric, start, end), under one lock and one clock
        read: a usage page costs one call, and an hour-long window one hourly value."""
        now = self.clock.now()
        out: list[Decimal | None] = []
        with self._lock:
            for customer_id, metric_id, start, end in keys:
                if (
                    start.tzinfo is timezone.utc
                    and end - start == HOUR
                    and start.minute == start.second == start.microsecond == 0
                ):
                    # aggregate() of one hour is that hour's value; of no closed hour, 0.
                    closed = end <= now
                    out.append(self._hour_value(customer_id, metric_id, start) if closed
                               else Decimal(0))
                    continue
                out.append(self._aggregate(customer_id, metric_id, start, end, now))
        return out

    def _hour_value(self, customer_id: str, metric_id: str, hour: datetime) -> Decimal | None:
        # Hot (every usage row): the usually empty explicit and ingested maps cost nothing.
        base: Any = (
            self._usage.get((customer_id, metric_id, hour), _MISSING) if self._usage else _MISSING
        )
        if base is _MISSING:
            pair = (customer_id, metric_id)
            slot = _day_slot(hour)
            if slot is None:
                odd = self._generated_odd.get(pair)
                base = _MISSING if odd is None else odd.get(hour, _MISSING)
            else:
                days = self._generated.get(pair)
                row = None if days is None else days.get(slot[0])
                base = _MISSING if row is None else row[slot[1]]
            if base is _MISSING:
                generator = self._generators.get(pair)
                raw = generator(hour) if generator else 0
                base = None if raw is None else to_decimal(raw)
                if generator and slot is None:
                    self._generated_odd.setdefault(pair, {})[hour] = base
                elif generator:
                    assert slot is not None
                    days = self._generated.setdefault(pair, {})
                    days.setdefault(slot[0], [_MISSING] * 24)[slot[1]] = base
        assert base is None or isinstance(base, Decimal)
        ingested = self._ingested.get((customer_id, metric_id, hour)) if self._ingested else None
        if ingested is None:
            return base  # combine_hour(agg, base, None)
        return combine_hour(self._metrics[metric_id]["aggregation_type"], base, ingested)

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

