"""The Suger emulator's ingest: a CreateUsageRecordGroupParams / NewUsageRecordGroup body checked and
turned into the group to store, as Suger validates on submission (400 with its message otherwise)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from typing import Any

from metronome_suger.sandbox.suger_json import JsonDict, SugerError, rfc3339, utc
from metronome_suger.sandbox.suger_state import ALL_ZERO_MESSAGE, REPORTABLE_STATUSES, SugerState


def parse_time(value: Any, field: str) -> datetime:
    """RFC 3339 with an offset, as Go's time.Time decoding demands; anything else is 400."""
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None or value[10:11] not in ("T", "t"):
        raise SugerError(400, f"{field} is not an RFC 3339 timestamp with offset: {value!r}")
    return utc(parsed)


def _origin_records(records: Any) -> dict[str, Decimal]:
    if not isinstance(records, dict):
        raise SugerError(400, "records is required and must be an object of numbers")
    origin: dict[str, Decimal] = {}
    for key, qty in records.items():
        if isinstance(qty, bool) or not isinstance(qty, (int, float, Decimal)):
            raise SugerError(400, f"quantity of record {key} must be a number")
        if qty < 0:
            raise SugerError(400, f"quantity of record {key} must not be negative: {qty}")
        origin[key] = qty if type(qty) is Decimal else Decimal(str(qty))
    if not any(origin.values()):
        raise SugerError(400, ALL_ZERO_MESSAGE)
    return origin


def _convert(records: dict[str, Decimal], ent: JsonDict, config: JsonDict) -> dict[str, Decimal]:
    """Suger's own dimension mapping, applied on ingest when enabled for the partner."""
    cfg = next((c for c in config["partnerUsageMeteringConfigs"]
                if c.get("partner") == ent["partner"] and c.get("enableDimensionMapping")), None)
    if cfg is None:
        return dict(records)
    mapping = cfg.get("dimensionMappingV2") or {}
    rates = {d["key"]: d["rate"] for d in ent["info"]["dimensions"]}
    out: dict[str, Decimal] = defaultdict(Decimal)
    for key, qty in records.items():
        for value in mapping.get(key) or [{"dimensionKey": key}]:
            dest = value["dimensionKey"]
            if value.get("mappingMode") == "AMOUNT":
                if not rates.get(dest):
                    raise SugerError(400, f"dimension {dest} has no rate for AMOUNT mapping")
                out[dest] += qty / rates[dest]
            else:  # Go zero value: a missing or 0 multiplier means 1
                out[dest] += qty * Decimal(str(value.get("convertionMultiplier") or 1))
    return dict(out)


def _check_reportable(ent: JsonDict, timestamp: datetime) -> None:
    """ACTIVE and PENDING_CANCEL take usage; a CANCELLED entitlement only usage generated before its
    ``endTime`` (``suger_sdk_python/models/workload_entitlement.py``), as the marketplaces take it
    (AWS within 1 h of deprovisioning, Azure for hours before the cancellation, GCP with timestamps
    before it: their metering docs); SUSPENDED, DELETED and PENDING_START take none."""
    status, end = ent["status"], ent.get("endTime")
    if status == "CANCELLED" and end is not None:
        if timestamp < end:
            return
        raise SugerError(400, f"entitlement {ent['id']} is CANCELLED, its end time is "
                              f"{rfc3339(end)}: usage at {rfc3339(timestamp)} is not before it")
    if status not in REPORTABLE_STATUSES:
        allowed = " or ".join(REPORTABLE_STATUSES)
        raise SugerError(400, f"entitlement {ent['id']} is {status}: usage can only be "
                              f"reported for {allowed} entitlements, or for a CANCELLED one "
                              f"before its end time")


def prepare_group(state: SugerState, item: Any, *, path_entitlement: str | None = None) -> JsonDict:
    """Validate one CreateUsageRecordGroupParams / NewUsageRecordGroup into the group to store.

    ``path_entitlement`` is the single-report route's entitlement (the body must agree); batch items
    name theirs in the body only, so an unknown one there is 400 rather than 404.
    """
    if not isinstance(item, dict):
        raise SugerError(400, "usage record group must be a JSON object")
    ent_id = item.get("entitlementID")
    if not isinstance(ent_id, str) or not ent_id:
        raise SugerError(400, "entitlementID is required")
    if path_entitlement is not None and ent_id != path_entitlement:
        raise SugerError(400, f"entitlementID {ent_id} does not match the path {path_entitlement}")
    try:
        ent = state.entitlement_snapshot(ent_id)
    except SugerError as exc:
        raise exc if path_entitlement else SugerError(400, exc.message) from None
    if item.get("billableRecords"):
        raise SugerError(400, "billableRecords (metering API v2) is not supported by the emulator")
    origin = _origin_records(item.get("records"))
    raw_ts = item.get("timestamp")
    timestamp = state.now() if raw_ts in (None, "") else parse_time(raw_ts, "timestamp")
    _check_reportable(ent, timestamp)
    converted = _convert(origin, ent, state.metering_config())
    dims = ent["info"]["dimensions"]
    known = {d["key"] for d in dims} | {d["name"] for d in dims}
    for key in converted:
        if key not in known:
            raise SugerError(400, f"record key {key!r} is not a metering dimension key or name "
                                  f"of entitlement {ent_id}")
    return {"entitlementID": ent_id, "buyerID": ent["buyerID"], "partner": ent["partner"],
            "records": converted,
            "metaInfo": {"originRecords": origin, "timestamp": timestamp, "source": "API"}}
