"""Hand a window's pending record groups to Suger: urgent first, each once; 409 is success; every answer
is written to the ledger (through the state machine) as soon as it arrives."""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from metronome_suger.clients.errors import ApiError
from metronome_suger.clients.http import iter_bounded
from metronome_suger.clients.suger import SugerClient
from metronome_suger.clients.suger_models import NewUsageRecordGroup, ReportResult
from metronome_suger.core.deadlines import is_expired, send_order
from metronome_suger.core.ledger import Event, answer_event, transition
from metronome_suger.core.windows import Window
from metronome_suger.steps.records import Conversion, window_gaps
from metronome_suger.storage.db import Connect
from metronome_suger.storage.ledger import Change, LedgerGroup, groups_in_window, record


@dataclass
class ReportOutcome:
    to_send: int = 0
    sent: int = 0
    rejected: int = 0
    not_sent: int = 0  # transient failures and credentials problems: still pending
    expired: int = 0
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


def _due(
    connect: Connect, windows: Sequence[Window], conv: Conversion, hours: Mapping[Any, Decimal], now: datetime,
    out: ReportOutcome,
) -> list[LedgerGroup]:
    """The windows' pending groups still inside their deadline, urgent first; the others expire."""
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
                if is_expired(now, group.timestamp, group.partner, hours):
                    expired.append(Change(group.record_group_id, group.status, Event.DEADLINE_PASSED,
                                          message=f"past the {group.partner} deadline of {hours[group.partner]} h"))
                else:
                    todo.append(group)
            out.expired += record(conn, expired, now)
    return sorted(todo, key=lambda g: send_order(now, g.timestamp, g.partner, hours))


def report_windows(
    client: Callable[[], SugerClient], connect: Connect, windows: Sequence[Window], conv: Conversion, *,
    org_id: str, hours: Mapping[Any, Decimal], auto_report: bool, dry_run: bool, max_workers: int,
    clock: Callable[[], datetime],
) -> ReportOutcome:
    """Send (or, with ``dry_run``, validate) the windows' pending groups; ``auto_report`` off sends nothing."""
    out = ReportOutcome()
    todo = _due(connect, windows, conv, hours, clock(), out)
    out.to_send = len(todo)
    if not auto_report or not todo:
        return out
    with client() as suger:
        if dry_run:
            verdict = suger.validate_usage_record_groups([payload(org_id, g) for g in todo])
            if verdict:
                out.problems.append(f"Suger validation failed: {verdict}")
            return out
        answers = iter_bounded(lambda g: suger.report_usage_record_group(payload(org_id, g)), todo,
                               max_workers=max_workers)
        with connect() as conn:
            for group, answer in answers:
                change = answer_change(group, answer)
                record(conn, [change], clock())
                if change.event in (Event.CREATED, Event.DUPLICATE):
                    out.sent += 1
                    continue
                if change.event == Event.REFUSED:
                    out.rejected += 1
                else:
                    out.not_sent += 1
                out.problems.append(f"group {group.record_group_id} (entitlement {group.entitlement_id}, "
                                    f"{group.timestamp:%Y-%m-%dT%H:%MZ}) {transition(group.status, change.event).to}: "
                                    f"{change.message}")
    return out
