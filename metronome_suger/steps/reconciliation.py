"""``suger_usage_record_reports``: read what Suger told the marketplaces about a UTC day's usage, store it with
history, map it to our groups; and the day's three-way reconciliation."""

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from metronome_suger.clients.suger import SugerClient
from metronome_suger.clients.suger_models import UsageRecordReport
from metronome_suger.core.deadlines import Deadlines
from metronome_suger.core.reconciliation import (
    REPORT_GRACE,
    SUGER_INTEGRATION,
    Reconciliation,
    request_quantities,
)
from metronome_suger.storage.db import Connect
from metronome_suger.storage.marketplace import ForeignLine, ReportRow, store_reports, unknown_group_ids
from metronome_suger.storage.reconciliation import reconcile

logger = logging.getLogger(__name__)
# Suger reports an hour's usage at its next hourly run, and may retry a failed report for as long as the
# marketplace accepts it (Azure: 24 h): the reports of a day's usage are created that day or the next two.
REPORT_DAYS_AFTER = 2


@dataclass(frozen=True)
class ReportsResult:
    reports: int  # of our entitlements, starting on the day
    statuses: dict[str, int]
    changed: int  # new reports and status changes since the last read
    foreign_groups: int  # group ids in them that we did not send
    reconciliation: Reconciliation


def report_day(report: UsageRecordReport) -> date | None:
    """The UTC day of the usage a report carries (its start time; its creation if it has none)."""
    at = report.info.startTime or report.creationTime
    return None if at is None else at.date()


def _row(report: UsageRecordReport, day: date) -> ReportRow:
    info = report.info
    told = request_quantities(info.awsMeteringRequest, info.azureMeteringRequest, info.gcpMeteringRequest)
    request = info.awsMeteringRequest or info.azureMeteringRequest or info.gcpMeteringRequest
    lines = {key: (reported, None if told is None else told.get(key), info.decimalParts.get(key),
                   info.newDecimalParts.get(key), info.dimensionUnitPrice.get(key))
             for key, reported in info.reportedRecords.items()}
    return ReportRow(report.id, day, report.entitlementID, report.partner or info.partner, info.status,
                     info.message, report.creationTime, info.startTime, info.endTime, request,
                     info.usageRecordGroupIds, lines)


def read_reports(client: SugerClient, connect: Connect, day: date, now: datetime,
                 grace: timedelta = REPORT_GRACE, entitlement_id: str | None = None,
                 deadlines: Deadlines | None = None) -> ReportsResult:
    """The reports of our entitlements carrying ``day``'s usage, stored; the groups of Suger's own Metronome
    integration they name are read too (their quantities explain part of the report). Then the day's
    reconciliation as of ``now`` (of every entitlement, or of ``entitlement_id``)."""
    with connect(read_only=True) as conn:
        ours = {r[0] for r in conn.execute(
            "SELECT entitlement_id FROM entitlements UNION SELECT DISTINCT entitlement_id FROM report_ledger"
        ).fetchall()}
    last = min(day + timedelta(days=REPORT_DAYS_AFTER), now.date())
    listed = client.list_usage_record_reports(start_date=day, end_date=max(day, last))
    # Every report of ours listed is kept, whatever day it starts: one may carry groups of several days.
    reports = [_row(r, report_day(r) or day) for r in listed if r.entitlementID in ours]
    named = [gid for r in reports for gid in r.group_ids]
    with connect(read_only=True) as conn:
        unknown = set(unknown_group_ids(conn, named))
    foreign: list[ForeignLine] = []
    if unknown:  # Suger's Metronome integration (Auto Report Usage on) reports into the same entitlements
        for group in client.list_usage_record_groups(source=SUGER_INTEGRATION, start_date=day - timedelta(days=1),
                                                     end_date=max(day, last)):
            if group.id in unknown:
                foreign += [ForeignLine(group.id, SUGER_INTEGRATION, k, q) for k, q in group.records.items()]
    with connect() as conn:
        changed = store_reports(conn, reports, foreign, now)
        result = reconcile(conn, day, now, grace=grace, entitlement_id=entitlement_id, deadlines=deadlines)
    if result.foreign_groups:
        logger.warning("Suger reports of %s name %d groups neither this pipeline nor Suger's Metronome integration "
                       "sent: %s", day, len(result.foreign_groups), ", ".join(result.foreign_groups[:20]))
    statuses = Counter(r.status or "none" for r in reports if r.day == day)
    return ReportsResult(sum(statuses.values()), dict(sorted(statuses.items())), changed, len(result.foreign_groups),
                         result)
