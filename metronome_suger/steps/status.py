"""The Suger status poll: what Suger says became of our ``sent`` groups, written through the ledger's
state machine; REPORT_FAILED groups are retried (bounded) through Suger's retry endpoint."""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from metronome_suger.clients.errors import ApiError
from metronome_suger.clients.suger import SugerClient
from metronome_suger.core.deadlines import Deadlines
from metronome_suger.core.ledger import MAX_STATUS_RETRIES, Event, status_event, transition
from metronome_suger.crashpoints import crash_point
from metronome_suger.storage.db import Connect, is_lock_error
from metronome_suger.storage.ledger import Change, LedgerGroup, awaiting_groups, record

POLL_PERIOD = timedelta(days=30)  # Suger lists the last 30 days by default; older groups are not polled
FAILED = "Suger could not report it to the marketplace (REPORT_FAILED)"


def _message(group: LedgerGroup, event: Event, deadlines: Deadlines, no_retry: str | None) -> str | None:
    if event == Event.REPORTED and group.retries:
        return f"reported by Suger after {group.retries} retr{'y' if group.retries == 1 else 'ies'}"
    return {
        Event.INVALID: "Suger marked the group INVALID",
        Event.DELETED: "the group was deleted at Suger: it will not be reported",
        Event.DEADLINE_PASSED: f"{FAILED} and it is past "
                               f"{deadlines.describe(group.partner, group.ended_at)}: not retried",
        Event.RETRIES_EXHAUSTED: f"{FAILED} again after {MAX_STATUS_RETRIES} retries: given up",
        Event.REPORT_FAILED: f"{FAILED}; not retried: {no_retry}",
        Event.RETRY: f"{FAILED}; retry {group.retries + 1} of {MAX_STATUS_RETRIES} requested",
    }.get(event)


@dataclass
class PollOutcome:
    waiting: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # ledger state reached → groups
    retried: int = 0
    in_progress: int = 0
    missing: int = 0
    left_for_next_tick: int = 0
    held: int = 0
    warnings: list[str] = field(default_factory=list)

    def summary(self, no_retry: str | None) -> str:
        if not self.waiting:
            return "no sent group awaits Suger's status"
        parts = [f"{self.counts.get('accepted', 0)} accepted", f"{self.retried} retried",
                 f"{self.counts.get('rejected', 0)} rejected", f"{self.counts.get('expired', 0)} expired",
                 f"{self.in_progress} in progress at Suger"]
        if self.missing:
            parts.append(f"{self.missing} not listed by Suger")
        if self.left_for_next_tick:
            parts.append(f"{self.left_for_next_tick} retries left for the next tick")
        if self.held:
            parts.append(f"{self.held} REPORT_FAILED not retried: {no_retry}")
        return ", ".join(parts)


def poll_statuses(
    client: Callable[[], SugerClient], connect: Connect, now: datetime, deadlines: Deadlines, *,
    no_retry: str | None, retries_per_tick: int,
) -> PollOutcome:
    """One tick. ``no_retry`` names why the retry endpoint must not be called (auto_report off, dry run)."""
    out = PollOutcome()
    with connect(read_only=True) as conn:
        waiting = {g.record_group_id: g for g in awaiting_groups(conn, now - POLL_PERIOD)}
    out.waiting = len(waiting)
    if not waiting:
        return out
    first = min(g.sent_at or now for g in waiting.values()).date() - timedelta(days=1)
    with client() as suger:
        listed = {g.id: g.status for g in suger.list_usage_record_groups(start_date=first,
                                                                           end_date=now.date() + timedelta(days=1))}
        changes = []
        for gid, group in waiting.items():
            expired = deadlines.is_expired(now, group.timestamp, group.partner, group.ended_at)
            event = status_event(listed.get(gid), previous=group.suger_status, expired=expired,
                                 retries=group.retries, may_retry=no_retry is None)
            if event is not None:
                changes.append(Change(gid, group.status, event, listed.get(gid),
                                      _message(group, event, deadlines, no_retry)))
        retries = sorted((c for c in changes if c.event == Event.RETRY),
                         key=lambda c: deadlines.send_order(now, waiting[c.record_group_id].timestamp,
                                                            waiting[c.record_group_id].partner,
                                                            waiting[c.record_group_id].ended_at))
        postponed = {c.record_group_id for c in retries[retries_per_tick:]}
        changes = [c for c in changes if c.record_group_id not in postponed]
        # The retry is counted before it is requested: a crash in between can only under-use the budget.
        crash_point("status.after_answer")
        with connect() as conn:
            record(conn, changes, now)
        after: list[Change] = []
        for change in retries[:retries_per_tick]:
            try:
                stored = suger.retry_usage_record_group(change.record_group_id)
            except ApiError as exc:
                postponed.add(change.record_group_id)
                out.warnings.append(f"retry of group {change.record_group_id} failed: {exc}")
                continue
            after.append(Change(change.record_group_id, "sent", Event.IN_PROGRESS, stored.status or "CREATED"))
    try:
        with connect() as conn:
            record(conn, after, now)
    except Exception as exc:  # the retries are counted already; the next tick reads the new status
        if not is_lock_error(exc):
            raise
    for change in changes:
        to = transition(change.state, change.event).to
        if to != "sent":
            out.counts[to] = out.counts.get(to, 0) + 1
    out.retried = len(after)
    out.in_progress = sum(1 for g in waiting if listed.get(g) in ("CREATED", "REPORT_PENDING"))
    out.missing = sum(1 for g in waiting if g not in listed)
    out.left_for_next_tick = len(postponed)
    out.held = sum(1 for g in waiting.values() if no_retry and listed.get(g.record_group_id) == "REPORT_FAILED"
                   and g.retries < MAX_STATUS_RETRIES
                   and not deadlines.is_expired(now, g.timestamp, g.partner, g.ended_at))
    return out
