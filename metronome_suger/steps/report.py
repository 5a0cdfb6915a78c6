"""Hand a window's pending record groups to Suger: urgent first, each once; 409 is success; the answers are
written to the ledger (through the state machine) in small batches as they arrive."""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from metronome_suger.clients.errors import ApiError
from metronome_suger.clients.http import iter_bounded
from metronome_suger.clients.suger import SugerClient
from metronome_suger.clients.suger_models import NewUsageRecordGroup, ReportResult
from metronome_suger.core.deadlines import Deadlines, Urgency
from metronome_suger.core.ledger import Event, answer_event, transition
from metronome_suger.core.windows import Window
from metronome_suger.crashpoints import crash_point
from metronome_suger.steps.records import Conversion, window_gaps
from metronome_suger.storage.db import Connect
from metronome_suger.storage.ledger import Change, LedgerGroup, expired_by_partner, groups_in_window, handovers, record


@dataclass
class ReportOutcome:
    to_send: int = 0
    sent: int = 0
    rejected: int = 0
    not_sent: int = 0  # transient failures and credentials problems: still pending
    expired: int = 0
    at_risk: int = 0  # handed over inside Suger's forwarding lag: may reach the marketplace too late
    requests: int = 0  # calls made to Suger (one POST per group, or one batch validation)
    problems: list[str] = field(default_factory=list)


def payload(org_id: str, group: LedgerGroup) -> NewUsageRecordGroup:
    return NewUsageRecordGroup(id=group.record_group_id, organizationID=org_id, entitlementID=group.entitlement_id,
                               records=group.records, timestamp=group.timestamp)


def answer_change(group: LedgerGroup, answer: ReportResult | BaseException) -> Change:
    """Suger's answer to one POST as a ledger change; an exception that is not an API error is a bug."""
    gid = group.record_group_id
    if isinstance(answer, ApiError):
        event = answer_event(answer.status, answer.retryable)
        note = {Event.REFUSED: answer.message, Event.UNAUTHORIZED: f"not sent, credentials refused: {answer}"}
        return Change(gid, group.status, event, message=note.get(event, f"not sent, will retry: {answer}"))
    if isinstance(answer, BaseException):
        raise answer
    if answer.outcome == "duplicate":
        return Change(gid, group.status, Event.DUPLICATE, message="Suger already had this group (409)")
    return Change(gid, group.status, Event.CREATED, suger_status=answer.group.status if answer.group else "CREATED")


FLUSH_ANSWERS, FLUSH_SECONDS = 100, 1.0  # at most this many answers, or this long, unsaved


class Unsaved:
    """Suger's answers not yet in the ledger, written in one statement per batch: when ``FLUSH_ANSWERS`` are
    waiting, when the oldest waited ``FLUSH_SECONDS``, and at the end. A crash loses at most that batch: those
    groups stay ``pending`` and the next run re-sends them under the same ids, which Suger answers 409."""

    def __init__(self, write: Callable[[list[Change]], object]) -> None:
        self._write, self._changes, self._since = write, list[Change](), 0.0

    def add(self, change: Change) -> None:
        if not self._changes:
            self._since = time.monotonic()
        self._changes.append(change)
        self.flush_due()

    def flush_due(self) -> None:
        if len(self._changes) >= FLUSH_ANSWERS or (
                self._changes and time.monotonic() - self._since >= FLUSH_SECONDS):
            self.flush()

    def flush(self) -> None:
        if self._changes:
            self._write(self._changes)
            self._changes = []
            crash_point("report.after_ledger_write")


def _due(
    connect: Connect, windows: Sequence[Window], conv: Conversion, deadlines: Deadlines, now: datetime,
    out: ReportOutcome,
) -> list[LedgerGroup]:
    """The windows' pending groups still inside their deadline, at risk first; the others expire."""
    todo: list[LedgerGroup] = []
    with connect() as conn:
        tables = conv.tables(conn)
        for window in windows:
            gaps = window_gaps(tables, window, conv.amount_mode)
            if gaps:  # the blocking check should have stopped us; never send a partial window
                out.problems.append(f"mapping incomplete, nothing sent for {window}: " + "; ".join(gaps))
                continue
            expired = []
            for group in groups_in_window(conn, window, ("pending",)):
                urgency = deadlines.urgency(now, group.timestamp, group.partner, group.ended_at)
                if urgency is Urgency.EXPIRED:
                    expired.append(Change(group.record_group_id, group.status, Event.DEADLINE_PASSED,
                                          message=f"past {deadlines.describe(group.partner, group.ended_at)}"))
                else:
                    out.at_risk += urgency is Urgency.AT_RISK
                    todo.append(group)
            out.expired += record(conn, expired, now)
    return sorted(todo, key=lambda g: deadlines.send_order(now, g.timestamp, g.partner, g.ended_at))


def _tally(out: ReportOutcome, group: LedgerGroup, change: Change) -> None:
    if change.event in (Event.CREATED, Event.DUPLICATE):
        out.sent += 1
        return
    if change.event == Event.REFUSED:
        out.rejected += 1
    else:
        out.not_sent += 1
    out.problems.append(f"group {group.record_group_id} (entitlement {group.entitlement_id}, "
                        f"{group.timestamp:%Y-%m-%dT%H:%MZ}) {transition(group.status, change.event).to}: "
                        f"{change.message}")


def report_windows(
    client: Callable[[], SugerClient], connect: Connect, windows: Sequence[Window], conv: Conversion, *,
    org_id: str, deadlines: Deadlines, auto_report: bool, dry_run: bool, max_workers: int,
    clock: Callable[[], datetime],
) -> ReportOutcome:
    """Send (or, with ``dry_run``, validate) the windows' pending groups; ``auto_report`` off sends nothing."""
    out = ReportOutcome()
    todo = _due(connect, windows, conv, deadlines, clock(), out)
    out.to_send = len(todo)
    if not auto_report or not todo:
        return out
    with client() as suger:
        if dry_run:
            out.requests = 1
            verdict = suger.validate_usage_record_groups([payload(org_id, g) for g in todo])
            if verdict:
                out.problems.append(f"Suger validation failed: {verdict}")
            return out
        def post(group: LedgerGroup) -> ReportResult:
            crash_point("report.before_post")
            return suger.report_usage_record_group(payload(org_id, group))

        with connect() as conn:
            unsaved = Unsaved(lambda changes: record(conn, changes, clock()))
            answers = iter_bounded(post, todo, max_workers=max_workers, on_idle=(FLUSH_SECONDS, unsaved.flush_due))
            try:
                for done, (group, answer) in enumerate(answers, start=1):
                    change = answer_change(group, answer)
                    crash_point("report.after_post")
                    unsaved.add(change)
                    if done < len(todo):
                        crash_point("report.between_groups")
                    out.requests += 1
                    _tally(out, group, change)
            finally:  # what was answered is saved, whatever stopped the loop
                unsaved.flush()
    return out


@dataclass
class DeadlineStatus:
    """Per marketplace: (groups, dollars) lost past the deadline, and handed over (or waiting) at risk."""

    expired: dict[str, tuple[int, Decimal]]
    at_risk: dict[str, tuple[int, Decimal]]


def deadline_status(connect: Connect, window: Window, deadlines: Deadlines, now: datetime) -> DeadlineStatus:
    """A group is at risk when it was handed over (or, still pending, would be now) inside Suger's
    forwarding lag before its marketplace deadline; expired groups are the ledger's."""
    at_risk: dict[str, tuple[int, Decimal]] = {}
    with connect(read_only=True) as conn:
        expired = {p: (n, Decimal(d)) for p, n, d in expired_by_partner(conn, window)}
        for partner, timestamp, ended_at, handed_over, dollars in handovers(conn, window):
            if deadlines.urgency(handed_over or now, timestamp, partner, ended_at) is not Urgency.OK:
                groups, total = at_risk.get(partner, (0, Decimal(0)))
                at_risk[partner] = (groups + 1, total + Decimal(dollars))
    return DeadlineStatus(expired, dict(sorted(at_risk.items())))
