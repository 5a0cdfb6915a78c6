"""Suger's hourly report job and the marketplaces behind it, as the Suger emulator models them.

Every hour Suger picks up the ``CREATED`` groups and reports them, one usage record report per
entitlement, to the entitlement's marketplace, which accepts or refuses each record by its own rules.
The rules below are the marketplaces' own, fixed here; they never read this project's configuration
(nor import its deadline code), so a group our pipeline hands over too late fails here the way it
fails in production:

* AWS ``BatchMeterUsage``: a ``UsageRecord.Timestamp`` at most 6 h before the call, else
  ``TimestampOutOfBoundsException`` (AWS Marketplace Metering API reference, UsageRecord); after the
  "License Deprovisioned" event the seller has 1 h to meter the remaining usage, later records fail
  as ``CustomerNotSubscribed`` (AWS Seller Guide, SaaS EventBridge notifications).
* Azure metered billing: ``effectiveStartTime`` at most 24 h old, else the item is ``Expired``
  (Azure Marketplace metering service APIs).
* GCP Service Control: usage "within one hour of the usage being generated", i.e. of the end of its
  hour, and a month's usage (its Pacific-time month) by 01:00 US Pacific on the 1st of the next month
  (Google Cloud Marketplace, best practices for usage reporting).
* A dimension the marketplace does not know, checked after the deadlines (e.g. the entitlement's
  dimensions changed after Suger accepted the group): AWS ``InvalidUsageDimensionException`` ("The
  usage dimension does not match one of the UsageDimensions associated with products", AWS Marketplace
  Metering API reference, BatchMeterUsage errors); Azure ``InvalidDimension`` (a usage event status:
  ``suger_sdk_python/models/github_com_sugerio_..._marketplacemeteringv1_usage_event_status_enum.py``);
  GCP ``INVALID_ARGUMENT`` (``google.rpc.Code``, the answer of Service Control ``services.report`` to a
  metric its service does not define). The marketplace knows every dimension of the entitlement, the
  ones past the 50 ``EntitlementInfo`` shows too, by key or name (as Suger validates a group).

Suger puts the group's ``timestamp`` on the marketplace record (its ``effectiveStartTime``, the start of
the GCP interval). It keeps the marketplace's answer on the usage record report
(``MeteringUsageRecordReport.info.message`` and ``info.status``:
``suger_sdk_python/models/metering_usage_record_report.py``, ``metering_usage_record_report_info.py``,
``usage_record_report_status.py``); a group has no message field, only its status. A report is
``CREATED`` while its marketplace call is in flight, then ``SUCCESS`` or ``FAILED``; a ``SUCCESS``
report becomes ``INVOICED`` once :data:`INVOICED_AFTER` (a day) has passed since its ``creationTime``,
the marketplace having invoiced it (the emulator's model of "a day later", applied lazily when the
reports are read; its groups stay ``REPORTED``).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import ROUND_FLOOR, Decimal
from functools import lru_cache
from zoneinfo import ZoneInfo

from metronome_suger.sandbox.suger_json import JsonDict, hour_floor, render

HOUR = timedelta(hours=1)
AWS_MAX_AGE = timedelta(hours=6)  # BatchMeterUsage: Timestamp up to six hours in the past
AWS_AFTER_DEPROVISIONING = timedelta(hours=1)  # remaining usage within 1 h of License Deprovisioned
AZURE_MAX_AGE = timedelta(hours=24)  # usage event: effectiveStartTime up to 24 hours old
GCP_GRACE = timedelta(hours=1)  # within one hour of the end of the usage interval
PACIFIC = ZoneInfo("America/Los_Angeles")
WHOLE_UNIT_PARTNERS = ("AWS", "GCP")  # integer quantities, the fraction carried (see Forwarder._report)
INJECTED_FAILURE = "the marketplace call failed (fault injected by fail_next_report)"
# A SUCCESS report is INVOICED (suger_sdk_python/models/usage_record_report_status.py: CREATED, SUCCESS,
# FAILED, INVOICED, CANCELED, DELETED) once the marketplace invoiced it: the emulator says a day after
# the report's creationTime.
INVOICED_AFTER = timedelta(hours=24)


@lru_cache(maxsize=65_536)  # a run stamps thousands of reports with the same few instants
def _iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def gcp_month_cutoff(interval_start: datetime) -> datetime:
    """01:00 US Pacific on the 1st of the month after the Pacific month the interval starts in."""
    local = interval_start.astimezone(PACIFIC)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    return datetime(year, month, 1, 1, tzinfo=PACIFIC).astimezone(timezone.utc)


def _marketplace_request(ent: JsonDict, report_id: str, records: dict[str, Decimal], stamp: datetime,
                         start: datetime, end: datetime) -> JsonDict:
    """The raw request of the marketplace call, in the SDK's models: AWS BatchMeterUsage
    (``aws_marketplace_metering_batch_meter_usage_input.py``, ``aws_marketplace_metering_usage_record.py``),
    Azure batchUsageEvent (``azure_marketplace_metering_batch_usage_event.py``) and GCP services.report
    (``gcp_marketplace_metering_operation.py``, ``gcp_marketplace_metering_metric_value.py``). The record's
    time is the earliest group ``timestamp`` the report carries (one record per dimension); the
    emulator has no marketplace customer id, so the buyer id stands in for it."""
    partner = ent["partner"]
    if partner == "AWS":
        return {"awsMeteringRequest": {"ProductCode": ent.get("productID"), "UsageRecords": [
            {"CustomerIdentifier": ent.get("buyerID"), "Dimension": key, "Quantity": qty, "Timestamp": stamp}
            for key, qty in records.items()]}}
    if partner == "AZURE":
        return {"azureMeteringRequest": {"request": [
            {"resourceId": ent["id"], "planId": ent.get("offerID"), "dimension": key, "quantity": qty,
             "effectiveStartTime": _iso(stamp)} for key, qty in records.items()]}}
    return {"gcpMeteringRequest": {
        "operationId": report_id, "operationName": "marketplace-metering",
        "consumerId": f"project:{ent.get('buyerID')}",
        "startTime": _iso(start), "endTime": _iso(end), "metricValueSets": [
            {"metricName": f"{ent.get('productID')}/{key}",
             "metricValues": [{"int64Value": str(int(qty)), "startTime": _iso(start), "endTime": _iso(end)}]}
            for key, qty in records.items()]}}


def marketplace_refusal(partner: str, timestamp: datetime, at: datetime,
                        deprovisioned_at: datetime | None = None) -> str | None:
    """The marketplace's message when it refuses usage stamped ``timestamp`` reported at ``at``;
    None when it accepts it. Every bound is inclusive: exactly at the limit is still accepted."""
    if partner == "AWS":
        if deprovisioned_at is not None and at - deprovisioned_at > AWS_AFTER_DEPROVISIONING:
            return (f"AWS BatchMeterUsage: CustomerNotSubscribed: the subscription was deprovisioned "
                    f"at {_iso(deprovisioned_at)}; its remaining usage had to be metered within 1 hour, "
                    f"the call was at {_iso(at)}")
        if at - timestamp > AWS_MAX_AGE:
            return (f"AWS BatchMeterUsage: TimestampOutOfBoundsException: the usage record Timestamp "
                    f"{_iso(timestamp)} is more than 6 hours before the call at {_iso(at)}")
        return None
    if partner == "AZURE":
        if at - timestamp > AZURE_MAX_AGE:
            return (f"AZURE batchUsageEvent: Expired: effectiveStartTime {_iso(timestamp)} is more "
                    f"than 24 hours before the call at {_iso(at)}")
        return None
    if partner == "GCP":
        start = hour_floor(timestamp)
        cutoff = gcp_month_cutoff(start)
        if at > cutoff:
            month = start.astimezone(PACIFIC).strftime("%Y-%m")
            return (f"GCP services.report: usage of {month} (US Pacific) had to be reported by "
                    f"{cutoff.astimezone(PACIFIC):%Y-%m-%d %H:%M} US Pacific ({_iso(cutoff)}); "
                    f"reported at {_iso(at)}")
        if at > start + HOUR + GCP_GRACE:
            return (f"GCP services.report: usage of the interval {_iso(start)} to "
                    f"{_iso(start + HOUR)} had to be reported within 1 hour of its end; "
                    f"reported at {_iso(at)}")
        return None
    raise ValueError(f"unknown marketplace {partner!r}")


def dimension_refusal(partner: str, records: Iterable[str], known: Container[str],
                      product_id: str | None = None) -> str | None:
    """The marketplace's message when a record names a dimension it does not know (the first such
    key of ``records``, in their order), None when it knows them all. ``known``: the entitlement's
    dimension keys (and names, which Suger's ingest accepts as keys too); ``product_id`` makes the
    GCP metric name (``{productID}/{key}``, as in the request)."""
    key = next((k for k in records if k not in known), None)
    if key is None:
        return None
    if partner == "AWS":
        return (f"AWS BatchMeterUsage: InvalidUsageDimensionException: the usage dimension {key} does "
                f"not match one of the UsageDimensions associated with the product {product_id}")
    if partner == "AZURE":
        return (f"AZURE batchUsageEvent: InvalidDimension: the dimension {key} is not defined on the "
                f"plan")
    if partner == "GCP":
        return (f"GCP services.report: INVALID_ARGUMENT: unknown metric {product_id}/{key} (dimension "
                f"{key})")
    raise ValueError(f"unknown marketplace {partner!r}")


@dataclass
class _Outcome:
    """One usage record report of a run and what it does to its groups once the call completes."""

    report: JsonDict
    group_status: str  # REPORTED | REPORT_FAILED
    members: list[JsonDict]


class Forwarder:
    """The forwarding job of one organization: its fault hooks (failed, in-flight and invalidated
    reports, for tests) and the usage record reports it made. It shares :class:`SugerState`'s lock,
    which calls :meth:`forward` with the groups that are due."""

    def __init__(self, org_id: str, new_id: Callable[[], str], now: Callable[[], datetime],
                 lock: threading.RLock) -> None:
        self.org_id = org_id
        self._new_id = new_id
        self._now = now
        self._lock = lock
        self._reports: dict[str, JsonDict] = {}
        self._failing: dict[str, int] = defaultdict(int)
        self._holding: dict[str, int] = defaultdict(int)
        self._held: dict[str, list[list[_Outcome]]] = defaultdict(list)
        self._invalidate: dict[str, list[str]] = defaultdict(list)
        self._flagged: dict[str, str] = {}  # group id → why the next run marks it INVALID
        self._invalid_messages: dict[str, str] = {}
        self._carry: dict[tuple[str, str], Decimal] = {}  # (entitlement, dimension) → decimal carry

    # -- test hooks -------------------------------------------------------------------------------
    def fail_next_report(self, entitlement_id: str, *, times: int = 1) -> None:
        """The next ``times`` reports (one per entitlement per run) fail: REPORT_FAILED."""
        with self._lock:
            self._failing[entitlement_id] += times

    def hold_next_report(self, entitlement_id: str, *, times: int = 1) -> None:
        """The next ``times`` runs' calls for this entitlement stay in flight: their groups are
        REPORT_PENDING (their report CREATED) until :meth:`release`."""
        with self._lock:
            self._holding[entitlement_id] += times

    def release(self, entitlement_id: str | None = None) -> list[str]:
        """The marketplace answers the held calls, of one entitlement or all (its verdict is the one
        for the call's run time); returns the ids of the groups that changed."""
        with self._lock:
            now = self._now()
            changed: list[str] = []
            for ent_id in [entitlement_id] if entitlement_id else list(self._held):
                for outcomes in self._held.pop(ent_id, []):
                    self._complete(outcomes, now)
                    changed += [g["id"] for outcome in outcomes for g in outcome.members]
            return changed

    def invalidate_next(self, entitlement_id: str, message: str, *, times: int = 1) -> None:
        """The next ``times`` groups Suger accepts (200, CREATED) for this entitlement turn INVALID
        at the next run instead of being reported: real Suger may validate after accepting."""
        with self._lock:
            self._invalidate[entitlement_id].extend([message] * times)

    def invalid_message(self, group_id: str) -> str | None:
        """Why ``invalidate_next`` made a group INVALID (Suger's groups carry no message)."""
        with self._lock:
            return self._invalid_messages.get(group_id)

    def reports(self) -> list[JsonDict]:
        """The MeteringUsageRecordReports made so far, in API shape, oldest first; a SUCCESS report
        :data:`INVOICED_AFTER` old (by the clock) is INVOICED from now on."""
        with self._lock:
            invoiced_before = self._now() - INVOICED_AFTER
            for report in self._reports.values():
                info = report["info"]
                if info["status"] == "SUCCESS" and report["creationTime"] <= invoiced_before:
                    info["status"] = "INVOICED"  # kept: it never goes back to SUCCESS
            return [render(r) for r in self._reports.values()]

    def on_stored(self, group: JsonDict) -> None:
        """A group Suger just accepted (200): flag it if ``invalidate_next`` asked for it."""
        pending = self._invalidate.get(group["entitlementID"])
        if pending:
            self._flagged[group["id"]] = pending.pop(0)

    # -- the job ----------------------------------------------------------------------------------
    def forward(self, runs: Iterable[tuple[datetime, JsonDict]],
                entitlement: Callable[[str], JsonDict]) -> list[str]:
        """Forward each (run time, group); ``entitlement(id)`` gives its partner, status, end time and
        every dimension (``info.dimensions``, all of them, not only the 50 the API shows). Returns
        the ids of the groups whose status changed. Called under the state's lock."""
        by_run: dict[tuple[datetime, str], list[JsonDict]] = defaultdict(list)
        for at, group in runs:
            by_run[(at, group["entitlementID"])].append(group)
        changed: list[str] = []
        for (at, ent_id), members in sorted(by_run.items(), key=lambda item: item[0]):
            changed += self._invalidated(at, members)
            members = [g for g in members if g["status"] == "CREATED"]
            if not members:
                continue
            outcomes = self._outcomes(at, entitlement(ent_id), members)
            if self._holding[ent_id] > 0:
                self._holding[ent_id] -= 1
                for outcome in outcomes:  # the marketplace call is in flight
                    outcome.report["info"]["status"] = "CREATED"
                    for group in outcome.members:
                        group.update(status="REPORT_PENDING", lastUpdateTime=at,
                                     usageRecordReportID=outcome.report["id"])
                self._held[ent_id].append(outcomes)
            else:
                self._complete(outcomes, at)
            changed += [g["id"] for g in members]
        return changed

    def _invalidated(self, at: datetime, members: list[JsonDict]) -> list[str]:
        """Groups Suger accepted with 200 and later found invalid: INVALID, never reported."""
        changed = []
        for group in members:
            message = self._flagged.pop(group["id"], None)
            if message is not None and group["status"] == "CREATED":
                group.update(status="INVALID", lastUpdateTime=at)
                self._invalid_messages[group["id"]] = message
                changed.append(group["id"])
        return changed

    def _outcomes(self, at: datetime, ent: JsonDict, members: list[JsonDict]) -> list[_Outcome]:
        """Accepted groups in one report, refused ones in one report per marketplace message: the
        deadlines first, then a dimension the entitlement no longer has."""
        deprovisioned = ent.get("endTime") if ent.get("status") == "CANCELLED" else None
        dims = (ent.get("info") or {}).get("dimensions", [])
        known = {d["key"] for d in dims} | {d["name"] for d in dims}  # as Suger's ingest accepts them
        accepted: list[JsonDict] = []
        refused: dict[str, list[JsonDict]] = defaultdict(list)
        for group in members:
            message = (marketplace_refusal(ent["partner"], group["metaInfo"]["timestamp"], at, deprovisioned)
                       or dimension_refusal(ent["partner"], group["records"], known, ent.get("productID")))
            if message is None:
                accepted.append(group)
            else:
                refused[message].append(group)
        outcomes = []
        if accepted:
            failed = self._failing[ent["id"]] > 0
            if failed:
                self._failing[ent["id"]] -= 1
            outcomes.append(_Outcome(self._report(at, ent, accepted, INJECTED_FAILURE if failed else None),
                                     "REPORT_FAILED" if failed else "REPORTED", accepted))
        outcomes += [_Outcome(self._report(at, ent, groups, message), "REPORT_FAILED", groups)
                     for message, groups in refused.items()]
        return outcomes

    def _report(self, at: datetime, ent: JsonDict, groups: list[JsonDict],
                message: str | None) -> JsonDict:
        """A ``MeteringUsageRecordReport`` in the SDK's shape (the models named in the docstring).

        Every report says what the call asked the marketplace for, a refused one too (Suger keeps the
        raw request of a failed call): ``info.reportedRecords`` and the marketplace's own request
        (``metering_usage_record_report_info.py``: ``awsMeteringRequest``, ``azureMeteringRequest``,
        ``gcpMeteringRequest``). AWS takes whole units (``aws_marketplace_metering_usage_record.py``:
        ``Quantity`` is ``StrictInt``) and so does GCP (``gcp_marketplace_metering_metric_value.py``:
        ``int64Value``): the fraction is carried to the entitlement's next report, ``decimalParts``
        before and ``newDecimalParts`` after this one ("the decimal parts ... before / after this usage
        record report", ``metering_usage_record_report_info.py``); only a SUCCESS report moves the
        carry. Azure takes decimals (``azure_marketplace_metering_usage_event.py``: ``quantity`` is a
        float): no carry. ``dimensionUnitPrice`` is each reported dimension's entitlement ``rate``."""
        starts = [hour_floor(g["metaInfo"]["timestamp"]) for g in groups]
        stamp = min(g["metaInfo"]["timestamp"] for g in groups)
        info: JsonDict = {"status": "FAILED" if message else "SUCCESS", "partner": ent["partner"],
                          "startTime": min(starts), "endTime": max(starts) + HOUR,
                          "usageRecordGroupIds": [g["id"] for g in groups]}
        if message:
            info["message"] = message
        totals: dict[str, Decimal] = defaultdict(Decimal)
        for group in groups:
            for key, qty in group["records"].items():
                totals[key] += qty
        if ent["partner"] in WHOLE_UNIT_PARTNERS:
            before = {key: self._carry.get((ent["id"], key), Decimal(0)) for key in totals}
            whole = {key: (qty + before[key]).to_integral_value(ROUND_FLOOR) for key, qty in totals.items()}
            after = {key: totals[key] + before[key] - whole[key] for key in totals}
            if not message:
                self._carry.update({(ent["id"], key): part for key, part in after.items()})
            info.update(reportedRecords=whole, decimalParts=before,
                        newDecimalParts=after if not message else dict(before))
        else:
            info["reportedRecords"] = dict(totals)
        rates = {d["key"]: d["rate"] for d in (ent.get("info") or {}).get("dimensions", [])}
        info["dimensionUnitPrice"] = {key: rates[key] for key in totals if key in rates}
        report_id = self._new_id()
        info.update(_marketplace_request(ent, report_id, info["reportedRecords"], stamp,
                                         info["startTime"], info["endTime"]))
        report = {"id": report_id, "organizationID": self.org_id, "entitlementID": ent["id"],
                  "entitlementTermID": ent.get("entitlementTermID"), "buyerID": ent.get("buyerID"),
                  "productID": ent.get("productID"), "partner": ent["partner"], "creationTime": at,
                  "info": info}
        self._reports[report["id"]] = report
        return report

    def _complete(self, outcomes: list[_Outcome], at: datetime) -> None:
        for outcome in outcomes:
            failed = outcome.group_status == "REPORT_FAILED"
            outcome.report["info"]["status"] = "FAILED" if failed else "SUCCESS"
            for group in outcome.members:
                group.update(status=outcome.group_status, lastUpdateTime=at,
                             reportedTime=None if failed else at,
                             usageRecordReportID=outcome.report["id"])
