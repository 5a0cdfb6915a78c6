"""Pure usage arithmetic of the Metronome emulator: window aggregation and event matching.

Kept apart from the state so the rules (null handling, MAX/LATEST, filters) read in one place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

AGGREGATION_TYPES: tuple[str, ...] = ("COUNT", "LATEST", "MAX", "SUM", "UNIQUE")


def aggregate(aggregation_type: str, values: Iterable[Decimal | None]) -> Decimal | None:
    """Aggregate hourly values into one window value.

    SUM and COUNT add; MAX takes the max; LATEST the last non-null hour. UNIQUE adds the hourly
    distinct counts: an over-approximation of the true distinct count across hours (the emulator
    does not keep per-value history across hours), documented and good enough for clients.
    Null + null = null, null + x = x; a window without any hour is 0.
    """
    seen = False
    result: Decimal | None = None
    for value in values:
        seen = True
        if value is None:
            continue
        if result is None or aggregation_type == "LATEST":
            result = value
        elif aggregation_type == "MAX":
            result = max(result, value)
        else:
            result += value
    return result if seen else Decimal(0)


def combine_hour(
    aggregation_type: str, base: Decimal | None, ingested: Decimal | None
) -> Decimal | None:
    """One hour's value from its base (explicit or generated) and what was ingested."""
    if ingested is None:
        return base
    if base is None:
        return ingested
    if aggregation_type == "MAX":
        return max(base, ingested)
    if aggregation_type == "LATEST":
        return ingested
    return base + ingested


def event_matches(metric: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """Does an ingested event count towards this billable metric (event type + property filters)?"""
    type_filter = metric.get("event_type_filter") or {}
    event_type = event.get("event_type")
    in_values = type_filter.get("in_values")
    if in_values is not None and event_type not in in_values:
        return False
    if event_type in (type_filter.get("not_in_values") or []):
        return False
    properties = event.get("properties") or {}
    for prop_filter in metric.get("property_filters") or []:
        name = prop_filter.get("name")
        present = name in properties
        exists = prop_filter.get("exists")
        if exists is not None and exists != present:
            return False
        value = str(properties.get(name)) if present else None
        if prop_filter.get("in_values") is not None and value not in prop_filter["in_values"]:
            return False
        if value is not None and value in (prop_filter.get("not_in_values") or []):
            return False
    return True


def event_amount(metric: Mapping[str, Any], event: Mapping[str, Any]) -> Decimal | str | None:
    """The event's contribution: 1 for COUNT, the property as Decimal for SUM/MAX/LATEST,
    the raw property text for UNIQUE; None when the property is missing or not numeric."""
    aggregation_type = metric["aggregation_type"]
    if aggregation_type == "COUNT":
        return Decimal(1)
    key = metric.get("aggregation_key")
    properties = event.get("properties") or {}
    if key is None or key not in properties or properties[key] is None:
        return None
    raw = properties[key]
    if aggregation_type == "UNIQUE":
        return str(raw)
    if isinstance(raw, bool):
        return None
    try:
        return Decimal(str(raw))
    except (InvalidOperation, ValueError):
        return None
