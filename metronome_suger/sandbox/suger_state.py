"""In-memory Suger organization: buyers, entitlements, usage record groups and the hourly forwarder.

The state is what the Suger emulator (``suger_app``) serves, and what tests mutate directly to stage
scenarios (renewals, rejections, failed marketplace reports). It is thread-safe because uvicorn
serves the app from its own thread while tests poke at the state from theirs. Quantities and rates
are kept as ``Decimal``; only the JSON rendering turns them into numbers.
"""

from __future__ import annotations

import copy
import random
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

PARTNERS = ("AWS", "AZURE", "GCP")
ENTITLEMENT_STATUSES = ("ACTIVE", "CANCELLED", "DELETED", "PENDING_CANCEL", "PENDING_START",
                        "SUSPENDED")
REPORTABLE_STATUSES = ("ACTIVE", "PENDING_CANCEL")
GROUP_STATUSES = ("CREATED", "INVALID", "REPORT_PENDING", "REPORTED", "REPORT_FAILED", "DELETED")
ALL_ZERO_MESSAGE = "all the quantity of usage records are zero"
_BUYER_INFO_FIELDS = ("metronomeCustomerId", "orbCustomerId", "lagoCustomerId", "stripeCustomerId",
                      "customerId", "chargebeeCustomerID", "quickbooksCustomerId", "companyInfo",
                      "paymentConfig")
_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
JsonDict = dict[str, Any]


class SugerError(Exception):
    """A request Suger would refuse: carries the HTTP status and the message for the error body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def utc(value: datetime) -> datetime:
    """Naive datetimes are taken as UTC, as Suger documents every timestamp in UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def rfc3339(value: datetime) -> str:
    """Go-style RFC 3339 with ``Z`` (fraction only when non-zero), as Suger's backend emits it."""
    value = utc(value)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def render(value: Any) -> Any:
    """Turn internal values (Decimal, datetime) into the JSON the API returns."""
    if isinstance(value, dict):
        return {k: render(v) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v) for v in value]
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _hour_floor(value: datetime) -> datetime:
    return value.replace(minute=0, second=0, microsecond=0)


def _partner(value: str) -> str:
    if value not in PARTNERS:
        raise ValueError(f"partner must be one of {PARTNERS}, got {value!r}")
    return value


def _valid_mapping_value(value: Any) -> bool:
    """A UsageMeteringDimensionMappingValue: target key, known mode, non-negative multiplier."""
    if not isinstance(value, dict) or not isinstance(value.get("dimensionKey"), str):
        return False
    multiplier = value.get("convertionMultiplier")
    number = isinstance(multiplier, (int, float, Decimal)) and not isinstance(multiplier, bool)
    return value.get("mappingMode") in (None, "", "QUANTITY", "AMOUNT") and (
        multiplier is None or (number and multiplier >= 0))


class SugerState:
    """One Suger organization held in memory; every method is safe to call from any thread."""

    def __init__(self, org_id: str, clock: Callable[[], datetime] | Any) -> None:
        self.org_id = org_id
        now = getattr(clock, "now", None)
        self._now: Callable[[], datetime] = now if callable(now) else clock
        self._lock = threading.RLock()
        self._rng = random.Random(f"suger:{org_id}")  # deterministic ids for reproducible demos
        self._buyers: dict[str, JsonDict] = {}
        self._entitlements: dict[str, JsonDict] = {}
        self._terms: dict[str, list[JsonDict]] = {}
        self._groups: dict[str, JsonDict] = {}
        self._queued_at: dict[str, datetime] = {}  # when a group (re)entered CREATED
        self._rejections: dict[str, list[tuple[int, str]]] = defaultdict(list)
        self._failing_reports: dict[str, int] = defaultdict(int)
        self._config: JsonDict = {"partnerUsageMeteringConfigs": []}
        self._serial = 0

    # -- time and ids ---------------------------------------------------------------------------
    def now(self) -> datetime:
        return utc(self._now())

    def _short_id(self) -> str:
        return "".join(self._rng.choice(_ID_ALPHABET) for _ in range(9))

    def new_uuid(self) -> str:
        with self._lock:
            return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    # -- buyers -----------------------------------------------------------------------------------
    def add_buyer(self, name: str, *, partner: str, metronome_customer_id: str | None = None,
                  id: str | None = None) -> JsonDict:
        with self._lock:
            buyer_id = id or self._short_id()
            if buyer_id in self._buyers:
                raise ValueError(f"buyer {buyer_id} already exists")
            now = self.now()
            info = {"metronomeCustomerId": metronome_customer_id} if metronome_customer_id else {}
            self._buyers[buyer_id] = {
                "id": buyer_id, "externalID": f"{partner.lower()}-{self._short_id().lower()}",
                "name": name, "partner": _partner(partner), "organizationID": self.org_id,
                "creationTime": now, "lastUpdateTime": now, "info": info,
            }
            return self.get_buyer(buyer_id)

    def get_buyer(self, buyer_id: str) -> JsonDict:
        with self._lock:
            if buyer_id not in self._buyers:
                raise SugerError(404, f"buyer {buyer_id} not found")
            return render(self._buyers[buyer_id])

    def buyers(self, *, partner: str | None = None) -> list[JsonDict]:
        with self._lock:
            return [render(b) for b in self._buyers.values() if partner in (None, b["partner"])]

    def update_buyer(self, buyer_id: str, params: JsonDict) -> JsonDict:
        """UpdateBuyerParams: absent or null fields stay; a string sets, an empty string clears."""
        with self._lock:
            self.get_buyer(buyer_id)
            buyer = self._buyers[buyer_id]
            for field in ("name", "description", *_BUYER_INFO_FIELDS):
                value = params.get(field)
                if value is None:
                    continue
                structured = field in ("companyInfo", "paymentConfig")
                if not isinstance(value, dict if structured else str):
                    kind = "an object" if structured else "a string"
                    raise SugerError(400, f"{field} must be {kind}")
                target = buyer if field in ("name", "description") else buyer["info"]
                if value == "":
                    if field != "name":  # a buyer always keeps a name
                        target.pop(field, None)
                else:
                    target[field] = copy.deepcopy(value)
            buyer["lastUpdateTime"] = self.now()
            return render(buyer)

    # -- entitlements -----------------------------------------------------------------------------
    def add_entitlement(self, buyer_id: str, *, partner: str, dimensions: list[JsonDict],
                        status: str = "ACTIVE", start_time: datetime | None = None,
                        end_time: datetime | None = None, id: str | None = None,
                        product_id: str | None = None, name: str | None = None) -> JsonDict:
        """Add an entitlement with a Signup term; start defaults to 90 days before today."""
        with self._lock:
            buyer = self._buyers.get(buyer_id)
            if buyer is None:
                raise ValueError(f"unknown buyer {buyer_id}")
            if buyer["partner"] != _partner(partner):
                raise ValueError(f"buyer {buyer_id} is a {buyer['partner']} buyer, not {partner}")
            if status not in ENTITLEMENT_STATUSES:
                raise ValueError(f"status must be one of {ENTITLEMENT_STATUSES}")
            ent_id = id or self._short_id()
            if ent_id in self._entitlements:
                raise ValueError(f"entitlement {ent_id} already exists")
            now = self.now()
            start = utc(start_time) if start_time else now.replace(
                hour=0, minute=0, second=0, microsecond=0) - timedelta(days=90)
            dims = [{"key": d["key"], "name": d.get("name") or d["key"],
                     "rate": Decimal(str(d.get("rate", 0)))} for d in dimensions]
            self._entitlements[ent_id] = {
                "id": ent_id, "name": name or f"{buyer['name']} {partner} subscription",
                "organizationID": self.org_id, "buyerID": buyer_id,
                "productID": product_id or f"product-{partner.lower()}",
                "offerID": f"offer-{self._short_id()}", "partner": partner, "status": status,
                "startTime": start, "creationTime": now, "lastUpdateTime": now,
                "info": {"dimensions": dims, "currency": "USD"}, "metaInfo": {},
            }
            self._terms[ent_id] = [self._term(ent_id, "Signup", start, end_time and utc(end_time))]
            return self.get_entitlement(ent_id)

    def _term(self, ent_id: str, kind: str, start: datetime, end: datetime | None) -> JsonDict:
        ent = self._entitlements[ent_id]
        now = self.now()
        return {"id": self._short_id(), "entitlementID": ent_id, "organizationID": self.org_id,
                "buyerID": ent["buyerID"], "partner": ent["partner"], "productID": ent["productID"],
                "offerID": ent["offerID"], "startTime": start, "endTime": end,
                "creationTime": now, "lastUpdateTime": now, "info": {"type": kind}}

    def _current_term(self, ent_id: str) -> JsonDict:
        terms = self._terms[ent_id]
        started = [t for t in terms if t["startTime"] <= self.now()]
        return started[-1] if started else terms[0]

    def _entitlement(self, ent_id: str) -> JsonDict:
        if ent_id not in self._entitlements:
            raise SugerError(404, f"entitlement {ent_id} not found")
        return self._entitlements[ent_id]

    def get_entitlement(self, entitlement_id: str) -> JsonDict:
        """The entitlement as of the clock: its current term and that term's end time."""
        with self._lock:
            ent = dict(self._entitlement(entitlement_id))
            term = self._current_term(entitlement_id)
            ent["entitlementTermID"], ent["endTime"] = term["id"], term["endTime"]
            return render(ent)

    def entitlements(self, **filters: str | None) -> list[JsonDict]:
        """Filter by buyerID / partner / productID / offerID (API field names); None means any."""
        with self._lock:
            return [self.get_entitlement(e["id"]) for e in self._entitlements.values()
                    if all(v is None or e.get(k) == v for k, v in filters.items())]

    def entitlement_terms(self, entitlement_id: str) -> list[JsonDict]:
        with self._lock:
            self._entitlement(entitlement_id)
            return render(self._terms[entitlement_id])

    def renew_entitlement(self, entitlement_id: str, *, at: datetime) -> JsonDict:
        """Start an AutoRenew term at ``at``, as long as the previous one; current from ``at``."""
        with self._lock:
            self._entitlement(entitlement_id)
            at = utc(at)
            previous = self._terms[entitlement_id][-1]
            old_end = previous["endTime"]
            length = old_end - previous["startTime"] if old_end else None
            if old_end is None or old_end > at:
                previous["endTime"] = at
            term = self._term(entitlement_id, "AutoRenew", at, at + length if length else None)
            self._terms[entitlement_id].append(term)
            self._entitlements[entitlement_id]["lastUpdateTime"] = self.now()
            return render(term)

    def set_entitlement_status(self, entitlement_id: str, status: str) -> None:
        if status not in ENTITLEMENT_STATUSES:
            raise ValueError(f"status must be one of {ENTITLEMENT_STATUSES}")
        with self._lock:
            ent = self._entitlement(entitlement_id)
            ent["status"], ent["lastUpdateTime"] = status, self.now()

    # -- metering config --------------------------------------------------------------------------
    def metering_config(self) -> JsonDict:
        with self._lock:
            return render(self._config)

    def set_metering_config(self, config: JsonDict) -> None:
        """Replace the whole UsageMeteringConfigInfo (the emulator's PATCH semantics too)."""
        entries = config.get("partnerUsageMeteringConfigs") or []
        if not isinstance(entries, list):
            raise SugerError(400, "partnerUsageMeteringConfigs must be an array")
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("partner") not in PARTNERS:
                raise SugerError(400, f"each partner config needs a partner in {PARTNERS}")
            mapping = entry.get("dimensionMappingV2") or {}
            for values in mapping.values() if isinstance(mapping, dict) else [None]:
                for value in values if isinstance(values, list) else [None]:
                    if not _valid_mapping_value(value):
                        raise SugerError(400, f"invalid dimensionMappingV2 value: {value!r}")
        with self._lock:
            self._config = {"partnerUsageMeteringConfigs": copy.deepcopy(entries)}

    # -- usage record groups: ingest (the app validates bodies; the state keeps ids unique) -------
    def entitlement_snapshot(self, entitlement_id: str) -> JsonDict:
        """A private copy of the stored entitlement (Decimal rates) for request validation."""
        with self._lock:
            return copy.deepcopy(self._entitlement(entitlement_id))

    def check_rejection(self, entitlement_ids: Iterable[str]) -> None:
        """Raise (and consume) the first configured ``reject_next`` among these entitlements."""
        with self._lock:
            for ent_id in entitlement_ids:
                if self._rejections.get(ent_id):
                    status, message = self._rejections[ent_id].pop(0)
                    raise SugerError(status, message)

    def check_new_id(self, group_id: Any) -> str | None:
        """Validate a client group id; a repeated id is Suger's 409 whatever the body says."""
        if group_id in (None, ""):
            return None
        if not isinstance(group_id, str) or len(group_id) > 36:
            raise SugerError(400, "id must be a string of at most 36 characters")
        with self._lock:
            if group_id in self._groups:
                raise SugerError(409, f"usage record group {group_id} already exists")
        return group_id

    def store_group(self, prepared: JsonDict, group_id: str | None = None) -> JsonDict:
        with self._lock:
            group_id = self.check_new_id(group_id) or self.new_uuid()
            now = self.now()
            self._serial += 1
            self._groups[group_id] = {
                "id": group_id, "organizationID": self.org_id, **prepared, "status": "CREATED",
                "creationTime": now, "lastUpdateTime": now, "reportedTime": None,
                "serialID": self._serial, "usageRecordReportID": None,
            }
            self._queued_at[group_id] = now
            return render(self._groups[group_id])

    # -- usage record groups: read and manage -----------------------------------------------------
    def groups(self) -> list[JsonDict]:
        """All stored groups in API shape, DELETED included, in serialID order."""
        with self._lock:
            return [render(g) for g in self._groups.values()]

    def group(self, group_id: str) -> JsonDict:
        with self._lock:
            return render(self._group(group_id))

    def _group(self, group_id: str) -> JsonDict:
        if group_id not in self._groups:
            raise SugerError(404, f"usage record group {group_id} not found")
        return self._groups[group_id]

    def set_group_status(self, group_id: str, status: str) -> None:
        """Test hook: force a status (e.g. INVALID, which the API itself never produces)."""
        if status not in GROUP_STATUSES:
            raise ValueError(f"status must be one of {GROUP_STATUSES}")
        with self._lock:
            group = self._group(group_id)
            group["status"], group["lastUpdateTime"] = status, self.now()
            self._queued_at[group_id] = self.now()

    def retry_group(self, group_id: str) -> JsonDict:
        """REPORT_FAILED → CREATED, queued for the next hourly run (not the one that failed)."""
        with self._lock:
            group = self._group(group_id)
            if group["status"] != "REPORT_FAILED":
                raise SugerError(400, f"only REPORT_FAILED groups can be retried; "
                                      f"{group_id} is {group['status']}")
            now = self.now()
            group.update(status="CREATED", lastUpdateTime=now, usageRecordReportID=None)
            self._queued_at[group_id] = now
            return render(group)

    def delete_group(self, group_id: str) -> JsonDict:
        with self._lock:
            group = self._group(group_id)
            if group["status"] not in ("CREATED", "INVALID"):
                raise SugerError(400, f"only CREATED or INVALID groups can be deleted; "
                                      f"{group_id} is {group['status']}")
            group.update(status="DELETED", lastUpdateTime=self.now())
            return render(group)

    # -- fault injection and the hourly forwarder -------------------------------------------------
    def reject_next(self, entitlement_id: str, message: str, *, status: int = 400,
                    times: int = 1) -> None:
        """The next ``times`` report POSTs (single or batch) for this entitlement get ``status``."""
        with self._lock:
            self._rejections[entitlement_id].extend([(status, message)] * times)

    def fail_next_report(self, entitlement_id: str, *, times: int = 1) -> None:
        """The next ``times`` forwarder reports (one per entitlement per run) end REPORT_FAILED."""
        with self._lock:
            self._failing_reports[entitlement_id] += times

    def run_forwarder(self, now: datetime | None = None) -> list[str]:
        """Forward every CREATED group queued up to ``now`` (default: the clock); return ids."""
        with self._lock:
            at = utc(now) if now else self.now()
            due = [g for g in self._created() if self._queued_at[g["id"]] <= at]
            return self._forward(due, lambda _group: at)

    def tick(self) -> list[str]:
        """Suger's hourly job, caught up: groups queued before the last full hour are forwarded,
        each by the first hourly run after it was queued. The app calls this on every request."""
        with self._lock:
            cutoff = _hour_floor(self.now())
            due = [g for g in self._created() if self._queued_at[g["id"]] < cutoff]
            return self._forward(
                due, lambda g: _hour_floor(self._queued_at[g["id"]]) + timedelta(hours=1))

    def _created(self) -> list[JsonDict]:
        return [g for g in self._groups.values() if g["status"] == "CREATED"]

    def _forward(self, due: list[JsonDict], run_time: Callable[[JsonDict], datetime]) -> list[str]:
        """One usage record report per (entitlement, run), as Suger aggregates per entitlement."""
        reports: dict[tuple[datetime, str], list[JsonDict]] = defaultdict(list)
        for group in due:
            reports[(run_time(group), group["entitlementID"])].append(group)
        changed: list[str] = []
        for (at, ent_id), members in sorted(reports.items()):
            failed = self._failing_reports[ent_id] > 0
            if failed:
                self._failing_reports[ent_id] -= 1
            report_id = self.new_uuid()
            for group in members:
                group.update(status="REPORT_FAILED" if failed else "REPORTED", lastUpdateTime=at,
                             reportedTime=None if failed else at, usageRecordReportID=report_id)
                changed.append(group["id"])
        return changed
